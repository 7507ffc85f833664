/*
 * cleanroom: Linux persistence: cron and systemd entries that download and run code,
 * ld.so.preload hijacking. Samples in ssm-documents/tests/samples/ (RULES.tsv).
 */

rule Cleanroom_Persistence_Cron_Fetch_And_Run : persistence linux
{
    meta:
        description = "a cron schedule line that downloads with curl or wget and pipes it to a shell"
        category = "persistence"
    strings:
        $line = /(^|\n)[ \t]*(@(reboot|yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9*][0-9*\/,-]*[ \t]+[0-9*][0-9*\/,-]*[ \t]+[0-9*][0-9*\/,-]*[ \t]+[0-9A-Za-z*][0-9A-Za-z*\/,-]*[ \t]+[0-9A-Za-z*][0-9A-Za-z*\/,-]*)[ \t][^\n]{0,300}(curl|wget)[ \t][^\n]{0,300}\|[ \t]*(sudo[ \t]+)?(\/usr)?(\/bin\/)?(ba|da|z|k)?sh/
    condition:
        filesize < 1MB and $line
}

rule Cleanroom_Persistence_Systemd_Fetch_And_Run : persistence linux
{
    meta:
        description = "a systemd unit whose Exec line downloads with curl or wget and pipes it to a shell"
        category = "persistence"
    strings:
        $section = "[Service]"
        $exec = /(^|\n)[ \t]*Exec(Start|StartPre|StartPost|Reload|Stop|StopPost)=[^\n]{0,300}(curl|wget)[ \t][^\n]{0,300}\|[ \t]*(\/usr)?(\/bin\/)?(ba|da|z|k)?sh/
    condition:
        filesize < 1MB and $section and $exec
}

rule Cleanroom_Persistence_LD_Preload_File : persistence linux
{
    meta:
        description = "a small file that is only a list of absolute .so paths, as /etc/ld.so.preload is"
        category = "persistence"
    strings:
        $so_path = /^(\/[A-Za-z0-9._+\/-]{1,200}\.so(\.[0-9]+)*[ \t]*\n?)+$/
    condition:
        filesize < 4KB and $so_path at 0
}

rule Cleanroom_Persistence_Process_Hider : persistence linux
{
    meta:
        description = "libprocesshider-style library that hides a process from readdir (loaded via ld.so.preload)"
        category = "persistence"
    strings:
        $f1 = "process_to_filter" ascii
        $f2 = "get_process_name" ascii
        $f3 = "get_dir_name" ascii
        $r1 = "readdir64" ascii
        $r2 = "readdir" ascii
        $p = "/proc/self/fd/%d" ascii
    condition:
        filesize < 16MB and 2 of ($f*) and any of ($r*) and $p
}
