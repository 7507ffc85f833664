"""Partitions and file systems of a disk image: the Sleuth Kit's mmls and fsstat, plus each
file system's own size field read from its superblock, so that a truncated image is named.

    python3 layout.py IMAGE IMAGE_BYTES OUTDIR

Writes mmls.txt and fsstat.txt, or fsstat-<offset in sectors>.txt per file system when there
are several, into OUTDIR; prints one JSON object, whose "error" (exit code, message) tells
lib.sh an image is unusable. mmls rows are matched strictly: a partition name crafted to look
like more rows only adds offsets that are probed and rejected.
"""
import json
import os
import re
import struct
import subprocess
import sys

EXIT_NOT_IMAGE = 3
EXIT_TRUNCATED = 4
EXIT_UNREADABLE = 9
# mmls prints partition names (GPT: 36 UTF-16 characters) inside its rows; only rows of
# this exact shape are partitions.
MMLS_ROW = re.compile(r"^(\d{3}):\s+(Meta|-------|\d{3}(?::\d{3})?)\s+(\d{10})\s+(\d{10})\s+(\d{10})\s+(.*)$")
MMLS_UNITS = re.compile(r"^Units are in (\d+)-byte sectors")
MAX_NAME_CHARS = 80

# Volumes the Sleuth Kit 4.11 does not read, recognised by their magic, so the message can
# say what the volume holds: (offset, magic, name).
SIGNATURES = [
    (0, b"XFSB", "XFS (the Sleuth Kit 4.11 cannot read it)"),
    (0, b"LUKS\xba\xbe", "LUKS encrypted volume"),
    (512, b"LABELONE", "LVM2 physical volume"),
    (0x10040, b"_BHRfS_M", "Btrfs (the Sleuth Kit 4.11 cannot read it)"),
    (4086, b"SWAPSPACE2", "Linux swap"),
]


def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def read_at(f, offset, length):
    try:
        f.seek(offset)
        return f.read(length)
    except OSError:
        return b""


def own_size(f, offset):
    """(type, block size, bytes) from the file system's own header, or None."""
    sb = read_at(f, offset + 1024, 1024)
    if len(sb) >= 0x154 and sb[56:58] == b"\x53\xef":  # ext2/3/4 superblock
        blocks_lo, = struct.unpack_from("<I", sb, 4)
        log_bs, = struct.unpack_from("<I", sb, 24)
        incompat, = struct.unpack_from("<I", sb, 96)
        blocks_hi = struct.unpack_from("<I", sb, 0x150)[0] if incompat & 0x80 else 0
        if log_bs > 6:
            return None
        bs = 1024 << log_bs
        return ("ext", bs, ((blocks_hi << 32) | blocks_lo) * bs)
    boot = read_at(f, offset, 512)
    if len(boot) == 512 and boot[3:11] == b"NTFS    ":
        bps, = struct.unpack_from("<H", boot, 0x0B)
        total, = struct.unpack_from("<Q", boot, 0x28)
        return ("ntfs", bps, (total + 1) * bps)  # + the backup boot sector
    if len(boot) == 512 and boot[510:512] == b"\x55\xaa" and (boot[0x36:0x39] == b"FAT" or boot[0x52:0x55] == b"FAT"):
        bps, = struct.unpack_from("<H", boot, 0x0B)
        small, = struct.unpack_from("<H", boot, 0x13)
        large, = struct.unpack_from("<I", boot, 0x20)
        return ("fat", bps, (small or large) * bps)
    return None


def sniff(f, offset):
    for where, magic, name in SIGNATURES:
        if read_at(f, offset + where, len(magic)) == magic:
            return name
    return None


def main():
    image, image_bytes, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = {"bytes": image_bytes, "sector_size": 512, "partition_table": None, "partitions": [],
              "filesystems": [], "unsupported": [], "warnings": [], "error": None}

    def fail(code, message):
        result["error"] = {"exit": code, "message": message}
        print(json.dumps(result))
        sys.exit(0)

    if image_bytes == 0:
        fail(EXIT_NOT_IMAGE, f"{image} is empty (0 bytes): give the raw image of a whole volume")
    if image_bytes % 512:
        result["warnings"].append(f"the image is {image_bytes} bytes, not a whole number of 512-byte sectors: "
                                  "it may be cut short")

    rc, out, err = run(["mmls", image])
    lines = out.decode("utf-8", "replace").splitlines()
    if rc == 0 and lines:
        with open(os.path.join(outdir, "mmls.txt"), "wb") as f:
            f.write(out)
        result["partition_table"] = lines[0].strip()[:MAX_NAME_CHARS]
        for line in lines:
            m = MMLS_UNITS.match(line)
            if m:
                result["sector_size"] = int(m.group(1))
            m = MMLS_ROW.match(line)
            if m and m.group(2)[0].isdigit():
                result["partitions"].append({
                    "slot": m.group(2), "start_sector": int(m.group(3)),
                    "length_sectors": int(m.group(5)), "description": m.group(6).strip()[:MAX_NAME_CHARS]})
    else:
        note = (err.strip().splitlines() or ["no output"])[0]
        with open(os.path.join(outdir, "mmls.txt"), "w") as f:
            f.write(f"mmls found no partition table ({note}); file systems were looked for at offset 0\n")

    ss = result["sector_size"]
    for p in result["partitions"]:
        end = (p["start_sector"] + p["length_sectors"]) * ss
        if end > image_bytes:
            result["warnings"].append(f"partition {p['slot']} ends at byte {end}, beyond the image's {image_bytes} bytes")
    starts = sorted({p["start_sector"] for p in result["partitions"]
                     if p["start_sector"] * ss < image_bytes}) or [0]

    found = []
    try:
        f = open(image, "rb")
    except OSError as e:
        fail(EXIT_UNREADABLE, f"{image} cannot be read ({e.strerror}): check the path and permissions")
    with f:
        for start in starts:
            offset = start * ss
            rc, out, err = run(["fsstat", "-b", str(ss), "-o", str(start), image])
            if rc != 0:
                what = sniff(f, offset)
                result["unsupported"].append({"offset_sector": start, "offset_bytes": offset,
                                              "content": what or "no file system the Sleuth Kit recognises"})
                continue
            text = out.decode("utf-8", "replace")
            m = re.search(r"^File System Type: (.{1,40})$", text, re.M)
            fs = {"offset_sector": start, "sector_size": ss, "offset_bytes": offset,
                  "type": m.group(1).strip() if m else "unknown", "block_size": None, "size_bytes": None}
            own = own_size(f, offset)
            if own:
                fs["block_size"], fs["size_bytes"] = own[1], own[2]
            else:
                result["warnings"].append(f"the size of the {fs['type']} file system at sector {start} was not "
                                          "checked against the image (no size reader for it)")
            found.append((fs, out))

    for fs, out in found:
        single = len(found) == 1
        name = "fsstat.txt" if single else f"fsstat-{fs['offset_sector']}.txt"
        fs["fsstat_output"] = name
        # fls -m prefix of this file system's paths in bodyfile.txt and timeline.csv.
        fs["bodyfile_prefix"] = "/" if single else f"/fs{fs['offset_sector']}/"
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(out)
        result["filesystems"].append(fs)

    for fs in result["filesystems"]:
        need = fs["size_bytes"]
        if need is not None and fs["offset_bytes"] + need > image_bytes:
            have = image_bytes - fs["offset_bytes"]
            fail(EXIT_TRUNCATED, f"{image} is truncated: the {fs['type']} file system at byte {fs['offset_bytes']} "
                                 f"needs {need} bytes, the image holds {have} ({need - have} missing): "
                                 "acquire the whole volume again")
    if not result["filesystems"]:
        known = [u["content"] for u in result["unsupported"] if not u["content"].startswith("no file system")]
        why = ("it holds " + ", ".join(sorted(set(known)))) if known else "neither a partition table nor a file system was found"
        fail(EXIT_NOT_IMAGE, f"{image} is not a disk image the Sleuth Kit can read ({why}): "
                             "give the raw image of a whole volume or partition")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
