/*
 * cleanroom: SSH backdoor keys. Samples in ssm-documents/tests/samples/ (RULES.tsv).
 */

rule Cleanroom_SSH_Backdoor_Known_Key_Comment : ssh_backdoor linux
{
    meta:
        description = "an SSH public key carrying a comment used by known cryptomining botnets"
        category = "ssh_backdoor"
        reference = "mdrfckr: the key comment of the Outlaw/Dota botnet's planted key"
    strings:
        $key = /(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)) AAAA[0-9A-Za-z+\/]{40,2000}={0,3}[ \t]+(mdrfckr|mdrfckr@)/
    condition:
        $key
}

rule Cleanroom_SSH_Forced_Command_Fetch : ssh_backdoor linux
{
    meta:
        description = "an authorized_keys entry whose forced command downloads with curl or wget"
        category = "ssh_backdoor"
    strings:
        $opt = /command="[^"\n]{0,300}(curl|wget)[ \t][^"\n]{0,300}"[^\n]{0,300}(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)) AAAA/
    condition:
        $opt
}

rule Cleanroom_SSH_Key_Planted_By_Script : ssh_backdoor linux
{
    meta:
        description = "a script that appends a public key to an authorized_keys file"
        category = "ssh_backdoor"
    strings:
        $plant = /(echo|printf)[ \t][^\n]{0,40}(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)) AAAA[^\n]{0,2000}>>?[ \t]*[^\n]{0,200}authorized_keys/
    condition:
        $plant
}
