//! Evidence benchmark (run by `scripts/bench-evidence`): ratios measured in the same
//! run on the same file, so the machine's speed cancels out.
//!
//! 1. our SHA-256 pass vs `openssl dgst -sha256`          (goal >= 0.9)
//! 2. our three-digest pass (SHA-256, SHA-1, MD5) vs `md5sum` alone (goal >= 0.9)
//! 3. multipart upload to the lab with the three digests vs the same upload without
//!    them (per-part checksums in both)                   (goal >= 0.9)
//! 4. peak memory (VmHWM) of a process uploading a 4 GiB file to a store that takes
//!    `BENCH_PART_MS` (default 200 ms, the slow-network case of issue 12) to accept each
//!    part (goal < 256 MiB); `BENCH_ONLY=peak` runs this one alone
//!
//! A ratio is baseline time / our time: 1.0 is as fast, above 1 faster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cleanroom::evidence::digest::{MultiHasher, StreamDigest};
use cleanroom::evidence::store::{
    ByteChunks, LockMode, ObjectLock, ObjectMeta, ObjectStore, Part, PutObject, StoreError, StoreErrorKind,
    Version, Written,
};
use cleanroom::evidence::upload::{hash_stream, send_multipart};
use cleanroom::progress::Silent;
use sha2::Sha256;

const MIB: u64 = 1 << 20;
const CHUNK: usize = 8 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak-child") {
        return peak_child(Path::new(&args[i + 1]));
    }
    // SAFETY: single-threaded here, before any runtime starts.
    unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };
    let size_mib: u64 = std::env::var("BENCH_SIZE_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let peak_mib: u64 = std::env::var("BENCH_PEAK_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let dir = std::env::var_os("BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("peak") {
        let (peak, took) = peak_run(&dir, peak_mib);
        println!(
            "peak memory uploading {peak_mib} MiB to a store taking {} ms per part (goal < 256 MiB): {peak}; {:.1} s; load {}",
            part_delay().as_millis(),
            took.as_secs_f64(),
            load_average()
        );
        return;
    }
    let file = dir.join(format!("cleanroom-bench-{}.bin", std::process::id()));
    eprintln!("writing {size_mib} MiB of pseudo-random data to {}", file.display());
    write_file(&file, size_mib * MIB);
    warm(&file);

    let openssl = time_cmd("openssl", &["dgst", "-sha256"], &file);
    let ours256 = time(|| one_pass::<Sha256>(&file));
    let md5sum = time_cmd("md5sum", &[], &file);
    let three = time(|| three_pass(&file));
    let md5_alone = time(|| one_pass::<md5::Md5>(&file));
    let sha1_alone = time(|| one_pass::<sha1::Sha1>(&file));

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (plain, hashed, readback) = rt.block_on(upload_ratio(&file));
    let _ = std::fs::remove_file(&file);

    let (peak, _) = peak_run(&dir, peak_mib);

    let gbps = |d: Duration| (size_mib * MIB) as f64 / d.as_secs_f64() / 1e9;
    println!(
        "evidence benchmark: {size_mib} MiB file, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  openssl dgst -sha256          {:>7.2} s  {:.2} GB/s", openssl.as_secs_f64(), gbps(openssl));
    println!("  our SHA-256 pass              {:>7.2} s  {:.2} GB/s", ours256.as_secs_f64(), gbps(ours256));
    println!("  md5sum                        {:>7.2} s  {:.2} GB/s", md5sum.as_secs_f64(), gbps(md5sum));
    println!("  our SHA-256+SHA-1+MD5 pass    {:>7.2} s  {:.2} GB/s", three.as_secs_f64(), gbps(three));
    println!(
        "  (our MD5 alone                {:>7.2} s  {:.2} GB/s)",
        md5_alone.as_secs_f64(),
        gbps(md5_alone)
    );
    println!(
        "  (our SHA-1 alone              {:>7.2} s  {:.2} GB/s)",
        sha1_alone.as_secs_f64(),
        gbps(sha1_alone)
    );
    println!("  lab upload, plain             {:>7.2} s  {:.2} GB/s", plain.as_secs_f64(), gbps(plain));
    println!("  lab upload, with 3 digests    {:>7.2} s  {:.2} GB/s", hashed.as_secs_f64(), gbps(hashed));
    println!("  lab read-back + re-hash       {:>7.2} s  {:.2} GB/s", readback.as_secs_f64(), gbps(readback));
    println!("ratios (baseline time / ours; goal >= 0.9):");
    println!("  SHA-256 vs openssl            {:.2}", openssl.as_secs_f64() / ours256.as_secs_f64());
    println!("  3 digests vs md5sum alone     {:.2}", md5sum.as_secs_f64() / three.as_secs_f64());
    println!("  hashed vs plain upload        {:.2}", plain.as_secs_f64() / hashed.as_secs_f64());
    println!(
        "peak memory uploading {peak_mib} MiB to a store taking {} ms per part (goal < 256 MiB): {peak}",
        part_delay().as_millis()
    );
}

/// The time the slow store takes to accept one part (env `BENCH_PART_MS`, default 200:
/// issue 12's slow network; the parts in flight are held that long).
fn part_delay() -> Duration {
    Duration::from_millis(std::env::var("BENCH_PART_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(200))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Writes a `mib` file, uploads it from a child process, returns what the child printed
/// (its peak RSS) and how long the upload took.
fn peak_run(dir: &Path, mib: u64) -> (String, Duration) {
    let peak_file = dir.join(format!("cleanroom-bench-peak-{}.bin", std::process::id()));
    write_file(&peak_file, mib * MIB);
    let t = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--peak-child", peak_file.to_str().unwrap()])
        .output()
        .expect("peak child runs");
    let took = t.elapsed();
    let _ = std::fs::remove_file(&peak_file);
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), took)
}

fn write_file(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::with_capacity(CHUNK, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Reads the file once so every measurement starts from the page cache.
fn warm(path: &Path) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf).unwrap() > 0 {}
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn time_cmd(cmd: &str, args: &[&str], file: &Path) -> Duration {
    let t = Instant::now();
    let out = std::process::Command::new(cmd)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} failed");
    t.elapsed()
}

fn one_pass<D: StreamDigest>(path: &Path) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = D::start();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.feed(&buf[..n]);
    }
    std::hint::black_box(h.finish());
}

fn three_pass(path: &Path) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = MultiHasher::with_queue(2);
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        buf.truncate(n);
        h.update_blocking(Bytes::from(buf));
    }
    std::hint::black_box(h.finish_blocking());
}

async fn upload_ratio(file: &Path) -> (Duration, Duration, Duration) {
    let lab = cleanroom::lab::Lab::start(&Default::default()).expect("the lab starts");
    let account: cleanroom::ids::AccountId = "399999999999".parse().unwrap();
    let region: cleanroom::ids::Region = "eu-west-1".parse().unwrap();
    let bucket: cleanroom::ids::BucketName = format!("bench-{}", std::process::id()).parse().unwrap();
    cleanroom::lab::seed::forensics_account(&lab, &account, &region, &bucket, 1).await.expect("seed");
    let store: Arc<dyn ObjectStore> =
        Arc::new(cleanroom::aws::s3::S3Store::new(lab.clients(&account, &region).s3, bucket));
    let lock = ObjectLock { retention: None, legal_hold: false };
    // Warm-up: connections, moto's first multipart.
    let small = std::env::temp_dir().join(format!("cleanroom-bench-warm-{}", std::process::id()));
    write_file(&small, 40 * MIB);
    send_multipart(store.clone(), "warm", &small, "application/octet-stream", &lock, true, &Silent)
        .await
        .unwrap();
    let _ = std::fs::remove_file(&small);
    let t = Instant::now();
    send_multipart(store.clone(), "plain", file, "application/octet-stream", &lock, false, &Silent)
        .await
        .unwrap();
    let plain = t.elapsed();
    let t = Instant::now();
    let sent =
        send_multipart(store.clone(), "hashed", file, "application/octet-stream", &lock, true, &Silent)
            .await
            .unwrap();
    let hashed = t.elapsed();
    let t = Instant::now();
    let (back, _) =
        hash_stream(store.as_ref(), "hashed", sent.written.version_id.as_deref(), Some(sent.part_size))
            .await
            .unwrap();
    let readback = t.elapsed();
    assert_eq!(back.sha256, sent.digests.sha256, "read-back matches");
    (plain, hashed, readback)
}

/// Uploads `path` through the real multipart path (reader, digest threads, parallel
/// parts) to a store that holds each part for [`part_delay`], and prints this process's
/// peak RSS.
fn peak_child(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(SlowStore(part_delay()));
        let lock = ObjectLock {
            retention: Some((LockMode::Compliance, time::OffsetDateTime::now_utc())),
            legal_hold: false,
        };
        send_multipart(store, "peak", path, "application/octet-stream", &lock, true, &Silent).await.unwrap();
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .trim_start_matches("VmHWM:")
        .trim();
    let kib: u64 = hwm.trim_end_matches(" kB").trim().parse().unwrap_or(0);
    println!("{} MiB (VmHWM {hwm})", kib / 1024);
}

/// Accepts each part after a delay (a slow link: the uploader holds every part in flight
/// that long), then forgets it, so only the uploader's own memory is measured.
struct SlowStore(Duration);

#[async_trait]
impl ObjectStore for SlowStore {
    fn location(&self) -> String {
        "null://".into()
    }
    async fn put(&self, _: PutObject) -> Result<Written, StoreError> {
        Ok(Written { version_id: None, checksum_sha256: None, request_id: None })
    }
    async fn create_multipart(&self, _: &str, _: &'static str, _: &ObjectLock) -> Result<String, StoreError> {
        Ok("u".into())
    }
    async fn upload_part(
        &self,
        _: &str,
        _: &str,
        number: i32,
        body: Bytes,
        sha: &str,
    ) -> Result<Part, StoreError> {
        // Hold the part as a slow network send would.
        tokio::time::sleep(self.0).await;
        drop(body);
        Ok(Part { number, etag: "e".into(), sha256_b64: sha.into() })
    }
    async fn complete_multipart(&self, _: &str, _: &str, _: &[Part], _: bool) -> Result<Written, StoreError> {
        Ok(Written { version_id: Some("v".into()), checksum_sha256: None, request_id: None })
    }
    async fn abort_multipart(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn set_retention(
        &self,
        _: &str,
        _: Option<&str>,
        _: LockMode,
        _: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, key: &str, _: Option<&str>) -> Result<ByteChunks, StoreError> {
        Err(StoreError::new(StoreErrorKind::NotFound, "GetObject", key, "null store"))
    }
    async fn head(&self, _: &str, _: Option<&str>) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(None)
    }
    async fn list(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Ok(vec![])
    }
    async fn list_versions(&self, _: &str) -> Result<Vec<Version>, StoreError> {
        Ok(vec![])
    }
}
