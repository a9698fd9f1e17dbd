//! A real registry for the pull tests: Debian's `docker-registry`
//! (distribution 2.8) on 127.0.0.1, filled by `skopeo copy` from the
//! fixture images (never hand-written blobs), and `FaultProxy`, a small
//! HTTP proxy in front of it that breaks layer downloads or manifests on
//! purpose and records what it served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::{fs, thread};

use super::{copy_tree, fixtures, free_port, path_str, sha256_hex, tool};

/// How long a registry may take to answer `GET /v2/` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket timeouts of the proxy and of `http_get`: nothing waits forever.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Blobs up to this size (the image config, hello's small image layer) pass
/// the proxy untouched; faults hit only bigger ones (the busybox layer).
pub const FAULT_MIN_BLOB: u64 = 4 * 1024;
/// The body size of a `Fault::HugeManifest` answer.
pub const HUGE_MANIFEST_SIZE: usize = 5 * 1024 * 1024;

/// A `docker-registry serve` child process with its config and storage in a
/// temporary directory. Killed (by its pid) when dropped.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    /// `user:pass` when started with an htpasswd file.
    creds: Option<String>,
}

impl Registry {
    /// A registry without authentication.
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// A registry that requires `user`/`pass` (HTTP basic auth, htpasswd
    /// file made by `htpasswd -Bbn`).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::start_inner(Some((user, pass)))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("socle-registry-")
            .tempdir()
            .expect("creating a temp dir");
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            let entry = tool(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let file = dir.path().join("htpasswd");
            fs::write(&file, entry).unwrap();
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: socle-test\n    path: {}\n",
                file.display()
            );
        }
        // Another process may take the free port before the registry binds
        // it: then the registry exits, and we try another port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n\
                     {auth_yaml}",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("running /usr/bin/docker-registry (package docker-registry)");
            match wait_ready(&mut child, &addr) {
                Ok(()) => {
                    return Registry {
                        child,
                        dir,
                        addr,
                        creds: auth.map(|(u, p)| format!("{u}:{p}")),
                    }
                }
                Err(e) => {
                    // Child::kill signals exactly the pid we started.
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!("{addr}: {e}\n{log}"));
                }
            }
        }
        panic!("docker-registry did not start:\n{}", failures.join("\n"));
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `user:pass` of a registry started with an htpasswd file.
    pub fn creds(&self) -> Option<&str> {
        self.creds.as_deref()
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `skopeo copy SOURCE docker://ADDR/REPO_TAG` (e.g. SOURCE
    /// `oci-archive:/path/hello.tar`, REPO_TAG `hello:1`); returns the
    /// digest of the manifest skopeo wrote.
    pub fn push(&self, source: &str, repo_tag: &str) -> String {
        self.push_with(&[], source, repo_tag)
    }

    /// `push` of an image index with all its images (`skopeo copy --all`);
    /// returns the digest of the index.
    pub fn push_all(&self, source: &str, repo_tag: &str) -> String {
        self.push_with(&["--all"], source, repo_tag)
    }

    /// `push` with extra `skopeo copy` options.
    pub fn push_with(&self, options: &[&str], source: &str, repo_tag: &str) -> String {
        let digest_file = tempfile::NamedTempFile::new().unwrap();
        let mut args: Vec<String> = vec![
            "copy".into(),
            "--quiet".into(),
            "--dest-tls-verify=false".into(),
            "--digestfile".into(),
            path_str(digest_file.path()),
        ];
        if let Some(c) = &self.creds {
            args.push("--dest-creds".into());
            args.push(c.clone());
        }
        args.extend(options.iter().map(|o| o.to_string()));
        args.push(source.to_string());
        args.push(format!("docker://{}/{repo_tag}", self.addr));
        let out = skopeo(&args);
        assert!(
            out.status.success(),
            "skopeo {} failed:\n{}\nregistry log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let digest = fs::read_to_string(digest_file.path()).unwrap();
        digest.trim().to_string()
    }

    /// The manifest (or index) of `REPO:TAG` as the registry serves it,
    /// fetched by `skopeo inspect --raw`.
    pub fn manifest(&self, repo_tag: &str) -> serde_json::Value {
        let raw = skopeo_inspect_raw(&self.addr, repo_tag, self.creds())
            .unwrap_or_else(|e| panic!("skopeo inspect {repo_tag}: {e}"));
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("manifest of {repo_tag}: {e}"))
    }

    /// The layer digests of the image manifest of `REPO:TAG`.
    pub fn layers(&self, repo_tag: &str) -> Vec<String> {
        manifest_layers(&self.manifest(repo_tag))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill signals exactly the pid we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most START_TIMEOUT) until `GET /v2/` on `addr` answers 200 or
/// 401, or `child` exits.
fn wait_ready(child: &mut Child, addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("docker-registry exited ({status})"));
        }
        match http_get(addr, "/v2/", &[]) {
            Ok(r) if r.status == 200 || r.status == 401 => return Ok(()),
            Ok(r) => last = format!("GET /v2/ answered {}", r.status),
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not ready after {START_TIMEOUT:?}: {last}"))
}

/// The layer digests listed by an image manifest.
pub fn manifest_layers(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("not an image manifest: {manifest:#}"))
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Runs skopeo with `args` (no stdin), returns its output.
pub fn skopeo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo")
}

/// `skopeo inspect --raw docker://HOST/REPO_TAG` over plain HTTP: the
/// manifest bytes, or skopeo's error.
pub fn skopeo_inspect_raw(
    host: &str,
    repo_tag: &str,
    creds: Option<&str>,
) -> Result<String, String> {
    let mut args = vec![
        "inspect".to_string(),
        "--raw".into(),
        "--tls-verify=false".into(),
    ];
    if let Some(c) = creds {
        args.push("--creds".into());
        args.push(c.into());
    }
    args.push(format!("docker://{host}/{repo_tag}"));
    let out = skopeo(&args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// An OCI layout holding an image index (ref `multi`) that lists only a
/// linux/arm64 and a linux/s390x image: hello 1 with its config's
/// architecture changed by `umoci config` (same layers). Push it with
/// `Registry::push_all(&layout.reference(), ...)`.
pub struct PlatformIndex {
    pub layout: PathBuf,
    /// Manifest digests of the two images.
    pub arm64: String,
    pub s390x: String,
}

impl PlatformIndex {
    /// Builds it in `dir/layout`.
    pub fn build(dir: &Path) -> PlatformIndex {
        let layout = dir.join("layout");
        copy_tree(&fixtures().oci_dir, &layout);
        for arch in ["arm64", "s390x"] {
            tool(
                Command::new("umoci")
                    .arg("config")
                    .arg("--image")
                    .arg(format!("{}:1", layout.display()))
                    .args(["--tag", arch, "--architecture", arch, "--os", "linux"])
                    .arg("--no-history"),
            );
        }
        let index_path = layout.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&index_path).unwrap()).unwrap();
        let descriptor = |tag: &str| -> serde_json::Value {
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .unwrap_or_else(|| panic!("no {tag} in {index:#}"))
                .clone()
        };
        let platform_entry = |tag: &str| {
            let d = descriptor(tag);
            serde_json::json!({
                "mediaType": d["mediaType"],
                "digest": d["digest"],
                "size": d["size"],
                "platform": {"architecture": tag, "os": "linux"},
            })
        };
        let nested = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [platform_entry("arm64"), platform_entry("s390x")],
        });
        let bytes = serde_json::to_vec(&nested).unwrap();
        let hex = sha256_hex(&bytes);
        fs::write(layout.join("blobs/sha256").join(&hex), &bytes).unwrap();
        let arm64 = descriptor("arm64")["digest"].as_str().unwrap().to_string();
        let s390x = descriptor("s390x")["digest"].as_str().unwrap().to_string();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }));
        fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        PlatformIndex {
            layout,
            arm64,
            s390x,
        }
    }

    /// The skopeo source of the index: `oci:DIR:multi`.
    pub fn reference(&self) -> String {
        format!("oci:{}:multi", self.layout.display())
    }
}

// ---- the fault-injecting proxy --------------------------------------------------

/// What `FaultProxy` breaks. Blob faults hit only `GET .../blobs/sha256:...`
/// answers (200 or 206) of blobs over FAULT_MIN_BLOB bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged (to count what is downloaded).
    None,
    /// Flip a byte in the middle of the body; the length stays.
    CorruptBlob,
    /// Flip a bit of the gzip header's MTIME (byte 4) of a whole-blob
    /// answer: the blob still decompresses to the same tar, only its
    /// digest is wrong.
    CorruptGzipHeader,
    /// Send the full Content-Length header but never a byte past the
    /// middle of the blob, then close; every time, Range requests included.
    Truncate,
    /// The first blob answer stops after half the body and the connection
    /// is closed; everything later (Range requests too) is forwarded.
    DropOnce,
    /// Manifest GETs (and HEADs) answer 200 with a valid-looking OCI
    /// manifest of HUGE_MANIFEST_SIZE bytes.
    HugeManifest,
}

/// One request the proxy answered.
#[derive(Clone, Debug)]
pub struct Served {
    pub method: String,
    pub path: String,
    /// The request's `Range` header.
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes written to the client.
    pub body_bytes: u64,
    /// Whether the fault was applied to this answer.
    pub faulted: bool,
}

impl Served {
    /// `sha256:...` when this is a blob request.
    pub fn blob_digest(&self) -> Option<&str> {
        self.path.split_once("/blobs/").map(|(_, d)| d)
    }

    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.blob_digest().is_some()
    }

    /// N of a `Range: bytes=N-...` header.
    pub fn range_start(&self) -> Option<u64> {
        let r = self.range.as_deref()?.trim().strip_prefix("bytes=")?;
        r.split('-').next()?.trim().parse().ok()
    }
}

struct ProxyState {
    upstream: String,
    fault: Fault,
    dropped: AtomicBool,
    active: AtomicUsize,
    log: Mutex<Vec<Served>>,
    huge: OnceLock<(Vec<u8>, String)>,
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of a registry (one request per
/// connection, answered with `Connection: close`), applying a `Fault`.
pub struct FaultProxy {
    addr: String,
    state: Arc<ProxyState>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            fault,
            dropped: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            huge: OnceLock::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    state.active.fetch_add(1, Ordering::SeqCst);
                    let state = state.clone();
                    thread::spawn(move || {
                        let _ = handle(&state, conn);
                        state.active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        FaultProxy {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Waits (at most 10 s) until no connection is being served, so the
    /// log is complete once the client has exited.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every request answered so far, in order of completion.
    pub fn requests(&self) -> Vec<Served> {
        self.settle();
        self.state.log.lock().unwrap().clone()
    }

    /// Forgets the requests answered so far.
    pub fn clear(&self) {
        self.settle();
        self.state.log.lock().unwrap().clear();
    }

    /// The blob GETs (`/v2/.../blobs/sha256:...`).
    pub fn blob_gets(&self) -> Vec<Served> {
        self.requests()
            .into_iter()
            .filter(Served::is_blob_get)
            .collect()
    }

    /// The requests with a `Range` header.
    pub fn range_requests(&self) -> Vec<Served> {
        self.requests()
            .into_iter()
            .filter(|r| r.range.is_some())
            .collect()
    }

    /// Body bytes of blob GETs sent to the client.
    pub fn blob_bytes(&self) -> u64 {
        self.blob_gets().iter().map(|r| r.body_bytes).sum()
    }

    /// Body bytes sent to the client for blob `digest`.
    pub fn blob_bytes_of(&self, digest: &str) -> u64 {
        self.blob_gets()
            .iter()
            .filter(|r| r.blob_digest() == Some(digest))
            .map(|r| r.body_bytes)
            .sum()
    }

    /// A one-line-per-request summary, for assertion messages.
    pub fn summary(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {}{} -> {} ({} bytes{})",
                    r.method,
                    r.path,
                    r.range
                        .as_deref()
                        .map(|x| format!(" [Range: {x}]"))
                        .unwrap_or_default(),
                    r.status,
                    r.body_bytes,
                    if r.faulted { ", faulted" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr.parse().unwrap(), Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A parsed HTTP message head.
struct Head {
    /// Request line or status line.
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head with `Connection: close` instead of any connection header.
    fn to_bytes_closing(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            if ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h))
            {
                continue;
            }
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Head { first, headers })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Reads a message head (and what came after it) from `conn`.
fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let head = parse_head(&buf[..end]);
            return Ok(head.map(|h| (h, buf[end + 4..].to_vec())));
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn handle(state: &ProxyState, mut client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some((req, mut body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let mut parts = req.first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let want: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < want {
        let mut chunk = vec![0u8; want - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut served = Served {
        method: method.clone(),
        path: path.clone(),
        range: req.header("range").map(str::to_string),
        status: 0,
        body_bytes: 0,
        faulted: false,
    };

    let is_manifest = path.contains("/manifests/") && (method == "GET" || method == "HEAD");
    if state.fault == Fault::HugeManifest && is_manifest {
        let (huge, digest) = state.huge.get_or_init(huge_manifest);
        let head = format!(
            "HTTP/1.1 200 OK\r\n\
             Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Content-Length: {}\r\n\
             Docker-Content-Digest: {digest}\r\n\
             Docker-Distribution-Api-Version: registry/2.0\r\n\
             Connection: close\r\n\r\n",
            huge.len()
        );
        served.status = 200;
        served.faulted = true;
        let result = (|| {
            client.write_all(head.as_bytes())?;
            if method == "GET" {
                write_counted(&mut client, huge, &mut served.body_bytes)?;
            }
            client.flush()
        })();
        state.log.lock().unwrap().push(served);
        let _ = client.shutdown(Shutdown::Both);
        return result;
    }

    // Forward the request, read the whole answer (the upstream closes).
    let mut upstream = TcpStream::connect_timeout(&state.upstream.parse().unwrap(), IO_TIMEOUT)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    upstream.write_all(&req.to_bytes_closing())?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let Some(end) = find_head_end(&answer) else {
        return Ok(());
    };
    let Some(resp) = parse_head(&answer[..end]) else {
        return Ok(());
    };
    let mut resp_body = answer[end + 4..].to_vec();
    served.status = resp
        .first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);

    // The size of the whole blob: from Content-Range (206) or the body.
    let (blob_start, blob_size) = match resp.header("content-range") {
        Some(cr) => parse_content_range(cr).unwrap_or((0, resp_body.len() as u64)),
        None => (0, resp_body.len() as u64),
    };
    let faultable = served.is_blob_get()
        && (served.status == 200 || served.status == 206)
        && resp.header("transfer-encoding").is_none()
        && blob_size > FAULT_MIN_BLOB;
    // How much of the body to send before closing.
    let mut send = resp_body.len();
    if faultable {
        match state.fault {
            Fault::CorruptBlob => {
                let mid = resp_body.len() / 2;
                resp_body[mid] ^= 0xff;
                served.faulted = true;
            }
            Fault::CorruptGzipHeader => {
                if blob_start == 0 && resp_body.starts_with(&[0x1f, 0x8b]) {
                    resp_body[4] ^= 0x01;
                    served.faulted = true;
                }
            }
            Fault::Truncate => {
                let cut = (blob_size / 2).saturating_sub(blob_start) as usize;
                send = cut.min(resp_body.len());
                served.faulted = true;
            }
            Fault::DropOnce => {
                if !state.dropped.swap(true, Ordering::SeqCst) {
                    send = resp_body.len() / 2;
                    served.faulted = true;
                }
            }
            Fault::None | Fault::HugeManifest => {}
        }
    }
    let result = (|| {
        client.write_all(&resp.to_bytes_closing())?;
        write_counted(&mut client, &resp_body[..send], &mut served.body_bytes)?;
        client.flush()
    })();
    state.log.lock().unwrap().push(served);
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// Writes `data` in chunks, counting what was written (the client may hang
/// up early).
fn write_counted(conn: &mut TcpStream, data: &[u8], count: &mut u64) -> std::io::Result<()> {
    for chunk in data.chunks(64 * 1024) {
        conn.write_all(chunk)?;
        *count += chunk.len() as u64;
    }
    Ok(())
}

/// (start, total) of `Content-Range: bytes START-END/TOTAL`.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let r = v.trim().strip_prefix("bytes ")?;
    let (range, total) = r.split_once('/')?;
    let start = range.split('-').next()?.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()?))
}

/// A syntactically valid OCI manifest of exactly HUGE_MANIFEST_SIZE bytes
/// (padded with an annotation), and its digest.
fn huge_manifest() -> (Vec<u8>, String) {
    let prefix = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\
         \"digest\":\"sha256:{}\",\"size\":2}},\"layers\":[],\
         \"annotations\":{{\"padding\":\"",
        "0".repeat(64)
    );
    let suffix = "\"}}";
    let pad = HUGE_MANIFEST_SIZE - prefix.len() - suffix.len();
    let mut body = prefix.into_bytes();
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(suffix.as_bytes());
    assert_eq!(body.len(), HUGE_MANIFEST_SIZE);
    let digest = format!("sha256:{}", sha256_hex(&body));
    (body, digest)
}

// ---- a minimal HTTP client (for readiness checks and harness tests) ----------

/// An HTTP answer read to the end of the connection.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET PATH` on `addr` with extra headers (`Connection: close`), reading
/// until the server closes (at most IO_TIMEOUT per read). A connection
/// closed before the Content-Length is reached is not an error: the body is
/// what arrived.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<HttpAnswer, String> {
    let sock = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut conn = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let end = find_head_end(&answer).ok_or_else(|| format!("{addr}: no HTTP answer"))?;
    let head = parse_head(&answer[..end]).ok_or_else(|| format!("{addr}: bad HTTP head"))?;
    let status = head
        .first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: bad status line {:?}", head.first))?;
    Ok(HttpAnswer {
        status,
        headers: head.headers,
        body: answer[end + 4..].to_vec(),
    })
}
