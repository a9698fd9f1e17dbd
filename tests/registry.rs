//! Tier 2: pulls from a real registry (Debian docker-registry on 127.0.0.1),
//! filled by skopeo from the fixture images, with a fault-injecting proxy
//! in front of it for the failure cases (common::registry).
//!
//! The `harness_*` tests prove the harness itself with independent tools
//! (skopeo, raw HTTP); the others run `socle pull docker://...`.

mod common;

use std::fs;
use std::path::PathBuf;

use common::registry::{
    http_get, manifest_layers, skopeo_inspect_raw, Fault, FaultProxy, PlatformIndex, Registry,
    FAULT_MIN_BLOB, HUGE_MANIFEST_SIZE,
};
use common::{fixtures, free_port, oci_archive, path_str, sha256_hex, Socle};
use serde_json::{json, Value};

const USER: &str = "socle";
const PASS: &str = "s3cret-pass";

// ---- helpers ------------------------------------------------------------------

/// A fresh, empty store whose commands see no credentials of the machine:
/// HOME is a directory of the environment, and the auth-file variables are
/// unset.
fn socle() -> Socle {
    let s = Socle::new();
    let home = s.root().join("home");
    fs::create_dir_all(&home).unwrap();
    let s = s
        .with_env("HOME", &path_str(&home))
        .without_env("REGISTRY_AUTH_FILE")
        .without_env("DOCKER_CONFIG")
        .without_env("XDG_RUNTIME_DIR");
    assert_eq!(s.json(&["images", "list"]), json!([]));
    s
}

fn home(s: &Socle) -> PathBuf {
    s.root().join("home")
}

/// A registry holding hello 1 as `hello:1`.
fn hello_registry() -> Registry {
    let reg = Registry::start();
    let digest = reg.push(&oci_archive(&fixtures().oci_archive), "hello:1");
    assert_eq!(digest, fixtures().v1_digest, "skopeo changed the manifest");
    reg
}

/// A registry requiring USER/PASS, holding hello 1 as `hello:1`.
fn hello_registry_with_auth() -> Registry {
    let reg = Registry::start_with_htpasswd(USER, PASS);
    let digest = reg.push(&oci_archive(&fixtures().oci_archive), "hello:1");
    assert_eq!(digest, fixtures().v1_digest, "skopeo changed the manifest");
    reg
}

/// `socle --json pull --tls-verify=false ARGS...`: the last JSON line.
fn pull(s: &Socle, args: &[&str]) -> Value {
    let mut all = vec!["pull", "--tls-verify=false"];
    all.extend_from_slice(args);
    s.json(&all)
}

/// The rows of `socle images list --json`.
fn image_rows(s: &Socle) -> Vec<Value> {
    s.json(&["images", "list"])
        .as_array()
        .expect("images list --json is an array")
        .clone()
}

fn image_names(s: &Socle) -> Vec<String> {
    let mut names: Vec<String> = image_rows(s)
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Runs `socle pull --tls-verify=false ARGS...`, expects exit code 1 and a
/// one-line error containing every one of `needles`, and a store exactly as
/// it was (files and image list). Returns the error line.
fn pull_fails(s: &Socle, args: &[&str], needles: &[&str]) -> String {
    let before = s.snapshot();
    let rows = image_rows(s);
    let mut all = vec!["pull", "--tls-verify=false"];
    all.extend_from_slice(args);
    let err = s.fails(&all);
    for needle in needles {
        assert!(
            err.contains(needle),
            "the error should contain {needle:?}: {err}"
        );
    }
    s.assert_unchanged(&before);
    assert_eq!(image_rows(s), rows, "the image list changed");
    err
}

/// Checks the `pulled` event of hello 1 from `host` (`hello:1`).
fn assert_pulled_hello1(report: &Value, host: &str) {
    assert_eq!(report["event"], "pulled", "{report:#}");
    let image = &report["image"];
    assert_eq!(image["id"], fixtures().v1_digest.as_str(), "{report:#}");
    assert_eq!(
        image["name"]["repository"],
        format!("{host}/hello"),
        "{report:#}"
    );
    assert_eq!(image["name"]["tag"], "1", "{report:#}");
    assert_eq!(
        image["source"],
        format!("docker://{host}/hello:1"),
        "{report:#}"
    );
    assert_eq!(
        image["layers"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
}

/// The layers of `manifest` bigger than FAULT_MIN_BLOB (the ones the
/// proxy's blob faults hit): (digest, size).
fn big_layers(manifest: &Value) -> Vec<(String, u64)> {
    let big: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .filter(|(_, size)| *size > FAULT_MIN_BLOB)
        .collect();
    assert!(
        !big.is_empty(),
        "no layer over {FAULT_MIN_BLOB} bytes: {manifest:#}"
    );
    big
}

/// Decompresses a gzip stream with the system's gzip (the test crate has
/// no gzip dependency of its own).
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

/// The Go name of this machine's architecture (what a pull selects by
/// default).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A containers auth.json (also the shape of ~/.docker/config.json)
/// holding `user:pass` for `host`.
fn auth_json(host: &str, user: &str, pass: &str) -> String {
    let auth = base64_encode(format!("{user}:{pass}").as_bytes());
    json!({"auths": {host: {"auth": auth}}}).to_string()
}

/// Standard base64 with padding (kept here: the test crate has no base64
/// dependency of its own).
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- the harness itself ---------------------------------------------------------

#[test]
fn harness_base64_matches_the_rfc_examples() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
        ("socle:s3cret-pass", "c29jbGU6czNjcmV0LXBhc3M="),
    ] {
        assert_eq!(base64_encode(plain.as_bytes()), encoded, "{plain:?}");
    }
}

#[test]
fn harness_registry_serves_the_pushed_fixture_also_through_the_proxy() {
    let reg = hello_registry();
    let manifest = reg.manifest("hello:1");
    assert_eq!(manifest_layers(&manifest).len(), 2, "{manifest:#}");

    let proxy = FaultProxy::start(reg.addr(), Fault::None);
    let raw = skopeo_inspect_raw(proxy.addr(), "hello:1", None)
        .unwrap_or_else(|e| panic!("skopeo inspect through the proxy: {e}"));
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        fixtures().v1_digest
    );
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/v2/hello/manifests/1" && r.status == 200),
        "{}",
        proxy.summary()
    );

    // A whole blob through the unfaulted proxy is intact and counted.
    let (layer, size) = big_layers(&manifest)[0].clone();
    let answer = http_get(proxy.addr(), &format!("/v2/hello/blobs/{layer}"), &[]).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&answer.body)), layer);
    assert_eq!(proxy.blob_bytes_of(&layer), size);
}

#[test]
fn harness_htpasswd_registry_requires_credentials() {
    let reg = hello_registry_with_auth();
    let answer = http_get(reg.addr(), "/v2/", &[]).unwrap();
    assert_eq!(answer.status, 401);
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    assert!(challenge.contains("socle-test"), "{challenge}");

    assert!(skopeo_inspect_raw(reg.addr(), "hello:1", None).is_err());
    assert!(skopeo_inspect_raw(reg.addr(), "hello:1", Some(&format!("{USER}:wrong"))).is_err());
    // reg.manifest() uses the right credentials.
    assert_eq!(manifest_layers(&reg.manifest("hello:1")).len(), 2);
}

#[test]
fn harness_proxy_breaks_only_big_blobs() {
    let reg = hello_registry();
    let manifest = reg.manifest("hello:1");
    let (layer, size) = big_layers(&manifest)[0].clone();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layer_path = format!("/v2/hello/blobs/{layer}");
    let config_path = format!("/v2/hello/blobs/{config}");
    let half = (size / 2) as usize;

    // CorruptBlob: same length, other digest; the config passes.
    let proxy = FaultProxy::start(reg.addr(), Fault::CorruptBlob);
    let a = http_get(proxy.addr(), &layer_path, &[]).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len() as u64, size);
    assert_ne!(format!("sha256:{}", sha256_hex(&a.body)), layer);
    let c = http_get(proxy.addr(), &config_path, &[]).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&c.body)), config);
    drop(proxy);

    // CorruptGzipHeader: same length, other digest, same tar inside.
    let proxy = FaultProxy::start(reg.addr(), Fault::CorruptGzipHeader);
    let a = http_get(proxy.addr(), &layer_path, &[]).unwrap();
    assert_eq!(a.body.len() as u64, size);
    assert_ne!(format!("sha256:{}", sha256_hex(&a.body)), layer);
    let intact = http_get(reg.addr(), &layer_path, &[]).unwrap();
    assert_eq!(gunzip(&a.body), gunzip(&intact.body));
    drop(proxy);

    // Truncate: the full Content-Length, never a byte past the middle.
    let proxy = FaultProxy::start(reg.addr(), Fault::Truncate);
    let a = http_get(proxy.addr(), &layer_path, &[]).unwrap();
    assert_eq!(a.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(a.body.len(), half);
    let r = http_get(proxy.addr(), &layer_path, &[("Range", "bytes=100-")]).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), half - 100);
    let r = http_get(
        proxy.addr(),
        &layer_path,
        &[("Range", &format!("bytes={half}-"))],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body.is_empty());
    let c = http_get(proxy.addr(), &config_path, &[]).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&c.body)), config);
    drop(proxy);

    // DropOnce: half, then a Range request resumes to the right blob.
    let proxy = FaultProxy::start(reg.addr(), Fault::DropOnce);
    let first = http_get(proxy.addr(), &layer_path, &[]).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body.len(), half);
    let range = format!("bytes={}-", first.body.len());
    let rest = http_get(proxy.addr(), &layer_path, &[("Range", &range)]).unwrap();
    assert_eq!(rest.status, 206);
    let mut whole = first.body.clone();
    whole.extend_from_slice(&rest.body);
    assert_eq!(format!("sha256:{}", sha256_hex(&whole)), layer);
    let again = http_get(proxy.addr(), &layer_path, &[]).unwrap();
    assert_eq!(again.body.len() as u64, size);
    let ranges = proxy.range_requests();
    assert_eq!(ranges.len(), 1, "{}", proxy.summary());
    assert_eq!(ranges[0].range_start(), Some(half as u64));
    assert_eq!(ranges[0].status, 206);
    assert_eq!(proxy.blob_bytes_of(&layer), 2 * size);
}

#[test]
fn harness_huge_manifest_is_refused_by_skopeo() {
    let reg = hello_registry();
    let proxy = FaultProxy::start(reg.addr(), Fault::HugeManifest);
    let a = http_get(proxy.addr(), "/v2/hello/manifests/1", &[]).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), HUGE_MANIFEST_SIZE);
    let v: Value = serde_json::from_slice(&a.body).expect("the huge manifest is JSON");
    assert_eq!(v["schemaVersion"], 2);
    let err = skopeo_inspect_raw(proxy.addr(), "hello:1", None)
        .expect_err("skopeo should refuse a 5 MiB manifest");
    assert!(!err.is_empty());
}

#[test]
fn harness_platform_index_is_pushed_by_skopeo() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = PlatformIndex::build(dir.path());
    reg.push_all(&index.reference(), "hello:multi");
    let served = reg.manifest("hello:multi");
    assert_eq!(
        served["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{served:#}"
    );
    let entries: Vec<(String, String)> = served["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("arm64".to_string(), index.arm64.clone()),
            ("s390x".to_string(), index.s390x.clone())
        ]
    );
    let arm64 = reg.manifest(&format!("hello@{}", index.arm64));
    assert_eq!(manifest_layers(&arm64).len(), 2);
}

// ---- pull: the happy paths --------------------------------------------------------

#[test]
fn pull_docker_reference_stores_the_image() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    let report = pull(&s, &[&format!("docker://{host}/hello:1")]);
    assert_pulled_hello1(&report, host);
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    assert_eq!(report["layers_present"], 0, "{report:#}");
    assert!(report["bytes_imported"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["seconds"].is_number(), "{report:#}");

    let rows = image_rows(&s);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["name"], format!("{host}/hello:1"), "{rows:#?}");
    assert_eq!(rows[0]["repository"], format!("{host}/hello"), "{rows:#?}");
    assert_eq!(rows[0]["tag"], "1", "{rows:#?}");
    assert_eq!(rows[0]["id"], fixtures().v1_digest.as_str(), "{rows:#?}");
    assert!(rows[0]["size"].as_u64().unwrap() > 0, "{rows:#?}");
}

#[test]
fn pull_without_transport_defaults_to_docker() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    let report = pull(&s, &["--jobs", "1", &format!("{host}/hello:1")]);
    assert_pulled_hello1(&report, host);
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    assert_eq!(image_names(&s), [format!("{host}/hello:1")]);
}

#[test]
fn pull_json_lines_are_events() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    let image = format!("docker://{host}/hello:1");
    let out = s.ok(&["--json", "pull", "--tls-verify=false", &image]);
    let events: Vec<Value> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not one JSON value per line ({e}): {l:?}\n{out}"))
        })
        .collect();
    for e in &events {
        assert!(e["event"].is_string(), "no event field: {e}\n{out}");
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"pulled"), "{out}");
    assert_eq!(kinds.iter().filter(|k| **k == "pulled").count(), 1, "{out}");
    assert!(kinds.contains(&"resolved"), "{out}");
    for layer in reg.layers("hello:1") {
        assert!(
            events.iter().any(|e| e["event"] == "layer"
                && e["digest"] == layer.as_str()
                && e["status"] == "done"),
            "no `layer` event with status done for {layer}:\n{out}"
        );
    }
    assert_pulled_hello1(events.last().unwrap(), host);
}

#[test]
fn pulled_image_installs() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    let image = format!("{host}/hello:1");
    pull(&s, &[&image]);
    s.ok(&["install", "--name", "h", &image]);
    let rootfs = s.slot("h", 0).join("rootfs");
    assert!(rootfs.join("usr/bin/hello-greeter").is_file());
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(s.slot("h", 0).join("config.json").is_file());
    assert!(s.units().join("h.service").is_file());
    let list = s.json(&["list", "--all"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list:#}");
    assert_eq!(rows[0]["name"], "h", "{list:#}");
    assert_eq!(rows[0]["image"], image.as_str(), "{list:#}");
}

#[test]
fn pull_v2_after_v1_downloads_only_the_new_layer() {
    let reg = hello_registry();
    let f = fixtures();
    assert_eq!(
        reg.push(&oci_archive(&f.v2_archive), "hello:2"),
        f.v2_digest
    );
    let v1_layers = reg.layers("hello:1");
    let v2_layers = reg.layers("hello:2");
    let shared: Vec<&String> = v2_layers.iter().filter(|l| v1_layers.contains(l)).collect();
    let own: Vec<&String> = v2_layers
        .iter()
        .filter(|l| !v1_layers.contains(l))
        .collect();
    assert!(
        !shared.is_empty() && !own.is_empty(),
        "{v1_layers:?} {v2_layers:?}"
    );

    let proxy = FaultProxy::start(reg.addr(), Fault::None);
    let s = socle();
    pull(&s, &[&format!("docker://{}/hello:1", proxy.addr())]);
    proxy.clear();
    let report = pull(&s, &[&format!("docker://{}/hello:2", proxy.addr())]);
    assert_eq!(report["image"]["id"], f.v2_digest.as_str(), "{report:#}");
    assert!(
        report["layers_present"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert_eq!(report["layers_present"], shared.len(), "{report:#}");
    assert_eq!(report["layers_imported"], own.len(), "{report:#}");
    for layer in &shared {
        assert_eq!(
            proxy.blob_bytes_of(layer),
            0,
            "the shared layer {layer} was downloaded again:\n{}",
            proxy.summary()
        );
    }
    for layer in &own {
        assert!(proxy.blob_bytes_of(layer) > 0, "{}", proxy.summary());
    }
    assert_eq!(
        image_names(&s),
        [
            format!("{}/hello:1", proxy.addr()),
            format!("{}/hello:2", proxy.addr())
        ]
    );
}

#[test]
fn pull_again_under_another_name_downloads_nothing() {
    let reg = hello_registry();
    let layers = reg.layers("hello:1");
    let proxy = FaultProxy::start(reg.addr(), Fault::None);
    let s = socle();
    let image = format!("docker://{}/hello:1", proxy.addr());
    pull(&s, &[&image]);
    proxy.clear();
    let report = pull(&s, &["--name", "other:7", &image]);
    assert_eq!(report["layers_imported"], 0, "{report:#}");
    assert_eq!(report["layers_present"], 2, "{report:#}");
    assert_eq!(report["bytes_imported"], 0, "{report:#}");
    assert_eq!(
        report["image"]["id"],
        fixtures().v1_digest.as_str(),
        "{report:#}"
    );
    assert_eq!(report["image"]["name"]["repository"], "other", "{report:#}");
    assert_eq!(report["image"]["name"]["tag"], "7", "{report:#}");
    for layer in &layers {
        assert_eq!(proxy.blob_bytes_of(layer), 0, "{}", proxy.summary());
    }
    let rows = image_rows(&s);
    let mut names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    let first = format!("{}/hello:1", proxy.addr());
    let mut want = vec![first.as_str(), "other:7"];
    want.sort();
    assert_eq!(names, want, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["id"], fixtures().v1_digest.as_str(), "{rows:#?}");
    }
}

#[test]
fn pull_dropped_connection_resumes_with_a_range_request() {
    let reg = hello_registry();
    let manifest = reg.manifest("hello:1");
    let (layer, size) = big_layers(&manifest)[0].clone();
    let proxy = FaultProxy::start(reg.addr(), Fault::DropOnce);
    let s = socle();
    let report = pull(&s, &[&format!("docker://{}/hello:1", proxy.addr())]);
    let summary = proxy.summary();
    assert_eq!(
        report["image"]["id"],
        fixtures().v1_digest.as_str(),
        "{report:#}"
    );
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    let gets: Vec<_> = proxy
        .blob_gets()
        .into_iter()
        .filter(|r| r.blob_digest() == Some(layer.as_str()))
        .collect();
    assert!(
        gets.iter().any(|r| r.faulted),
        "the drop did not happen:\n{summary}"
    );
    assert!(
        gets.iter()
            .any(|r| r.status == 206 && r.range_start().is_some_and(|n| n > 0)),
        "no resuming Range request (bytes=N- with N > 0) answered 206:\n{summary}"
    );
    // Resumed, not started over: well under 1.5 times the layer in total.
    let served = proxy.blob_bytes_of(&layer);
    assert!(
        served < size + size / 4,
        "{served} bytes served for a {size}-byte layer:\n{summary}"
    );
    assert_eq!(image_names(&s), [format!("{}/hello:1", proxy.addr())]);
}

#[test]
fn pull_with_platform_selects_that_manifest() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = PlatformIndex::build(dir.path());
    reg.push_all(&index.reference(), "hello:multi");
    let s = socle();
    let host = reg.addr();
    let report = pull(
        &s,
        &[
            "--platform",
            "linux/arm64",
            &format!("docker://{host}/hello:multi"),
        ],
    );
    // The id is the digest of the selected image manifest, not of the index.
    assert_eq!(report["image"]["id"], index.arm64.as_str(), "{report:#}");
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    assert_eq!(image_names(&s), [format!("{host}/hello:multi")]);
}

// ---- pull: authentication ---------------------------------------------------------

#[test]
fn pull_with_creds() {
    let reg = hello_registry_with_auth();
    let host = reg.addr();
    let s = socle();
    let report = pull(
        &s,
        &[
            "--creds",
            &format!("{USER}:{PASS}"),
            &format!("docker://{host}/hello:1"),
        ],
    );
    assert_pulled_hello1(&report, host);
}

#[test]
fn pull_with_an_auth_file() {
    let reg = hello_registry_with_auth();
    let host = reg.addr();
    let image = format!("docker://{host}/hello:1");

    // --authfile FILE
    let s = socle();
    let file = s.inputs().join("auth.json");
    fs::write(&file, auth_json(host, USER, PASS)).unwrap();
    let report = pull(&s, &["--authfile", &path_str(&file), &image]);
    assert_pulled_hello1(&report, host);

    // REGISTRY_AUTH_FILE=FILE
    let s = socle();
    let file = s.inputs().join("auth.json");
    fs::write(&file, auth_json(host, USER, PASS)).unwrap();
    let s = s.with_env("REGISTRY_AUTH_FILE", &path_str(&file));
    let report = pull(&s, &[&image]);
    assert_pulled_hello1(&report, host);
}

#[test]
fn pull_with_docker_config_in_home() {
    let reg = hello_registry_with_auth();
    let host = reg.addr();
    let s = socle();
    let docker = home(&s).join(".docker");
    fs::create_dir_all(&docker).unwrap();
    fs::write(docker.join("config.json"), auth_json(host, USER, PASS)).unwrap();
    let report = pull(&s, &[&format!("docker://{host}/hello:1")]);
    assert_pulled_hello1(&report, host);
}

// ---- pull: failures leave the store as it was --------------------------------------

#[test]
fn pull_unknown_tag_or_repository_fails() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    pull_fails(
        &s,
        &[&format!("docker://{host}/hello:nope")],
        &["not found", "hello:nope"],
    );
    pull_fails(
        &s,
        &[&format!("docker://{host}/nosuch:1")],
        &["not found", "nosuch:1"],
    );
}

#[test]
fn pull_with_wrong_credentials_fails() {
    let reg = hello_registry_with_auth();
    let host = reg.addr();
    let image = format!("docker://{host}/hello:1");
    let s = socle();
    pull_fails(
        &s,
        &["--creds", &format!("{USER}:wrong"), &image],
        &["credentials", host],
    );
    let file = s.inputs().join("auth.json");
    fs::write(&file, auth_json(host, USER, "wrong")).unwrap();
    pull_fails(
        &s,
        &["--authfile", &path_str(&file), &image],
        &["credentials", host],
    );
}

#[test]
fn pull_without_credentials_fails() {
    let reg = hello_registry_with_auth();
    let host = reg.addr();
    let s = socle();
    pull_fails(
        &s,
        &[&format!("docker://{host}/hello:1")],
        &["requires authentication", host],
    );
}

/// A pull through a proxy serving a damaged big layer fails on the digest
/// and stores nothing.
fn pull_of_a_damaged_blob_fails(fault: Fault) {
    let reg = hello_registry();
    let proxy = FaultProxy::start(reg.addr(), fault);
    let s = socle();
    pull_fails(
        &s,
        &[&format!("docker://{}/hello:1", proxy.addr())],
        &["digest mismatch"],
    );
    assert!(
        proxy.blob_gets().iter().any(|r| r.faulted),
        "{}",
        proxy.summary()
    );
}

#[test]
fn pull_corrupted_blob_fails() {
    pull_of_a_damaged_blob_fails(Fault::CorruptBlob);
}

#[test]
fn pull_blob_with_a_corrupted_gzip_header_fails() {
    // The layer decompresses fine: only the digest check can catch it.
    pull_of_a_damaged_blob_fails(Fault::CorruptGzipHeader);
}

/// The layer refs of the store (`images list -a --json`), sorted.
fn layer_digests(s: &Socle) -> Vec<String> {
    let all = s.json(&["images", "list", "-a"]);
    let mut digests: Vec<String> = all["layers"]
        .as_array()
        .expect("images list -a --json has a layers array")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    digests.sort();
    digests
}

#[test]
fn pull_truncated_blob_fails_after_retries_and_the_next_pull_resumes() {
    let reg = hello_registry();
    let manifest = reg.manifest("hello:1");
    let all_layers = manifest_layers(&manifest);
    let (layer, _) = big_layers(&manifest)[0].clone();
    let proxy = FaultProxy::start(reg.addr(), Fault::Truncate);
    let s = socle();
    let err = s.fails(&[
        "pull",
        "--tls-verify=false",
        &format!("docker://{}/hello:1", proxy.addr()),
    ]);
    assert!(err.contains("cut short"), "{err}");
    let tries = proxy
        .blob_gets()
        .iter()
        .filter(|r| r.blob_digest() == Some(layer.as_str()))
        .count();
    assert!(tries >= 2, "no retry:\n{}", proxy.summary());

    // No image appears, the truncated layer is not in the store, and what
    // is there arrived whole (a layer of this image).
    assert_eq!(image_rows(&s), Vec::<Value>::new());
    let kept = layer_digests(&s);
    assert!(!kept.contains(&layer), "{kept:?}");
    for d in &kept {
        assert!(all_layers.contains(d), "{d} is not a layer of hello:1");
    }

    // Pulling again from a sound registry fetches only what is missing.
    let report = pull(&s, &[&format!("docker://{}/hello:1", reg.addr())]);
    assert_pulled_hello1(&report, reg.addr());
    assert_eq!(report["layers_present"], kept.len(), "{report:#}");
    assert_eq!(
        report["layers_imported"],
        all_layers.len() - kept.len(),
        "{report:#}"
    );
    s.ok(&["images", "verify", &format!("{}/hello:1", reg.addr())]);
}

#[test]
fn pull_without_a_manifest_for_the_platform_fails() {
    let arch = host_arch();
    if arch == "arm64" || arch == "s390x" {
        eprintln!("skipped: the test index has an image for this machine ({arch})");
        return;
    }
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = PlatformIndex::build(dir.path());
    reg.push_all(&index.reference(), "hello:multi");
    let s = socle();
    let image = format!("docker://{}/hello:multi", reg.addr());
    let wanted = format!("no manifest for platform linux/{arch}");
    pull_fails(&s, &[&image], &[&wanted, "linux/arm64", "linux/s390x"]);
    // An explicit platform that is not there either.
    pull_fails(
        &s,
        &["--platform", "linux/ppc64le", &image],
        &[
            "no manifest for platform linux/ppc64le",
            "linux/arm64",
            "linux/s390x",
        ],
    );
}

#[test]
fn pull_huge_manifest_fails() {
    let reg = hello_registry();
    let proxy = FaultProxy::start(reg.addr(), Fault::HugeManifest);
    let s = socle();
    pull_fails(
        &s,
        &[&format!("docker://{}/hello:1", proxy.addr())],
        &["over the 4 MiB limit"],
    );
}

#[test]
fn pull_from_a_registry_that_is_down_fails() {
    let host = format!("127.0.0.1:{}", free_port());
    let s = socle();
    pull_fails(
        &s,
        &[&format!("docker://{host}/hello:1")],
        &["cannot connect", &host],
    );
}

#[test]
fn failed_pull_keeps_the_images_already_there() {
    let reg = hello_registry();
    let host = reg.addr();
    let s = socle();
    pull(&s, &[&format!("docker://{host}/hello:1")]);
    pull_fails(
        &s,
        &[&format!("docker://{host}/hello:nope")],
        &["not found"],
    );
    let proxy = FaultProxy::start(reg.addr(), Fault::HugeManifest);
    pull_fails(
        &s,
        &[&format!("docker://{}/hello:1", proxy.addr())],
        &["over the 4 MiB limit"],
    );
    assert_eq!(image_names(&s), [format!("{host}/hello:1")]);
}
