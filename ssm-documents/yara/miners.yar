/*
 * cleanroom: cryptocurrency miners (XMRig and its forks, stratum pools, Monero wallets).
 * Every rule has a harmless sample in ssm-documents/tests/samples/ (see RULES.tsv there)
 * and must stay silent on the benign corpus of ssm-documents/tests/.
 */

rule Cleanroom_Miner_XMRig : miner linux
{
    meta:
        description = "XMRig or a fork: at least two strings only XMRig-family miners carry"
        category = "miner"
    strings:
        $name1 = "xmrig" nocase
        $name2 = "xmr-stak" nocase
        $opt1 = "--donate-level" ascii
        $opt2 = "donate.v2.xmrig.com" ascii
        $opt3 = "\"donate-level\"" ascii
        $algo1 = "randomx" nocase
        $algo2 = "cryptonight" nocase
        $algo3 = "rx/0" ascii
        $ua = "XMRig/" ascii
    condition:
        filesize < 64MB and 2 of them
}

rule Cleanroom_Miner_Stratum_URL : miner linux
{
    meta:
        description = "a stratum mining-pool URL (stratum+tcp, +ssl or +tls) with a port"
        category = "miner"
    strings:
        $url = /stratum\+(tcp|ssl|tls):\/\/[A-Za-z0-9._-]{3,253}:[0-9]{2,5}/ nocase
    condition:
        $url
}

rule Cleanroom_Miner_Pool_Domain : miner linux
{
    meta:
        description = "a well-known Monero mining-pool domain"
        category = "miner"
    strings:
        $p1 = "supportxmr.com" nocase
        $p2 = "moneroocean.stream" nocase
        $p3 = "c3pool.com" nocase
        $p4 = "hashvault.pro" nocase
        $p5 = "minexmr.com" nocase
        $p6 = "nanopool.org" nocase
        $p7 = "xmrpool.eu" nocase
        $p8 = "herominers.com" nocase
        $p9 = "unmineable.com" nocase
        $p10 = "monerohash.com" nocase
        $p11 = "2miners.com" nocase
        $p12 = "f2pool.com" nocase
        $p13 = "minergate.com" nocase
        $p14 = "kryptex.network" nocase
    condition:
        any of them
}

rule Cleanroom_Miner_Monero_Wallet : miner linux
{
    meta:
        description = "a Monero standard address (95 base58 characters starting with 4) standing alone"
        category = "miner"
        note = "the only atom is 2 bytes long, so YARA warns that it may slow scanning: accepted"
    strings:
        $addr = /4[0-9AB][1-9A-HJ-NP-Za-km-z]{93}/
    condition:
        // Standing alone: inside a longer base58 or base64 run (keys, certificates) it does
        // not count. 0x2B '+', 0x2F '/', 0x3D '=', then digits, upper and lower case.
        for any i in (1..#addr) : (
            (@addr[i] == 0 or not (uint8(@addr[i] - 1) == 0x2B or uint8(@addr[i] - 1) == 0x2F or
                (uint8(@addr[i] - 1) >= 0x30 and uint8(@addr[i] - 1) <= 0x39) or
                (uint8(@addr[i] - 1) >= 0x41 and uint8(@addr[i] - 1) <= 0x5A) or
                (uint8(@addr[i] - 1) >= 0x61 and uint8(@addr[i] - 1) <= 0x7A)))
            and
            (@addr[i] + 95 == filesize or not (uint8(@addr[i] + 95) == 0x2B or
                uint8(@addr[i] + 95) == 0x2F or uint8(@addr[i] + 95) == 0x3D or
                (uint8(@addr[i] + 95) >= 0x30 and uint8(@addr[i] + 95) <= 0x39) or
                (uint8(@addr[i] + 95) >= 0x41 and uint8(@addr[i] + 95) <= 0x5A) or
                (uint8(@addr[i] + 95) >= 0x61 and uint8(@addr[i] + 95) <= 0x7A)))
        )
}
