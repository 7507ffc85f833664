"""YARA over every regular file of every file system of a disk image, deleted files included,
without mounting: fls lists the files, icat copies each into a staging directory (SHA-256
computed on the way), yara --scan-list scans a batch while the next one is copied.

    python3 yarascan.py IMAGE LAYOUT_JSON COMPILED_RULES STAGING_DIR  > fields.json

Staged copies are named by number only; paths and inodes from the image stay data.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

MAX_SCAN_FILE_BYTES = 64 << 20   # larger files are skipped (the rules look for miners,
#                                  scripts and keys; XMRig's static builds are under 10 MiB)
MAX_SCAN_FILES = 2_000_000       # beyond: skipped, counted
BATCH_FILES = 512                # one yara process per batch
BATCH_BYTES = 256 << 20          # and at most this much staged per batch (two batches on disk)
YARA_TIMEOUT_SECONDS = 120       # per file (yara -a)
MAX_SKIPPED_LISTED = 1000        # skipped files named in the result; all are counted
YARA_LINE = re.compile(r"^(\S+?):(\S+) \[([^\]]*)\] (\S+)$")


def bodyfile_entries(image, fs):
    """Regular files with content, from fls's bodyfile output, streamed."""
    args = ["fls", "-r", "-m", "/", "-b", str(fs["sector_size"]), "-o", str(fs["offset_sector"]), image]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for raw in p.stdout:
        fields = raw.rstrip(b"\n").split(b"|")
        if len(fields) < 11 or not fields[-5].isdigit():
            continue
        name, inode, mode, size = b"|".join(fields[1:-9]), fields[-9], fields[-8], int(fields[-5])
        if b"r" not in mode[:3] or size == 0:
            continue
        deleted = realloc = False
        if name.endswith(b" (deleted-realloc)"):
            name, deleted, realloc = name[:-18], True, True
        elif name.endswith(b" (deleted)"):
            name, deleted = name[:-10], True
        yield name.decode("utf-8", "backslashreplace"), inode.decode("ascii", "replace"), size, deleted, realloc
    p.wait()


class Scan:
    def __init__(self, image, rules, staging):
        self.image, self.rules, self.staging = image, rules, staging
        self.matches, self.skipped, self.errors = [], [], []
        self.skipped_count = {}
        self.scanned_files = self.scanned_bytes = 0
        self.pending = None  # (process, batch) being scanned
        self.batch_no = 0

    def skip(self, path, inode, size, reason):
        self.skipped_count[reason] = self.skipped_count.get(reason, 0) + 1
        if len(self.skipped) < MAX_SKIPPED_LISTED:
            self.skipped.append({"path": path, "inode": inode, "size": size, "reason": reason})

    def stage(self, fs, entries):
        """Copies a batch out of the image; returns (directory, {staged name: entry})."""
        self.batch_no += 1
        directory = os.path.join(self.staging, f"batch{self.batch_no % 2}")
        os.makedirs(directory)
        staged = {}
        for n, (path, inode, size, deleted) in enumerate(entries):
            target = os.path.join(directory, str(n))
            h, got = hashlib.sha256(), 0
            args = ["icat", "-b", str(fs["sector_size"]), "-o", str(fs["offset_sector"]), self.image, inode]
            with open(target, "wb") as out:
                p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                while got <= MAX_SCAN_FILE_BYTES:
                    chunk = p.stdout.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                p.stdout.close()
                p.wait()
            staged[target] = {"path": path, "inode": int(inode) if inode.isdigit() else inode, "size": size,
                              "read_bytes": got, "deleted": deleted, "sha256": "sha256:" + h.hexdigest(),
                              "fs_offset_sector": fs["offset_sector"], "sector_size": fs["sector_size"]}
        return directory, staged

    def start_yara(self, directory, staged):
        listing = directory + ".list"
        with open(listing, "w") as f:
            f.write("".join(name + "\n" for name in staged))
        p = subprocess.Popen(["yara", "-C", "-w", "-e", "-g", "-a", str(YARA_TIMEOUT_SECONDS), "--scan-list",
                              self.rules, listing], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pending = (p, directory, staged)

    def allocated(self, e):
        args = ["istat", "-b", str(e["sector_size"]), "-o", str(e["fs_offset_sector"]), self.image, str(e["inode"])]
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        return b"\nAllocated\n" in out[:4096]

    def finish_yara(self):
        if not self.pending:
            return
        p, directory, staged = self.pending
        self.pending = None
        out, err = p.communicate()
        for line in out.decode("utf-8", "replace").splitlines():
            m = YARA_LINE.match(line)
            if not m or m[4] not in staged:
                continue
            e = staged[m[4]]
            if e["deleted"] and self.allocated(e):
                # A live file whose name ends in " (deleted)": TSK's suffix was the attacker's.
                e["path"], e["deleted"] = e["path"] + " (deleted)", False
            self.matches.append({"rule": m[2], "namespace": m[1], "tags": [t for t in m[3].split(",") if t],
                                 "path": e["path"], "inode": e["inode"], "sha256": e["sha256"], "size": e["size"],
                                 "deleted": e["deleted"], "fs_offset_sector": e["fs_offset_sector"]})
        if p.returncode != 0 or err.strip():
            # yara names the staged file it could not scan: map it back to the image's path.
            for line in err.decode("utf-8", "replace").splitlines()[:20]:
                names = [staged[w]["path"] for w in line.split() if w in staged]
                self.errors.append(f"yara: {line if not names else 'could not scan ' + names[0]}")
        self.scanned_files += len(staged)
        self.scanned_bytes += sum(e["read_bytes"] for e in staged.values())
        shutil.rmtree(directory, ignore_errors=True)
        os.unlink(directory + ".list")

    def run(self, layout):
        considered = 0
        for fs in layout["filesystems"]:
            batch, batch_bytes = [], 0
            for path, inode, size, deleted, realloc in bodyfile_entries(self.image, fs):
                if realloc:
                    self.skip(path, inode, size, "deleted, inode reallocated to another file")
                    continue
                if size > MAX_SCAN_FILE_BYTES:
                    self.skip(path, inode, size, f"larger than {MAX_SCAN_FILE_BYTES} bytes")
                    continue
                considered += 1
                if considered > MAX_SCAN_FILES:
                    self.skip(path, inode, size, f"beyond the first {MAX_SCAN_FILES} files")
                    continue
                batch.append((path, inode, size, deleted))
                batch_bytes += size
                if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                    self.flush(fs, batch)
                    batch, batch_bytes = [], 0
            if batch:
                self.flush(fs, batch)
        self.finish_yara()

    def flush(self, fs, batch):
        directory, staged = self.stage(fs, batch)  # copies while the previous batch is scanned
        self.finish_yara()
        self.start_yara(directory, staged)


def main():
    image, layout_path, rules, staging = sys.argv[1:5]
    with open(layout_path) as f:
        layout = json.load(f)
    scan = Scan(image, rules, staging)
    scan.run(layout)
    scan.matches.sort(key=lambda m: (m["fs_offset_sector"], m["path"], m["rule"]))
    json.dump({"matches": scan.matches, "scanned_files": scan.scanned_files, "scanned_bytes": scan.scanned_bytes,
               "skipped": scan.skipped, "skipped_counts": scan.skipped_count, "scan_errors": scan.errors,
               "limits": {"max_scan_file_bytes": MAX_SCAN_FILE_BYTES, "max_scan_files": MAX_SCAN_FILES,
                          "yara_timeout_seconds": YARA_TIMEOUT_SECONDS,
                          "max_skipped_listed": MAX_SKIPPED_LISTED}}, sys.stdout)


if __name__ == "__main__":
    main()
