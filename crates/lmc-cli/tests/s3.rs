//! lmc against a real S3-compatible server: `moto_server` on 127.0.0.1,
//! which `.ci/run` starts (scripts/s3-server.sh) and names in
//! `LMC_TEST_S3_ENDPOINT`. Every request goes through a TCP proxy written
//! here, which counts the bytes that pass and injects faults: a connection
//! that dies mid-upload, 503 "SlowDown" answers, ranged answers cut short.
//!
//! Without `LMC_TEST_S3_ENDPOINT` the tests say loudly that they are
//! skipped and pass; CI always sets it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lmc_core::{Container, SegmentKind};

/// The S3 server's endpoint (`http://127.0.0.1:PORT`), or `None` (the test
/// is then skipped, with a message that says so).
fn server() -> Option<SocketAddr> {
    match std::env::var("LMC_TEST_S3_ENDPOINT") {
        Ok(url) => {
            let hostport = url.trim_start_matches("http://").trim_end_matches('/');
            Some(
                hostport
                    .parse()
                    .expect("LMC_TEST_S3_ENDPOINT is http://IP:PORT"),
            )
        }
        Err(_) => {
            eprintln!(
                "\n*** SKIPPED: LMC_TEST_S3_ENDPOINT is not set, so the S3 tests did not run. \
                 Start a server with `eval $(scripts/s3-server.sh start)` (README, \"Object \
                 storage\") or run .ci/run. ***\n"
            );
            None
        }
    }
}

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Once this many request bytes have passed, every connection is cut
    /// and new ones are refused: the network is gone.
    DieAfter(u64),
    /// The next requests (this many) get a 503 SlowDown from the proxy.
    Answer503(u32),
    /// Ranged GETs after the first `skip` are answered with half of their
    /// bytes (the headers consistent with that, the range claimed unchanged).
    TruncateRanges {
        skip: u32,
    },
}

struct State {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    dead: AtomicBool,
    /// Bytes from clients to the server, and back.
    up: AtomicU64,
    down: AtomicU64,
    served_503: AtomicU64,
    truncated: AtomicU64,
    /// Every socket opened, to cut them all at once.
    sockets: Mutex<Vec<TcpStream>>,
}

/// A fault-injecting TCP proxy in front of the S3 server.
struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            fault: Mutex::new(Fault::None),
            dead: AtomicBool::new(false),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            served_503: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if st.dead.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &st);
                });
            }
        });
        Proxy { addr, state }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, f: Fault) {
        *self.state.fault.lock().unwrap() = f;
    }

    /// Bytes that passed both ways since the last reset.
    fn bytes(&self) -> u64 {
        self.state.up.load(Ordering::SeqCst) + self.state.down.load(Ordering::SeqCst)
    }

    fn reset_counts(&self) {
        self.state.up.store(0, Ordering::SeqCst);
        self.state.down.store(0, Ordering::SeqCst);
    }
}

fn die(st: &State) {
    st.dead.store(true, Ordering::SeqCst);
    for s in st.sockets.lock().unwrap().iter() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// One request's head: its lines up to the blank one, as sent.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if head.ends_with(b"\r\n\r\n") {
            return Ok(Some(head));
        }
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(client: TcpStream, st: &Arc<State>) -> std::io::Result<()> {
    let upstream = TcpStream::connect(st.upstream)?;
    {
        let mut all = st.sockets.lock().unwrap();
        all.push(client.try_clone()?);
        all.push(upstream.try_clone()?);
    }
    // Answers flow back unchanged (clients send one request at a time on
    // a connection, so the proxy may answer between two of them itself).
    let (mut from_up, mut to_client) = (upstream.try_clone()?, client.try_clone()?);
    let st2 = st.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from_up.read(&mut buf) {
            if n == 0 || to_client.write_all(&buf[..n]).is_err() {
                break;
            }
            st2.down.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut to_up = upstream;
    while let Some(head) = read_head(&mut reader)? {
        let text = String::from_utf8_lossy(&head).to_string();
        assert!(
            header(&text, "transfer-encoding").is_none(),
            "the proxy handles Content-Length bodies only: {text}"
        );
        let body_len: u64 = header(&text, "content-length").map_or(0, |v| v.parse().unwrap());
        let fault = *st.fault.lock().unwrap();
        match fault {
            Fault::Answer503(n) if n > 0 => {
                *st.fault.lock().unwrap() = Fault::Answer503(n - 1);
                std::io::copy(&mut (&mut reader).take(body_len), &mut std::io::sink())?;
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                            <Message>Please reduce your request rate.</Message></Error>";
                write!(
                    to_client,
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                st.served_503.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Fault::TruncateRanges { skip }
                if text.starts_with("GET ") && header(&text, "range").is_some() =>
            {
                if skip == 0 {
                    truncated_answer(st, &text, &mut to_client)?;
                    continue;
                }
                *st.fault.lock().unwrap() = Fault::TruncateRanges { skip: skip - 1 };
            }
            _ => {}
        }
        to_up.write_all(&head)?;
        st.up.fetch_add(head.len() as u64, Ordering::SeqCst);
        let mut left = body_len;
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let n = reader.read(&mut buf[..left.min(64 << 10) as usize])?;
            if n == 0 {
                return Ok(());
            }
            to_up.write_all(&buf[..n])?;
            left -= n as u64;
            let total = st.up.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if let Fault::DieAfter(limit) = *st.fault.lock().unwrap()
                && total >= limit
            {
                die(st);
                return Ok(());
            }
        }
    }
    let _ = to_up.shutdown(Shutdown::Write);
    Ok(())
}

/// Sends the ranged GET `head` to the server on a connection of its own,
/// and gives the client half of the answer's body, with a Content-Length
/// that says so and the Content-Range unchanged.
fn truncated_answer(st: &State, head: &str, to_client: &mut TcpStream) -> std::io::Result<()> {
    let mut up = TcpStream::connect(st.upstream)?;
    let head = head.trim_end_matches("\r\n");
    write!(up, "{head}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (resp_head, body) = answer.split_at(split);
    let resp_head = String::from_utf8_lossy(resp_head);
    let half = &body[..body.len() / 2];
    let mut out = String::new();
    for line in resp_head.trim_end().lines() {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", half.len()));
    to_client.write_all(out.as_bytes())?;
    to_client.write_all(half)?;
    st.truncated.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// object_store settings for the server at `endpoint`.
fn options(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("aws_endpoint", endpoint.to_string()),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "testing".into()),
        ("aws_secret_access_key", "testing".into()),
        ("aws_region", "us-east-1".into()),
    ]
}

fn location(url: &str, endpoint: &str) -> lmc_remote::Location {
    let opts = options(endpoint);
    let opts: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    lmc_remote::Location::parse_with(url, &opts).unwrap()
}

fn put(url: &str, endpoint: &str, bytes: &[u8]) {
    let mut up = lmc_remote::Upload::to(location(url, endpoint)).unwrap();
    up.write_all(bytes).unwrap();
    up.finish().unwrap();
}

/// Runs `lmc ARGS` in `dir` with the environment pointing at `endpoint`,
/// as a user's would (`AWS_ENDPOINT_URL` and the rest), retrying a request
/// at most `retries` times.
fn lmc_s3(dir: &Path, endpoint: &str, retries: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmc"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("LMC_RETRIES", retries.to_string())
        .env("LMC_RETRY_TIMEOUT", "20")
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        common::text(&out.stderr)
    );
    out
}

/// The checkpoint the tests move around: MiniLM-L6 (fp32, 90 MB of real
/// weights), fetched as the real-data tests fetch it; `None` (after a
/// message) where LMC_SKIP_REAL_DATA is set.
fn checkpoint() -> Option<PathBuf> {
    common::minilm()
}

/// A bucket for one test, and the checkpoint and its container in it.
struct Setup {
    proxy: Proxy,
    server: SocketAddr,
    bucket: String,
    dir: tempfile::TempDir,
    model: PathBuf,
    container: Vec<u8>,
}

fn setup(test: &str) -> Option<Setup> {
    let server = server()?;
    let model = checkpoint()?;
    let bucket = format!("lmc-{test}-{}", std::process::id());
    common::create_bucket(&server.to_string(), &bucket);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("model.lmc");
    common::ok(
        dir.path(),
        &[
            "compress".as_ref(),
            model.as_os_str(),
            "-o".as_ref(),
            local.as_os_str(),
            "-q".as_ref(),
        ],
    );
    let container = std::fs::read(&local).unwrap();
    Some(Setup {
        proxy: Proxy::start(server),
        server,
        bucket,
        dir,
        model,
        container,
    })
}

#[test]
fn compress_decompress_info_verify_on_s3_urls() {
    let Some(s) = setup("roundtrip") else { return };
    let ep = s.proxy.endpoint();
    let d = s.dir.path();
    let url = format!("s3://{}/ckpt/model.lmc", s.bucket);
    let model = s.model.to_str().unwrap();

    let t = Instant::now();
    ok(
        lmc_s3(d, &ep, 3, &["compress", model, "-o", &url, "-q"]),
        "compress to S3",
    );
    eprintln!("compress + upload: {:.2} s", t.elapsed().as_secs_f64());
    // What was uploaded is what a local compress writes.
    let direct = s.server.to_string();
    let obj = lmc_remote::Object::at(location(&url, &format!("http://{direct}"))).unwrap();
    let mut uploaded = Vec::new();
    obj.copy_to(&mut uploaded).unwrap();
    assert!(
        uploaded == s.container,
        "the uploaded container differs from a local one"
    );

    // An existing key is not replaced without --force.
    let again = lmc_s3(d, &ep, 3, &["compress", model, "-o", &url, "-q"]);
    assert!(!again.status.success());
    assert!(
        common::text(&again.stderr).contains("already exists"),
        "{}",
        common::text(&again.stderr)
    );

    let info = ok(lmc_s3(d, &ep, 3, &["info", &url]), "info");
    assert!(
        common::text(&info.stdout).contains("encoder.layer.0"),
        "{}",
        common::text(&info.stdout)
    );
    ok(lmc_s3(d, &ep, 3, &["verify", &url, "-q"]), "verify");

    s.proxy.reset_counts();
    let t = Instant::now();
    ok(
        lmc_s3(
            d,
            &ep,
            3,
            &["decompress", &url, "-o", "restored.safetensors", "-q"],
        ),
        "decompress",
    );
    let secs = t.elapsed().as_secs_f64();
    assert!(
        std::fs::read(d.join("restored.safetensors")).unwrap() == std::fs::read(&s.model).unwrap()
    );
    eprintln!(
        "decompress from S3: {:.2} s, {} bytes through the proxy for a {}-byte container",
        secs,
        s.proxy.bytes(),
        s.container.len()
    );

    // Compressing from a URL, and decompressing to one.
    let src_url = format!("s3://{}/raw/model.safetensors", s.bucket);
    put(&src_url, &ep, &std::fs::read(&s.model).unwrap());
    ok(
        lmc_s3(
            d,
            &ep,
            3,
            &["compress", &src_url, "-o", "from-url.lmc", "-q"],
        ),
        "compress from S3",
    );
    assert!(std::fs::read(d.join("from-url.lmc")).unwrap() == s.container);
    let out_url = format!("s3://{}/restored/model.safetensors", s.bucket);
    ok(
        lmc_s3(
            d,
            &ep,
            3,
            &["decompress", "from-url.lmc", "-o", &out_url, "-q"],
        ),
        "decompress to S3",
    );
    let obj = lmc_remote::Object::at(location(&out_url, &ep)).unwrap();
    let mut restored = Vec::new();
    obj.copy_to(&mut restored).unwrap();
    assert!(restored == std::fs::read(&s.model).unwrap());

    // Read over plain HTTP (moto serves objects unsigned, path-style).
    let http_url = format!("{ep}/{}/ckpt/model.lmc", s.bucket);
    ok(
        lmc_s3(
            d,
            &ep,
            3,
            &["decompress", &http_url, "-o", "via-http", "-q"],
        ),
        "decompress over http",
    );
    assert!(std::fs::read(d.join("via-http")).unwrap() == std::fs::read(&s.model).unwrap());
    let out = lmc_s3(
        d,
        &ep,
        3,
        &["compress", model, "-o", &format!("{ep}/{}/x.lmc", s.bucket)],
    );
    assert!(
        common::text(&out.stderr).contains("read only"),
        "{}",
        common::text(&out.stderr)
    );

    // A directory: up, and back (it is downloaded whole to be restored).
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::copy(&s.model, tree.join("sub/model.safetensors")).unwrap();
    std::fs::write(tree.join("config.json"), "{}").unwrap();
    let tree_url = format!("s3://{}/tree.lmc", s.bucket);
    ok(
        lmc_s3(d, &ep, 3, &["compress", "tree", "-o", &tree_url, "-q"]),
        "compress a directory to S3",
    );
    ok(
        lmc_s3(d, &ep, 3, &["decompress", &tree_url, "-o", "tree2", "-q"]),
        "restore a directory from S3",
    );
    assert!(
        std::fs::read(d.join("tree2/sub/model.safetensors")).unwrap()
            == std::fs::read(&s.model).unwrap()
    );
    assert_eq!(std::fs::read(d.join("tree2/config.json")).unwrap(), b"{}");

    // A key that is not there: an error that names it.
    let missing = format!("s3://{}/no/such.lmc", s.bucket);
    let out = lmc_s3(d, &ep, 3, &["info", &missing]);
    assert!(!out.status.success());
    assert!(
        common::text(&out.stderr).contains(&missing),
        "{}",
        common::text(&out.stderr)
    );
}

#[test]
fn reading_one_tensor_transfers_a_small_part_of_the_container() {
    let Some(s) = setup("lazy") else { return };
    let ep = s.proxy.endpoint();
    let url = format!("s3://{}/model.lmc", s.bucket);
    put(&url, &format!("http://{}", s.server), &s.container);
    let local = Container::open(&s.container).unwrap();
    // A weight matrix of one layer (384 x 1536 floats, 2.4 MB of 90).
    let name = "encoder.layer.3.intermediate.dense.weight";
    assert!(
        local
            .segments()
            .iter()
            .any(|g| matches!(&g.kind, SegmentKind::Tensor { name: n, .. } if n == name))
    );

    s.proxy.reset_counts();
    let t = Instant::now();
    let object = lmc_remote::Object::at(location(&url, &ep)).unwrap();
    let c = Container::open_from(&object).unwrap();
    let got = c.read_tensor_from(&object, name).unwrap();
    let one = t.elapsed().as_secs_f64();
    let moved = s.proxy.bytes();
    assert_eq!(got, local.read_tensor(name).unwrap());

    s.proxy.reset_counts();
    let t = Instant::now();
    let mut whole = Vec::new();
    object.copy_to(&mut whole).unwrap();
    let all = t.elapsed().as_secs_f64();
    let moved_all = s.proxy.bytes();
    eprintln!(
        "one tensor ({} bytes decoded): {moved} bytes transferred ({:.2}% of the {}-byte container) in {:.3} s; \
         the whole object: {moved_all} bytes in {:.3} s",
        got.len(),
        100.0 * moved as f64 / s.container.len() as f64,
        s.container.len(),
        one,
        all
    );
    assert!(moved_all >= s.container.len() as u64);
    assert!(
        (moved as f64) < 0.05 * s.container.len() as f64,
        "reading one tensor moved {moved} bytes of a {}-byte container",
        s.container.len()
    );
}

#[test]
fn a_connection_dropped_mid_upload_leaves_no_object() {
    let Some(s) = setup("drop") else { return };
    let url = format!("s3://{}/model.lmc", s.bucket);
    // The network goes away once a quarter of the container has gone up.
    s.proxy.set(Fault::DieAfter(s.container.len() as u64 / 4));
    let out = lmc_s3(
        s.dir.path(),
        &s.proxy.endpoint(),
        2,
        &["compress", s.model.to_str().unwrap(), "-o", &url, "-q"],
    );
    assert!(!out.status.success(), "the upload cannot have succeeded");
    let err = common::text(&out.stderr);
    eprintln!("upload cut: {err}");
    assert!(err.contains(&url), "the error names the URL: {err}");
    assert!(s.proxy.state.dead.load(Ordering::SeqCst), "the fault fired");
    // Asked of the server directly: nothing under the key.
    let direct = location(&url, &format!("http://{}", s.server));
    assert!(!direct.exists().unwrap(), "a partial upload became visible");
}

#[test]
fn throttling_is_retried() {
    let Some(s) = setup("throttle") else { return };
    let ep = s.proxy.endpoint();
    let d = s.dir.path();
    let url = format!("s3://{}/model.lmc", s.bucket);
    // Uploads: the first requests (starting the upload, parts) get 503s.
    s.proxy.set(Fault::Answer503(3));
    ok(
        lmc_s3(
            d,
            &ep,
            5,
            &["compress", s.model.to_str().unwrap(), "-o", &url, "-q"],
        ),
        "compress through 503s",
    );
    assert_eq!(s.proxy.state.served_503.load(Ordering::SeqCst), 3);
    // Reads: the lookup, the index and chunk ranges.
    s.proxy.set(Fault::Answer503(3));
    ok(
        lmc_s3(d, &ep, 5, &["decompress", &url, "-o", "out", "-q"]),
        "decompress through 503s",
    );
    assert_eq!(s.proxy.state.served_503.load(Ordering::SeqCst), 6);
    assert!(std::fs::read(d.join("out")).unwrap() == std::fs::read(&s.model).unwrap());
    // More 503s than retries: an error naming the URL, no output.
    s.proxy.set(Fault::Answer503(100));
    let out = lmc_s3(d, &ep, 1, &["decompress", &url, "-o", "out2", "-q"]);
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    eprintln!("too many 503s: {err}");
    assert!(err.contains(&url), "{err}");
    assert!(!d.join("out2").exists());
}

#[test]
fn a_truncated_ranged_answer_is_refused() {
    let Some(s) = setup("truncate") else { return };
    let ep = s.proxy.endpoint();
    let d = s.dir.path();
    let url = format!("s3://{}/model.lmc", s.bucket);
    put(&url, &format!("http://{}", s.server), &s.container);
    // The header cut short; the index; a chunk's range (after the header
    // and index came whole).
    for (skip, args) in [
        (0, vec!["decompress", url.as_str(), "-o", "out", "-q"]),
        (1, vec!["info", url.as_str()]),
        (2, vec!["verify", url.as_str(), "-q"]),
        (3, vec!["decompress", url.as_str(), "-o", "out", "-q"]),
        (3, vec!["verify", url.as_str(), "-q"]),
    ] {
        s.proxy.set(Fault::TruncateRanges { skip });
        let before = s.proxy.state.truncated.load(Ordering::SeqCst);
        let out = lmc_s3(d, &ep, 1, &args);
        assert!(
            !out.status.success(),
            "{args:?} accepted a truncated answer"
        );
        let err = common::text(&out.stderr);
        eprintln!("{args:?} on a truncated answer: {err}");
        assert!(err.contains(&url), "{args:?}: {err}");
        assert!(err.contains("truncated answer, refused"), "{args:?}: {err}");
        assert!(
            s.proxy.state.truncated.load(Ordering::SeqCst) > before,
            "the fault fired"
        );
    }
    assert!(!d.join("out").exists(), "no partial output");
}

/// `file://` URLs and malformed ones need no server.
#[test]
fn file_urls_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = common::golden("runs/base.safetensors");
    let lmc_url = format!("file://{}/m.lmc", d.display());
    let out_url = format!("file://{}/m.safetensors", d.display());
    common::ok(
        d,
        &["compress", model.to_str().unwrap(), "-o", &lmc_url, "-q"],
    );
    common::ok(d, &["verify", &lmc_url, "-q"]);
    common::ok(d, &["decompress", &lmc_url, "-o", &out_url, "-q"]);
    assert_eq!(
        std::fs::read(d.join("m.safetensors")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    for (url, says) in [
        ("foo://x/y", "unknown scheme foo://"),
        ("s3://bucket", "names no object"),
        ("file://host/x.lmc", "file:///abs/path"),
    ] {
        let out = common::lmc(d, &["info", url]);
        assert!(!out.status.success());
        let err = common::text(&out.stderr);
        assert!(err.contains(url) && err.contains(says), "{url}: {err}");
    }
}
