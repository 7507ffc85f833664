"""The image pass: read a device or image once, SHA-256, SHA-1 and MD5 of the same bytes, and
optionally stream them to stdout (into `aws s3 cp -`).

    python3 imagepass.py DEVICE EXPECTED_BYTES RESULT_JSON [--stream] [--kill-on-error PID]

Why Python and not `tee` into three `openssl dgst`: the same OpenSSL digests (hashlib), but
no pipe copies; MD5 (serial, the slowest) runs on one thread, SHA-1 and SHA-256 (SHA-NI) on
another, the read and the stream write on the main thread, each releasing the GIL
(scripts/bench-collect measures both against md5sum).
If the pass fails (read error, short read, more bytes than expected), PID (the uploader
reading our stdout) is killed before our stdout closes, so a partial stream is never
completed into an object.
Exit: 0 done; 8 byte count differs from EXPECTED_BYTES; 9 read or write error.
"""
import hashlib
import json
import os
import signal
import sys
import threading
import time

CHUNK_BYTES = 4 << 20  # 4 MiB: large enough that hashlib releases the GIL on every update
RING = 4               # chunks in flight: lets the two hashing threads drift a little apart
EXIT_MISMATCH = 8
EXIT_FAILED = 9


class Worker(threading.Thread):
    def __init__(self, hashes):
        super().__init__(daemon=True)
        self.hashes = hashes
        self.cond = threading.Condition()
        self.queue = []
        self.done = 0  # chunks finished

    def submit(self, view):
        with self.cond:
            self.queue.append(view)
            self.cond.notify()

    def wait_done(self, count):
        with self.cond:
            while self.done < count:
                self.cond.wait()

    def run(self):
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                view = self.queue.pop(0)
            if view is None:
                return
            for h in self.hashes:
                h.update(view)
            with self.cond:
                self.done += 1
                self.cond.notify_all()


def main():
    args = sys.argv[1:]
    stream = "--stream" in args
    kill_pid = None
    if "--kill-on-error" in args:
        kill_pid = int(args[args.index("--kill-on-error") + 1])
    device, expected, result_path = args[0], int(args[1]), args[2]

    def fail(code, message):
        if kill_pid:
            try:
                os.kill(kill_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.stderr.write(f"imagepass: {message}\n")
        sys.exit(code)

    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    workers = [Worker([md5]), Worker([sha1, sha256])]
    for w in workers:
        w.start()
    bufs = [bytearray(CHUNK_BYTES) for _ in range(RING)]
    total = chunks = 0
    started = time.monotonic()
    try:
        fd = os.open(device, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass
        while True:
            slot = chunks % RING
            if chunks >= RING:  # the slot's previous chunk must be hashed before reuse
                for w in workers:
                    w.wait_done(chunks - RING + 1)
            buf = memoryview(bufs[slot])
            n = 0
            while n < CHUNK_BYTES:
                got = os.readv(fd, [buf[n:]])
                if got == 0:
                    break
                n += got
            if n == 0:
                break
            view = buf[:n]
            for w in workers:
                w.submit(view)
            if stream:
                sent = 0
                while sent < n:
                    sent += os.write(1, view[sent:])
            total += n
            chunks += 1
            if total > expected:
                fail(EXIT_MISMATCH, f"{device} gave more than the expected {expected} bytes")
        os.close(fd)
    except OSError as e:
        fail(EXIT_FAILED, f"reading {device} or writing the stream failed after {total} bytes: {e}")
    for w in workers:
        w.submit(None)
        w.join()
    if total != expected:
        fail(EXIT_MISMATCH, f"{device} gave {total} bytes, expected {expected}: short read")
    seconds = time.monotonic() - started
    with open(result_path, "w") as f:
        json.dump({"bytes": total, "sha256": sha256.hexdigest(), "sha1": sha1.hexdigest(),
                   "md5": md5.hexdigest(), "seconds": round(seconds, 3), "chunk_bytes": CHUNK_BYTES}, f)


if __name__ == "__main__":
    main()
