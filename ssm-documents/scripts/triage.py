"""Triage of a disk image from its bodyfile (fls -r -m): key files extracted with icat into a
tarball, each with its SHA-256, and the findings a responder must look at.

    python3 triage.py IMAGE LAYOUT_JSON BODYFILE OUTDIR  > fields.json

Writes OUTDIR/key-files.tar.gz. Everything read from the image is attacker-controlled: it
is parsed as bytes, bounded by the limits below, and leaves only as JSON strings or as
tar members whose names are sanitised here.
"""
import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor

# Limits (a hostile disk can hold a 1 GB crontab or a million files in /tmp).
KEY_FILE_MAX_BYTES = 256 << 20         # larger key files are listed, not extracted
KEY_FILES_TOTAL_MAX_BYTES = 2 << 30    # the tarball's content at most
MAX_KEY_FILES = 20000                  # beyond: listed as skipped
PARSE_MAX_BYTES = 1 << 20              # configuration files are parsed up to 1 MiB
LOG_PARSE_MAX_BYTES = 64 << 20         # auth logs (also inside .gz) up to 64 MiB
TMP_MAGIC_MAX_FILES = 10000            # tmp files whose first bytes are read for ELF/#!
MAX_FINDINGS = 2000
MAX_LINE_CHARS = 300                   # evidence lines are cut to this
MAX_SUDO_FINDINGS = 100
# icat processes at once: the analysis instance has 2 vCPUs (m6i.large); mactime runs beside.
ICAT_WORKERS = 2
ICAT_WINDOW = 8                        # key files fetched ahead of the tar writer, at most

TMP_DIRS = re.compile(r"^/(tmp|var/tmp|dev/shm)/")
# A cheap test on the raw bodyfile line before it is parsed: every key path contains one.
MAYBE_KEY = re.compile(rb"/(etc|var|root|home|tmp|dev/shm|run/systemd|lib/systemd|usr/lib/systemd)/"
                       rb"|/\.ssh/|_history|/\.config/systemd/")
KEY_PATHS = [
    ("accounts", r"/etc/(passwd|shadow|group|gshadow)-?"),
    ("sudoers", r"/etc/sudoers(\.d/[^/]+)?"),
    ("ld_preload", r"/etc/ld\.so\.preload"),
    ("authorized_keys", r"/.*/\.ssh/authorized_keys2?"),
    ("cron", r"/etc/(crontab|anacrontab|cron\.(d|hourly|daily|weekly|monthly)/[^/]+)"
             r"|/var/spool/cron/(crontabs/|atjobs/)?[^/]+"),
    ("systemd", r"/(etc|usr/lib|lib|run)/systemd/(system|user)/.+\.(service|timer|socket|path)"
                r"|/(root|home/[^/]+)/\.config/systemd/user/.+\.(service|timer|socket|path)"),
    ("rc_profile", r"/etc/(rc\.local|profile|bash\.bashrc|bashrc|environment|zshrc|zsh/zshrc)"
                   r"|/etc/(profile\.d|init\.d|rc[0-6S]\.d)/[^/]+"
                   r"|/(root|home/[^/]+)/\.(bashrc|profile|bash_profile|bash_login|bash_logout|zshrc|zprofile)"),
    ("shell_history", r"/.*/\.(bash|zsh|sh|ash|mysql|python|psql)_history|/.*/\.local/share/fish/fish_history"),
    ("auth_log", r"/var/log/(auth\.log|secure)(\.[0-9]+)?(\.gz)?|/var/log/(wtmp|btmp|lastlog)(\.[0-9]+)?"),
    ("log", r"/var/log/(syslog|messages|kern\.log|cloud-init\.log|cloud-init-output\.log|dpkg\.log|yum\.log"
            r"|dnf\.log|audit/audit\.log|apt/history\.log)(\.[0-9]+)?(\.gz)?"),
]
KEY_RE = re.compile("|".join(f"(?P<{c}{i}>^(?:{r})$)" for i, (c, r) in enumerate(KEY_PATHS)))
FETCH_RUN = re.compile(rb"(curl|wget)\b[^|\n]*\|\s*(sudo\s+)?(/usr)?(/bin/)?(ba|da|z|k)?sh\b"
                       rb"|\$\(\s*(curl|wget)\b|<\(\s*(curl|wget)\b")
TMP_REF = re.compile(rb"(^|[\s'\"=;:(])(/tmp|/var/tmp|/dev/shm)/")
DOWNLOAD = re.compile(rb"\b(curl|wget)\b[^\n]*\b(https?|ftp)://")
KEY_PLANT = re.compile(rb"(echo|printf)\b[^\n]*(ssh-(rsa|dss|ed25519)|ecdsa-sha2-)[^\n]*>>?\s*\S*authorized_keys")
KEY_LINE = re.compile(rb"^(?:(?P<opts>.*?)\s+)?(?P<type>ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)"
                      rb"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)\s+(?P<blob>[A-Za-z0-9+/]+={0,3})"
                      rb"(?:\s+(?P<comment>.*))?$")
KNOWN_BAD_COMMENTS = {b"mdrfckr": "used by the Outlaw/Dota cryptomining botnet"}
AUTH_ACCEPTED = re.compile(rb"sshd\[\d+\]: Accepted (\S+) for (\S+) from (\S+) port")
AUTH_FAILED = re.compile(rb"sshd\[\d+\]: Failed (\S+) for (?:invalid user )?(\S+) from (\S+) port")
AUTH_SUDO = re.compile(rb"sudo:\s+(\S+) : .*?COMMAND=(.*)$")


def text(b):
    return b.decode("utf-8", "backslashreplace")


def cut(b):
    s = text(b.strip())
    return s if len(s) <= MAX_LINE_CHARS else s[:MAX_LINE_CHARS] + "..."


def parse_bodyfile(path, prefixes, counts):
    """Yields (fs, path bytes, inode, mode, size, mtime, deleted, realloc) per entry that may
    be a key file; counts every entry and every deleted one."""
    with open(path, "rb") as f:
        for raw in f:
            counts["entries"] += 1
            counts["deleted_entries"] += b" (deleted" in raw
            if not MAYBE_KEY.search(raw):
                continue
            fields = raw.rstrip(b"\n").split(b"|")
            if len(fields) < 11:
                continue
            name = b"|".join(fields[1:-9])  # names may hold "|": the other fields do not
            inode, mode, size, mtime = fields[-9], fields[-8], fields[-5], fields[-3]
            deleted = realloc = False
            if name.endswith(b" (deleted-realloc)"):
                name, deleted, realloc = name[:-18], True, True
            elif name.endswith(b" (deleted)"):
                name, deleted = name[:-10], True
            fs = None
            for p, cand in prefixes:
                if name.startswith(p):
                    fs, name = cand, b"/" + name[len(p):]
                    break
            if fs is None or not size.isdigit():
                continue
            yield fs, name, inode.decode("ascii", "replace"), mode.decode("ascii", "replace"), \
                int(size), int(mtime) if mtime.isdigit() else 0, deleted, realloc


class Triage:
    def __init__(self, image, layout, outdir):
        self.image, self.outdir = image, outdir
        self.layout = layout
        self.key_files, self.findings, self.skipped, self.warnings = [], [], [], []
        self.members = set()
        self.extracted_bytes = 0
        self.finding_overflow = 0

    def tsk(self, tool, fs, inode):
        return [tool, "-b", str(fs["sector_size"]), "-o", str(fs["offset_sector"]), self.image, inode]

    def icat(self, fs, inode, limit):
        p = subprocess.Popen(self.tsk("icat", fs, inode), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        data = p.stdout.read(limit)
        p.stdout.close()
        p.wait()
        return data

    def allocated(self, fs, inode):
        out = subprocess.run(self.tsk("istat", fs, inode), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        return b"\nAllocated\n" in out[:4096]

    def finding(self, kind, entry, detail, line=None, line_number=None):
        if len(self.findings) >= MAX_FINDINGS:
            self.finding_overflow += 1
            return
        f = {"kind": kind, "path": entry["path"], "inode": entry["inode"], "sha256": entry.get("sha256"),
             "fs_offset_sector": entry["fs_offset_sector"], "detail": detail}
        if line is not None:
            f["evidence"], f["line_number"] = cut(line), line_number
        self.findings.append(f)

    def member_name(self, entry, single_fs):
        safe = re.sub(r"[^A-Za-z0-9._+@=,/-]", "_", entry["path"].lstrip("/"))
        safe = "/".join(part if part not in ("", ".", "..") else "_" for part in safe.split("/"))
        base = safe if single_fs else f"fs{entry['fs_offset_sector']}/{safe}"
        if entry["deleted"]:
            base += f"~deleted-inode{entry['inode']}"
        name, n = base, 1
        while name in self.members:
            n += 1
            name = f"{base}~{n}"
        self.members.add(name)
        return name

    def select(self, bodyfile):
        fss = self.layout["filesystems"]
        prefixes = [(fs["bodyfile_prefix"].encode(), fs) for fs in fss]
        chosen, counts, tmp_probe = [], {"entries": 0, "deleted_entries": 0}, 0
        for fs, path, inode, mode, size, mtime, deleted, realloc in parse_bodyfile(bodyfile, prefixes, counts):
            if "r" not in mode[:3] or size == 0:
                continue  # regular files with content only
            spath = text(path)
            category = None
            m = KEY_RE.match(spath)
            if m:
                category = re.sub(r"\d+$", "", m.lastgroup)
            elif TMP_DIRS.match(spath):
                executable = any(c in "xst" for c in mode[5::3])
                if not executable and tmp_probe < TMP_MAGIC_MAX_FILES and not realloc:
                    tmp_probe += 1
                    head = self.icat(fs, inode, 4)
                    executable = head.startswith(b"\x7fELF") or head.startswith(b"#!")
                if executable:
                    category = "tmp_executable"
            if category:
                chosen.append({"path": spath, "inode": int(inode) if inode.isdigit() else inode, "size": size,
                               "mtime": mtime, "category": category, "deleted": deleted, "realloc": realloc,
                               "fs": fs, "fs_offset_sector": fs["offset_sector"], "mode": mode})
        return chosen, counts

    def fetch(self, entry):
        """(live, content): live = a name TSK marked deleted whose inode is allocated."""
        fs, inode = entry["fs"], str(entry["inode"])
        live = entry["deleted"] and self.allocated(fs, inode)
        return live, self.icat(fs, inode, KEY_FILE_MAX_BYTES)

    def extract(self, chosen, tar):
        single_fs = len(self.layout["filesystems"]) == 1
        ordered = sorted(chosen, key=lambda e: (e["fs_offset_sector"], e["path"], e["deleted"]))
        planned, todo = 0, []
        for entry in ordered:
            entry["sha256"] = None
            reason = None
            if len(todo) >= MAX_KEY_FILES:
                reason = f"more than {MAX_KEY_FILES} key files"
            elif entry["realloc"]:
                reason = "deleted and its inode reallocated: the content belongs to another file"
            elif entry["size"] > KEY_FILE_MAX_BYTES:
                reason = f"larger than {KEY_FILE_MAX_BYTES} bytes"
            elif planned + entry["size"] > KEY_FILES_TOTAL_MAX_BYTES:
                reason = f"the tarball reached {KEY_FILES_TOTAL_MAX_BYTES} bytes"
            if reason:
                entry["skipped"] = reason
                self.skipped.append({"path": entry["path"], "inode": entry["inode"], "reason": reason})
            else:
                planned += entry["size"]
                todo.append(entry)
        # icat runs in parallel, a few files ahead; the tarball is written in order.
        with ThreadPoolExecutor(ICAT_WORKERS) as pool:
            futures = {}
            done = 0
            for entry in ordered:
                if "skipped" not in entry:
                    for n in range(done, min(done + ICAT_WINDOW, len(todo))):
                        if n not in futures:
                            futures[n] = pool.submit(self.fetch, todo[n])
                    live, data = futures.pop(done).result()
                    done += 1
                    if live:
                        # A live file whose name ends in " (deleted)": the suffix was the attacker's.
                        entry["path"] += " (deleted)"
                        entry["deleted"] = False
                    entry["sha256"] = "sha256:" + hashlib.sha256(data).hexdigest()
                    entry["extracted_bytes"] = len(data)
                    entry["archive_member"] = self.member_name(entry, single_fs)
                    self.extracted_bytes += len(data)
                    info = tarfile.TarInfo(entry["archive_member"])
                    info.size, info.mtime, info.mode = len(data), entry["mtime"], 0o400
                    tar.addfile(info, io.BytesIO(data))
                    self.inspect(entry, data)
                entry.pop("fs")
                self.key_files.append(entry)

    def inspect(self, entry, data):
        cat = entry["category"]
        if entry["deleted"]:
            self.finding("deleted_file", entry, f"deleted file recovered from its inode: {len(data)} bytes "
                                                f"({cat.replace('_', ' ')})")
        if cat == "tmp_executable":
            kind = "ELF binary" if data.startswith(b"\x7fELF") else \
                "script" if data.startswith(b"#!") else "file with an execute bit"
            self.finding("tmp_executable", entry, f"{kind} of {len(data)} bytes in a temporary directory")
        if cat == "ld_preload":
            if entry["path"] == "/etc/ld.so.preload":
                libs = [cut(x) for x in data[:PARSE_MAX_BYTES].split() if x.startswith(b"/")]
                self.finding("ld_preload", entry, "/etc/ld.so.preload exists: every program loads "
                             + (", ".join(libs[:5]) or "the libraries it names"))
            return
        if cat == "authorized_keys":
            self.keys(entry, data)
            return
        if cat == "auth_log":
            self.auth_log(entry, data)
            return
        if cat not in ("cron", "systemd", "rc_profile", "shell_history", "tmp_executable"):
            return
        if cat == "tmp_executable" and not data.startswith(b"#!"):
            return
        where = {"cron": "cron entry", "systemd": "systemd unit line", "rc_profile": "shell start-up line",
                 "shell_history": "shell history line", "tmp_executable": "script line"}[cat]
        spool = entry["path"].startswith("/var/spool/cron/")
        for number, line in enumerate(data[:PARSE_MAX_BYTES].split(b"\n"), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            if FETCH_RUN.search(line):
                self.finding("fetch_and_run", entry, f"{where} downloads code and runs it", line, number)
            elif KEY_PLANT.search(line):
                self.finding("ssh_key_planting", entry, f"{where} appends an SSH key to authorized_keys", line, number)
            elif TMP_REF.search(line) and cat != "tmp_executable":
                self.finding("runs_from_tmp", entry, f"{where} refers to a temporary directory", line, number)
            elif cat == "shell_history" and DOWNLOAD.search(line):
                self.finding("download", entry, f"{where} downloads a file", line, number)
            elif spool and cat == "cron" and not stripped[:1].isalpha():
                self.finding("user_crontab_entry", entry, "entry in a user's crontab", line, number)

    def keys(self, entry, data):
        owner = entry["path"].split("/.ssh/")[0] or "/"
        for number, line in enumerate(data[:PARSE_MAX_BYTES].split(b"\n"), 1):
            m = KEY_LINE.match(line.strip())
            if not m or line.strip().startswith(b"#"):
                continue
            try:
                fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(m["blob"])).digest()).decode().rstrip("=")
            except ValueError:
                fp = "unparseable key"
            comment = m["comment"] or b""
            detail = f"key for {owner}: {text(m['type'])} {fp}, comment '{cut(comment)}'"
            if m["opts"]:
                detail += f", options {cut(m['opts'])}"
            bad = KNOWN_BAD_COMMENTS.get(comment.strip())
            if bad:
                detail += f" (a comment {bad})"
            self.finding("authorized_key", entry, detail, line, number)

    def auth_log(self, entry, data):
        if entry["path"].endswith(".gz"):
            try:
                data = gzip.GzipFile(fileobj=io.BytesIO(data)).read(LOG_PARSE_MAX_BYTES)
            except (OSError, EOFError):
                return
        accepted, failed, sudo = {}, {}, []
        for number, line in enumerate(data[:LOG_PARSE_MAX_BYTES].split(b"\n"), 1):
            m = AUTH_ACCEPTED.search(line)
            if m:
                accepted.setdefault((m[2], m[3], m[1]), [0, line, number])[0] += 1
                continue
            m = AUTH_FAILED.search(line)
            if m:
                failed[m[3]] = failed.get(m[3], 0) + 1
                continue
            m = AUTH_SUDO.search(line)
            if m and len(sudo) < MAX_SUDO_FINDINGS:
                sudo.append((m[1], m[2], line, number))
        for (user, ip, method), (n, first, number) in sorted(accepted.items()):
            self.finding("ssh_login", entry, f"{text(user)} logged in with {text(method)} from {text(ip)} "
                                             f"({n} time{'s' if n > 1 else ''}; the first is shown)", first, number)
        for ip, n in sorted(failed.items()):
            self.finding("ssh_failed_logins", entry, f"{n} failed SSH login{'s' if n > 1 else ''} from {text(ip)}")
        for user, command, line, number in sudo:
            self.finding("sudo_command", entry, f"{text(user)} ran a command as root with sudo: {cut(command)}",
                         line, number)


def main():
    image, layout_path, bodyfile, outdir = sys.argv[1:5]
    with open(layout_path) as f:
        layout = json.load(f)
    t = Triage(image, layout, outdir)
    chosen, counts = t.select(bodyfile)
    tar_path = os.path.join(outdir, "key-files.tar.gz")
    with open(tar_path, "wb") as raw:
        # mtime 0 in the gzip header: the same key files give the same tarball.
        # Level 6 (gzip's default): Python's 9 costs twice the time for a few per cent.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                t.extract(chosen, tar)
                manifest = json.dumps(t.key_files, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo("cleanroom-key-files.json")
                info.size, info.mode = len(manifest), 0o400
                tar.addfile(info, io.BytesIO(manifest))
    if t.finding_overflow:
        t.warnings.append(f"{t.finding_overflow} findings beyond the first {MAX_FINDINGS} were dropped")
    for e in t.key_files:
        e.pop("realloc", None)
    json.dump({
        "key_files": t.key_files, "findings": t.findings, "skipped": t.skipped,
        "key_files_archive": {"name": "key-files.tar.gz", "manifest_member": "cleanroom-key-files.json",
                              "extracted_bytes": t.extracted_bytes},
        "counts": dict(counts, key_files=len(t.key_files), findings=len(t.findings)),
        "limits": {"key_file_max_bytes": KEY_FILE_MAX_BYTES, "key_files_total_max_bytes": KEY_FILES_TOTAL_MAX_BYTES,
                   "max_key_files": MAX_KEY_FILES, "parse_max_bytes": PARSE_MAX_BYTES,
                   "log_parse_max_bytes": LOG_PARSE_MAX_BYTES, "tmp_magic_max_files": TMP_MAGIC_MAX_FILES,
                   "max_findings": MAX_FINDINGS, "max_line_chars": MAX_LINE_CHARS},
        "triage_warnings": t.warnings,
    }, sys.stdout)


if __name__ == "__main__":
    main()
