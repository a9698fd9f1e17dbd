//! Tier 2: what an image may make socle read, unpack and give the host.
//! Images are OCI layouts written by a Python builder (tarfile, zlib,
//! hashlib: independent of socle's code), so a test can declare sizes the
//! blobs do not have and stream gigabytes of zeros through gzip without
//! writing them. Each refusal names the layer or image, the limit, the value
//! and the option that raises it, and leaves the store as it was.
//!
//! Also: the state directory is private to root, host files lose setuid and
//! world-write bits, and a full disk leaves the store and deployments as they
//! were.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{oci_archive, path_str, tool, Socle};
use serde_json::{json, Value};

/// Writes an OCI layout from a JSON spec: `{"layers": [{"entries": [...],
/// "gzip": bool, "declared_delta": n, "declared": n}]}`. An entry is a
/// `dir` or a `file` with `data`, or `zeros`/`random` bytes, and a `mode`.
const LAYOUT_BUILDER: &str = r#"
import hashlib, io, json, os, sys, tarfile, zlib
spec = json.load(open(sys.argv[1]))
out = sys.argv[2]
os.makedirs(out + "/blobs/sha256", exist_ok=True)

def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(out + "/blobs/sha256/" + d, "wb").write(data)
    return "sha256:" + d, len(data)

class Fill(io.RawIOBase):
    def __init__(self, n, random):
        self.left, self.random = n, random
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = os.urandom(n) if self.random else bytes(n)
        self.left -= n
        return n

class Sink:
    """Hashes the tar as written, compresses it, hashes and keeps the blob."""
    def __init__(self, gzip):
        self.tar = hashlib.sha256()
        self.gz = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        self.blob = io.BytesIO()
    def write(self, b):
        self.tar.update(b)
        self.blob.write(self.gz.compress(b) if self.gz else b)
        return len(b)
    def close(self):
        if self.gz:
            self.blob.write(self.gz.flush())

layers, diff_ids = [], []
for layer in spec["layers"]:
    sink = Sink(layer.get("gzip", True))
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for e in layer["entries"]:
            i = tarfile.TarInfo(e["path"])
            i.uid = i.gid = 0
            i.mtime = 0
            i.mode = e.get("mode", 0o755 if e["type"] == "dir" else 0o644)
            src = None
            if e["type"] == "dir":
                i.type = tarfile.DIRTYPE
            elif "data" in e:
                data = e["data"].encode()
                i.size, src = len(data), io.BytesIO(data)
            else:
                n = e.get("zeros", e.get("random", 0))
                i.size, src = n, io.BufferedReader(Fill(n, "random" in e), 1 << 20)
            t.addfile(i, src)
    sink.close()
    digest, size = put(sink.blob.getvalue())
    size = layer.get("declared", size + layer.get("declared_delta", 0))
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if sink.gz else "")
    layers.append({"mediaType": media, "digest": digest, "size": size})
    diff_ids.append("sha256:" + sink.tar.hexdigest())

config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cs = put(json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}
md, ms = put(json.dumps(manifest).encode())
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "t"}}]}
json.dump(index, open(out + "/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(out + "/oci-layout", "w"))
print(json.dumps([l["digest"] for l in layers]))
"#;

fn file(path: &str, data: &str) -> Value {
    json!({"path": path, "type": "file", "data": data})
}
fn file_mode(path: &str, data: &str, mode: u32) -> Value {
    json!({"path": path, "type": "file", "data": data, "mode": mode})
}
fn zeros(path: &str, n: u64) -> Value {
    json!({"path": path, "type": "file", "zeros": n})
}
fn random(path: &str, n: u64) -> Value {
    json!({"path": path, "type": "file", "random": n})
}
fn layer(entries: Vec<Value>) -> Value {
    json!({"entries": entries})
}

const MIB: u64 = 1 << 20;

/// An image built from `layers` (see [`LAYOUT_BUILDER`]) as the layout
/// `inputs/NAME`: its `oci:` reference (pulled as `NAME:t`) and the
/// digests of its layers.
fn image(s: &Socle, name: &str, layers: Vec<Value>) -> (String, Vec<String>) {
    let work = s.root().join("build");
    fs::create_dir_all(&work).unwrap();
    let builder = work.join("mklayout.py");
    fs::write(&builder, LAYOUT_BUILDER).unwrap();
    let spec = work.join(format!("{name}.json"));
    fs::write(&spec, json!({ "layers": layers }).to_string()).unwrap();
    let layout = s.inputs().join(name);
    let out = tool(Command::new("python3").args([
        &path_str(&builder),
        &path_str(&spec),
        &path_str(&layout),
    ]));
    let digests: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    (format!("oci:{}:t", path_str(&layout)), digests)
}

/// Pulls `reference` with `args` before it, expecting a refusal; checks the
/// store is as it was and returns the error line.
fn refused(s: &Socle, args: &[&str], reference: &str) -> String {
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let mut all = vec!["pull"];
    all.extend_from_slice(args);
    all.push(reference);
    let err = s.fails(&all);
    s.assert_unchanged(&before);
    err
}

fn assert_names(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

/// Builds image NAME from `layers`, pulls it with `args` expecting a
/// refusal that names its first layer and each of `needles`.
fn first_layer_refused(s: &Socle, name: &str, layers: Vec<Value>, args: &[&str], needles: &[&str]) {
    let (reference, digests) = image(s, name, layers);
    let err = refused(s, args, &reference);
    assert_names(&err, &[digests[0].as_str()]);
    assert_names(&err, needles);
}

#[test]
fn a_layer_declaring_a_terabyte_is_refused_before_download() {
    let s = Socle::new();
    let (reference, digests) = image(
        &s,
        "tera",
        vec![json!({"entries": [file("a", "a\n")], "declared": 1_000_000_000_000u64})],
    );
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let out = s.run(&["--json", "pull", &reference]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_names(
        &stderr,
        &[
            &reference,
            &digests[0],
            "1000000000000 bytes",
            "layer-size limit of 4 GiB",
            "--limit layer-size=",
            "nothing was downloaded",
        ],
    );
    // The pull resolved the image and started no download.
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(events.contains("\"resolved\""), "{events}");
    assert!(!events.contains("downloading"), "{events}");
    s.assert_unchanged(&before);
}

#[test]
fn a_blob_longer_than_its_descriptor_is_cut_off() {
    first_layer_refused(
        &Socle::new(),
        "long",
        vec![json!({"entries": [random("r", MIB)], "declared_delta": -100})],
        &[],
        &["its descriptor gives", "the blob is more than"],
    );
}

/// 256 MiB of zeros gzip to a quarter MiB: refused by the default ratio
/// limit once 64 MiB are unpacked.
#[test]
fn a_gzip_bomb_stops_at_the_default_ratio() {
    first_layer_refused(
        &Socle::new(),
        "bomb",
        vec![layer(vec![zeros("z", 256 * MIB)])],
        &[],
        &["unpacking ratio", "ratio limit of 100", "--limit ratio="],
    );
}

#[test]
fn a_layer_over_a_lowered_layer_limit_is_refused_and_a_raised_one_lets_it_in() {
    let s = Socle::new();
    let (reference, digests) = image(&s, "big", vec![layer(vec![zeros("z", 24 * MIB)])]);
    let err = refused(&s, &["--limit", "layer-size=16M"], &reference);
    assert_names(
        &err,
        &[
            &digests[0],
            "the unpacked layer",
            "layer-size limit of 16 MiB",
        ],
    );
    // The gzip blob itself is small: a lowered limit below it stops the
    // download at limit + 1 bytes.
    let err = refused(&s, &["--limit", "layer-size=1K"], &reference);
    assert_names(
        &err,
        &["the size its descriptor declares", "limit of 1 KiB"],
    );
    s.ok(&["pull", "--limit", "layer-size=32M", &reference]);
    assert!(s.ok(&["images", "list"]).contains("big"));
}

#[test]
fn an_image_over_the_image_limit_is_refused_from_the_environment() {
    let s = Socle::new().with_env("SOCLE_LIMITS", "image-size=5M,ratio=1000");
    let (reference, _) = image(
        &s,
        "wide",
        vec![
            layer(vec![zeros("a", 2 * MIB)]),
            layer(vec![zeros("b", 2 * MIB)]),
            layer(vec![zeros("c", 2 * MIB)]),
        ],
    );
    let err = refused(&s, &[], &reference);
    assert_names(&err, &["the unpacked image", "image-size limit of 5 MiB"]);
}

#[test]
fn too_many_layers_are_refused_before_download() {
    let s = Socle::new();
    let layers = (0..3)
        .map(|n| layer(vec![file(&format!("f{n}"), "x")]))
        .collect();
    let (reference, _) = image(&s, "many", layers);
    let err = refused(&s, &["--limit", "layers=2"], &reference);
    assert_names(
        &err,
        &[
            "number of layers of image many:t is 3",
            "layers limit of 2",
            "--limit layers=",
        ],
    );
    s.ok(&["pull", "--limit", "layers=3", &reference]);
}

#[test]
fn too_many_entries_in_a_layer_are_refused() {
    first_layer_refused(
        &Socle::new(),
        "entries",
        vec![layer(
            (0..11).map(|n| file(&format!("f{n}"), "x")).collect(),
        )],
        &["--limit", "entries=10"],
        &["tar entries is 11", "entries limit of 10"],
    );
}

#[test]
fn a_path_over_the_length_limit_is_refused() {
    let s = Socle::new();
    let long = format!("{}/f", "d".repeat(120));
    let (reference, digests) = image(&s, "paths", vec![layer(vec![file(&long, "x")])]);
    let err = refused(&s, &["--limit", "path-length=100"], &reference);
    assert_names(
        &err,
        &[
            &digests[0],
            "ddd",
            "122 bytes",
            "path-length limit of 100 bytes",
        ],
    );
    // 5000 bytes: over the default.
    let deep = format!("{}f", "d/".repeat(2500));
    let (reference, _) = image(&s, "deep", vec![layer(vec![file(&deep, "x")])]);
    let err = refused(&s, &[], &reference);
    assert_names(&err, &["5001 bytes", "path-length limit of 4 KiB"]);
}

#[test]
fn a_bad_limit_setting_names_the_limits() {
    let s = Socle::new();
    let err = s.fails(&["pull", "--limit", "layer_size=1G", "oci:/nonexistent:t"]);
    assert_names(&err, &["layer_size", "layer-size", "image-size", "ratio"]);
}

/// Manifests and configs have their own limit, lowered here below the size
/// of hello's config (the default takes it), with the same kind of error.
#[test]
fn a_manifest_or_config_over_the_json_limit_is_refused() {
    let s = Socle::new();
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let source = common::oci_archive(&common::fixtures().oci_archive);
    let err = s.fails(&["pull", "--limit", "json-size=200", &source]);
    assert_names(&err, &["200 bytes", "json-size", "--limit json-size="]);
    s.assert_unchanged(&before);
    s.ok(&["pull", &source]);
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Runs `sh -c SCRIPT` as the unprivileged user nobody.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

#[test]
fn the_state_dir_is_private_and_other_users_cannot_reach_store_objects() {
    let s = Socle::new();
    // The test's own directory is open to all, as /var/lib is.
    fs::set_permissions(s.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let (reference, _) = image(
        &s,
        "modes",
        vec![layer(vec![
            file_mode("shared", "image data\n", 0o777),
            file_mode("suid", "#!/bin/sh\n", 0o4755),
        ])],
    );
    s.ok(&["pull", &reference]);
    assert_eq!(mode(&s.state()), 0o700);
    assert_eq!(mode(&s.repo()), 0o700);
    s.ok(&["install", "--name", "modes", "modes:t"]);
    assert_eq!(mode(&s.containers()), 0o700);
    let rootfs = s.slot("modes", 0).join("rootfs");
    // Inside, the image's modes are kept: the container sees what it shipped.
    assert_eq!(mode(&rootfs.join("shared")), 0o777);
    assert_eq!(mode(&rootfs.join("suid")), 0o4755);
    let shared = path_str(&rootfs.join("shared"));
    let object = common::all_paths(&s.repo().join("objects"))
        .into_iter()
        .find(|p| {
            p.is_file() && fs::metadata(p).unwrap().ino() == fs::metadata(&shared).unwrap().ino()
        })
        .expect("the store object of /shared");
    for p in [shared, path_str(&object)] {
        let out = as_nobody(&format!("cat '{p}'"));
        assert!(!out.status.success(), "nobody read {p}");
        let out = as_nobody(&format!("echo owned >> '{p}'"));
        assert!(!out.status.success(), "nobody wrote {p}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    }
    assert_eq!(fs::read_to_string(&object).unwrap(), "image data\n");
    s.ok(&["images", "verify", "modes:t"]);
}

#[test]
fn a_state_dir_open_to_others_is_restricted_at_the_next_write() {
    let s = Socle::new();
    s.pull_hello();
    fs::set_permissions(s.state(), fs::Permissions::from_mode(0o755)).unwrap();
    let (_, stderr) = s.ok_with_stderr(&["pull", &oci_archive(&common::fixtures().oci_archive)]);
    assert!(stderr.contains("restricted it to 0700"), "{stderr}");
    assert!(stderr.contains("0755"), "{stderr}");
    assert_eq!(mode(&s.state()), 0o700);
}

#[test]
fn a_setuid_world_writable_host_file_lands_without_those_bits() {
    let s = Socle::new();
    let (reference, _) = image(
        &s,
        "hostmode",
        vec![layer(vec![
            json!({"path": "exports", "type": "dir"}),
            file("exports/manifest.json", "{}"),
            json!({"path": "exports/hostfs/usr/local/bin", "type": "dir"}),
            file_mode("exports/hostfs/usr/local/bin/tool", "#!/bin/sh\n", 0o4777),
            file_mode("exports/hostfs/usr/local/bin/plain", "#!/bin/sh\n", 0o755),
        ])],
    );
    s.ok(&["pull", &reference]);
    let (_, stderr) = s.ok_with_stderr(&["install", "--name", "hostmode", "hostmode:t"]);
    assert!(stderr.contains("/usr/local/bin/tool"), "{stderr}");
    assert!(
        stderr.contains("4777") && stderr.contains("0775"),
        "{stderr}"
    );
    assert!(!stderr.contains("/usr/local/bin/plain"), "{stderr}");
    assert_eq!(mode(&s.on_host("/usr/local/bin/tool")), 0o775);
    assert_eq!(mode(&s.on_host("/usr/local/bin/plain")), 0o755);
    // The image keeps its mode inside the container.
    let rootfs = s.slot("hostmode", 0).join("rootfs");
    assert_eq!(
        mode(&rootfs.join("exports/hostfs/usr/local/bin/tool")),
        0o4777
    );
}

/// A tmpfs of `size` mounted on the state directory, unmounted at the end.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(s: &Socle, size: &str) -> SmallDisk {
        let at = s.state();
        fs::create_dir_all(&at).unwrap();
        tool(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg("tmpfs")
                .arg(&at),
        );
        SmallDisk { at }
    }
    fn resize(&self, size: &str) {
        tool(
            Command::new("mount")
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.at),
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

fn image_names(s: &Socle) -> Vec<String> {
    let v = s.json(&["images", "list"]);
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["images"].as_array().cloned())
        .unwrap();
    let mut names: Vec<String> = list
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_full_disk_during_a_pull_says_which_file_system_and_what_to_do() {
    let s = Socle::new();
    let _disk = SmallDisk::mount(&s, "8m");
    let (reference, _) = image(&s, "huge", vec![layer(vec![random("r", 12 * MIB)])]);
    let err = s.fails(&["pull", &reference]);
    let store = s.state().join("repo");
    assert_names(
        &err,
        &[
            &format!("the file system of the store ({}) is full", store.display()),
            "`socle images prune`",
            "No space left on device",
        ],
    );
}

#[test]
fn a_full_disk_refuses_the_pull_and_the_install_and_leaves_the_store_whole() {
    let s = Socle::new();
    let disk = SmallDisk::mount(&s, "8m");
    s.pull_hello();
    let (reference, _) = image(&s, "huge", vec![layer(vec![random("r", 12 * MIB)])]);
    let err = s.fails(&["pull", &reference]);
    assert_names(&err, &[&reference, "No space left on device"]);
    assert_eq!(image_names(&s), ["hello:1"]);
    s.ok(&["images", "verify", "hello:1"]);

    // Room again: the same pull works.
    disk.resize("64m");
    s.ok(&["pull", &reference]);
    assert_eq!(image_names(&s), ["hello:1", "huge:t"]);

    // Fill the disk, then install.
    let filler = s.state().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=100"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let before = s.snapshot();
    let err = s.fails(&["install", "--name", "full", "hello:1"]);
    assert_names(&err, &["No space left on device"]);
    s.assert_unchanged(&before);
    assert!(!s.containers().join("full").exists());
    fs::remove_file(&filler).unwrap();
    s.ok(&["install", "--name", "full", "hello:1"]);
    assert!(s
        .slot("full", 0)
        .join("rootfs/usr/bin/hello-greeter")
        .is_file());
    s.ok(&["images", "verify", "hello:1"]);
    s.ok(&["images", "verify", "huge:t"]);
}
