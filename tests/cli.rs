//! The `socle` binary as a user sees it: real ostree store, real
//! systemd-tmpfiles, real runc, images built by umoci and skopeo
//! (scripts/build-image). Every test has its own environment (see
//! common::Socle) and runs with `--systemd none`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{all_paths, copy_tree, fixtures, free_port, oci_archive, path_str, sha256_hex, Socle};
use serde_json::Value;

fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn image_names(s: &Socle) -> Vec<String> {
    let list = s.json(&["images", "list"]);
    list.as_array()
        .expect("images list --json is an array")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Installs hello:1 as `name` with a fixed port and receiver.
fn install_hello(s: &Socle, name: &str, port: u16) -> Value {
    s.pull_hello();
    s.json(&[
        "install",
        "--system",
        "--name",
        name,
        "--set",
        &format!("PORT={port}"),
        "--set",
        "RECEIVER=test",
        "hello:1",
    ])
}

// ---- pull -------------------------------------------------------------------

#[test]
fn pull_oci_archive_lists_the_image() {
    let s = Socle::new();
    let f = fixtures();
    let report = s.json(&["pull", &oci_archive(&f.oci_archive)]);
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    assert_eq!(report["layers_present"], 0, "{report:#}");
    assert_eq!(report["image"]["id"], f.v1_digest.as_str(), "{report:#}");

    let list = s.json(&["images", "list"]);
    let images = list.as_array().unwrap();
    assert_eq!(images.len(), 1, "{list:#}");
    let img = &images[0];
    assert_eq!(img["name"], "hello:1", "{list:#}");
    assert_eq!(img["tag"], "1", "{list:#}");
    assert_eq!(img["id"], f.v1_digest.as_str(), "{list:#}");
    // build-image stamps SOURCE_DATE_EPOCH (0) as the creation time.
    assert_eq!(img["created"], "1970-01-01T00:00:00Z", "{list:#}");
    assert!(img["size"].as_u64().unwrap() > 0, "{list:#}");

    let table = s.ok(&["images", "list"]);
    assert!(table.contains("hello"), "{table}");
    assert!(
        table.contains(&f.v1_digest["sha256:".len().."sha256:".len() + 12]),
        "{table}"
    );
}

#[test]
fn pull_docker_archive_lists_the_image() {
    let s = Socle::new();
    let report = s.json(&[
        "pull",
        &format!("docker-archive:{}", path_str(&fixtures().docker_archive)),
    ]);
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    let list = s.json(&["images", "list"]);
    let img = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    // skopeo writes the RepoTag fully qualified (docker.io/library/hello:1);
    // `docker save` would write hello:1.
    let name = img["name"].as_str().unwrap();
    assert!(
        name == "hello:1" || name == "docker.io/library/hello:1",
        "{list:#}"
    );
    assert_eq!(img["tag"], "1", "{list:#}");
    assert!(is_sha256_digest(img["id"].as_str().unwrap()), "{list:#}");
    assert_eq!(img["created"], "1970-01-01T00:00:00Z", "{list:#}");
    assert!(img["size"].as_u64().unwrap() > 0, "{list:#}");
}

#[test]
fn pull_oci_dir_lists_the_image() {
    let s = Socle::new();
    let f = fixtures();
    let report = s.json(&["pull", &format!("oci:{}:1", path_str(&f.oci_dir))]);
    assert_eq!(report["layers_imported"], 2, "{report:#}");
    let list = s.json(&["images", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    let img = &list[0];
    assert_eq!(img["name"], "hello:1", "{list:#}");
    assert_eq!(img["tag"], "1", "{list:#}");
    assert_eq!(img["id"], f.v1_digest.as_str(), "{list:#}");
    assert_eq!(img["created"], "1970-01-01T00:00:00Z", "{list:#}");
    assert!(img["size"].as_u64().unwrap() > 0, "{list:#}");
}

#[test]
fn pull_again_imports_no_layer() {
    let s = Socle::new();
    let archive = oci_archive(&fixtures().oci_archive);
    s.ok(&["pull", &archive]);
    let again = s.json(&["pull", &archive]);
    assert_eq!(again["layers_imported"], 0, "{again:#}");
    assert_eq!(again["layers_present"], 2, "{again:#}");
    assert_eq!(image_names(&s), ["hello:1"]);
    let text = s.ok(&["pull", &archive]);
    assert!(text.contains("0 layers imported"), "{text}");
}

#[test]
fn second_image_imports_only_its_own_layer() {
    let s = Socle::new();
    let f = fixtures();
    s.pull_hello();
    let v2 = s.json(&["pull", &oci_archive(&f.v2_archive)]);
    assert_eq!(
        v2["layers_imported"], 1,
        "the busybox layer is shared: {v2:#}"
    );
    assert_eq!(v2["layers_present"], 1, "{v2:#}");
    assert_eq!(v2["image"]["id"], f.v2_digest.as_str(), "{v2:#}");
    let mut names = image_names(&s);
    names.sort();
    assert_eq!(names, ["hello:1", "hello:2"]);
}

// ---- images info --------------------------------------------------------------

#[test]
fn images_info_shows_labels_and_defaults() {
    let s = Socle::new();
    s.pull_hello();
    let info = s.json(&["images", "info", "hello:1"]);
    assert_eq!(info["labels"]["version"], "1", "{info:#}");
    assert_eq!(info["labels"]["name"], "hello", "{info:#}");
    assert_eq!(info["defaults"]["PORT"], "8081", "{info:#}");
    assert_eq!(info["defaults"]["RECEIVER"], "world", "{info:#}");
    assert_eq!(info["has_exports"], true, "{info:#}");

    let text = s.ok(&["images", "info", "hello:1"]);
    for want in ["version=1", "PORT=8081", "RECEIVER=world"] {
        assert!(text.contains(want), "images info lacks {want}:\n{text}");
    }
}

// ---- install ------------------------------------------------------------------

#[test]
fn install_renders_unit_config_tmpfiles_and_host_files() {
    let s = Socle::new();
    let port = free_port();
    let report = install_hello(&s, "greeter", port);
    let slot = s.slot("greeter", 0);
    assert_eq!(report["deployment"], path_str(&slot).as_str(), "{report:#}");

    // The pointer.
    assert_eq!(
        fs::read_link(s.containers().join("greeter")).unwrap(),
        PathBuf::from("greeter.0")
    );

    // The unit: in the slot and in the unit dir.
    let unit = read(&s.units().join("greeter.service"));
    assert_eq!(unit, read(&slot.join("greeter.service")));
    let exec_start = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart= in the unit:\n{unit}"));
    assert!(exec_start.contains("runc"), "{exec_start}");
    assert!(exec_start.contains(" run "), "{exec_start}");
    assert!(!exec_start.contains("--systemd-cgroup"), "{exec_start}");
    // The container lives in the unit's cgroup and leaves no runc state.
    for line in ["Delegate=yes", "KillMode=mixed"] {
        assert!(unit.lines().any(|l| l == line), "no {line} in:\n{unit}");
    }
    for directive in ["ExecStartPre=-", "ExecStopPost=-"] {
        assert!(
            unit.lines()
                .any(|l| l.starts_with(directive) && l.ends_with("runc delete --force 'greeter'")),
            "no {directive}…runc delete --force 'greeter' in:\n{unit}"
        );
    }
    assert!(
        unit.lines()
            .any(|l| l == format!("WorkingDirectory={}", slot.display())),
        "WorkingDirectory= is not the slot {}:\n{unit}",
        slot.display()
    );

    // config.json: valid, read-only rootfs, the values.
    let config = read_json(&slot.join("config.json"));
    assert_eq!(config["root"]["readonly"], true, "{config:#}");
    assert_eq!(config["root"]["path"], "rootfs", "{config:#}");
    let env: Vec<&str> = config["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&format!("PORT={port}").as_str()), "{env:?}");
    assert!(env.contains(&"RECEIVER=test"), "{env:?}");
    assert_eq!(config["hostname"], "greeter", "{config:#}");
    assert_eq!(
        config["linux"]["cgroupsPath"], "/system.slice/greeter.service/container",
        "{config:#}"
    );

    // tmpfiles: in the slot and in the tmpfiles dir.
    let tmpfiles = read(&s.tmpfiles().join("greeter.conf"));
    assert_eq!(tmpfiles, read(&slot.join("tmpfiles.conf")));
    assert!(tmpfiles.contains("/var/lib/greeter"), "{tmpfiles}");

    // The hostfs file, renamed and rendered.
    let conf = read(&s.on_host("/etc/hello/greeter.conf"));
    assert!(conf.contains(&format!("PORT={port}\n")), "{conf}");
    assert!(conf.contains("RECEIVER=test\n"), "{conf}");
    assert!(conf.contains("instance greeter"), "{conf}");
    assert!(!s.on_host("/etc/hello/hello.conf").exists());

    // The data dir, made by systemd-tmpfiles under the host root.
    assert!(s.on_host("/var/lib/greeter").is_dir());

    // The info file.
    let info = read_json(&slot.join("info"));
    assert_eq!(
        info["values"]["PORT"],
        port.to_string().as_str(),
        "{info:#}"
    );
    assert_eq!(info["values"]["RECEIVER"], "test", "{info:#}");
    assert_eq!(info["values"]["NAME"], "greeter", "{info:#}");
    let uuid = info["values"]["UUID"].as_str().unwrap_or_default();
    let parts: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "UUID {uuid:?}");
    assert!(
        uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{uuid}"
    );

    // list.
    let list = s.json(&["list", "--all"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list:#}");
    assert_eq!(rows[0]["name"], "greeter", "{list:#}");
    assert_eq!(rows[0]["image"], "hello:1", "{list:#}");
    assert_eq!(rows[0]["slot"], 0, "{list:#}");
    let text = s.ok(&["list", "--all"]);
    assert!(text.contains("greeter"), "{text}");
}

#[test]
fn install_checks_out_hardlinks_into_the_store() {
    let s = Socle::new();
    install_hello(&s, "linked", free_port());
    let objects: std::collections::HashSet<(u64, u64)> = all_paths(&s.repo().join("objects"))
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let rootfs = s.slot("linked", 0).join("rootfs");
    let mut files = 0;
    for p in all_paths(&rootfs) {
        let m = fs::symlink_metadata(&p).unwrap();
        if !m.is_file() {
            continue;
        }
        files += 1;
        assert!(
            m.nlink() > 1 && objects.contains(&(m.dev(), m.ino())),
            "{} is not a hardlink of a store object (nlink {})",
            p.display(),
            m.nlink()
        );
    }
    assert!(files >= 3, "only {files} files in the rootfs");
    assert!(rootfs.join("usr/bin/hello-greeter").is_file());
    assert!(rootfs.join("bin/busybox").is_file());
}

/// Kills and deletes a runc container when the test ends, however it ends.
struct RuncContainer {
    root: PathBuf,
    id: String,
}

impl RuncContainer {
    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running runc")
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = self.runc(&["kill", &self.id, "KILL"]);
        let _ = self.runc(&["delete", "-f", &self.id]);
    }
}

#[test]
fn installed_bundle_runs_with_runc() {
    let s = Socle::new();
    let port = free_port();
    let data = s.root().join("data");
    s.pull_hello();
    s.ok(&[
        "install",
        "--name",
        "runme",
        "--set",
        &format!("PORT={port}"),
        "--set",
        "RECEIVER=test",
        "--set",
        &format!("STATE_DIRECTORY={}", data.display()),
        "hello:1",
    ]);
    let slot = s.slot("runme", 0);
    let config = read_json(&slot.join("config.json"));
    let bind = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/var/lib/hello")
        .unwrap_or_else(|| panic!("no /var/lib/hello mount: {config:#}"))
        .clone();
    let source = PathBuf::from(bind["source"].as_str().unwrap());
    assert_eq!(source, data.join("runme"), "{bind:#}");
    // systemd-tmpfiles made it under the host root; runc sees real paths, so
    // the test provides the real one (a real host has host root /).
    assert!(s.on_host(&path_str(&source)).is_dir());
    fs::create_dir_all(&source).unwrap();

    let guard = RuncContainer {
        root: s.root().join("runc-state"),
        id: format!("socle-cli-test-{}-{port}", std::process::id()),
    };
    let log = fs::File::create(s.root().join("runc.log")).unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(&guard.root)
        .args(["run", "-d", "--bundle"])
        .arg(&slot)
        .arg(&guard.id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("running runc");
    assert!(
        status.success(),
        "runc run failed ({status}):\n{}",
        read(&s.root().join("runc.log"))
    );

    let url = format!("http://127.0.0.1:{port}/");
    let want = "Hello, test! (hello 1)";
    let mut last = String::new();
    for _ in 0..300 {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "2", &url])
            .stdin(Stdio::null())
            .output()
            .expect("running curl");
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == want {
            break;
        }
        let state = guard.runc(&["state", &guard.id]);
        if String::from_utf8_lossy(&state.stdout).contains("\"stopped\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        last,
        want,
        "the container did not answer on {url}; its output:\n{}",
        read(&s.root().join("runc.log"))
    );
    // The bind-mounted data dir is writable: the start counter.
    assert_eq!(read(&source.join("starts")).trim(), "1");
}

#[test]
fn whiteouts_hide_removed_files() {
    let s = Socle::new();
    s.ok(&["pull", &oci_archive(&fixtures().whiteout)]);
    s.ok(&["install", "--name", "wh", "whiteout:1"]);
    let rootfs = s.slot("wh", 0).join("rootfs");
    // Removed from the image layer and from the base layer.
    for gone in ["usr/bin/hello-greeter", "bin/wget"] {
        assert!(
            fs::symlink_metadata(rootfs.join(gone)).is_err(),
            "/{gone} should be removed by a whiteout"
        );
    }
    // Their neighbours stay.
    assert!(rootfs.join("usr/bin").is_dir());
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(fs::symlink_metadata(rootfs.join("bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(rootfs.join("usr/share/hello/version").is_file());
    let whiteouts: Vec<_> = all_paths(&rootfs)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".wh."))
        .collect();
    assert!(
        whiteouts.is_empty(),
        "whiteout files in the rootfs: {whiteouts:?}"
    );
}

// ---- uninstall ----------------------------------------------------------------

#[test]
fn uninstall_removes_everything_but_the_data() {
    let s = Socle::new();
    install_hello(&s, "gone", free_port());
    assert!(s.on_host("/var/lib/gone").is_dir());
    fs::write(s.on_host("/var/lib/gone/starts"), "3\n").unwrap();

    s.ok(&["uninstall", "gone"]);
    for p in [
        s.units().join("gone.service"),
        s.tmpfiles().join("gone.conf"),
        s.on_host("/etc/hello/gone.conf"),
        s.slot("gone", 0),
        s.slot("gone", 1),
        s.containers().join("gone"),
    ] {
        assert!(
            fs::symlink_metadata(&p).is_err(),
            "{} is still there",
            p.display()
        );
    }
    assert_eq!(
        read(&s.on_host("/var/lib/gone/starts")),
        "3\n",
        "the data dir must stay"
    );
    assert_eq!(s.json(&["list", "--all"]), serde_json::json!([]));
    // The image stays in the store.
    assert_eq!(image_names(&s), ["hello:1"]);
}

#[test]
fn uninstall_keeps_an_edited_host_file() {
    let s = Socle::new();
    install_hello(&s, "edited", free_port());
    let conf = s.on_host("/etc/hello/edited.conf");
    let mut text = read(&conf);
    text.push_str("# my local change\n");
    fs::write(&conf, &text).unwrap();

    let (_, stderr) = s.ok_with_stderr(&["uninstall", "edited"]);
    assert!(
        stderr.contains("/etc/hello/edited.conf"),
        "stderr should mention the kept file:\n{stderr}"
    );
    assert_eq!(read(&conf), text, "the edited file must be kept as it is");
    assert!(!s.units().join("edited.service").exists());
    assert!(fs::symlink_metadata(s.containers().join("edited")).is_err());
    assert!(!s.slot("edited", 0).exists());
}

// ---- bad input: pull ------------------------------------------------------------

/// A fresh environment with an initialized, empty store.
fn empty_store() -> Socle {
    let s = Socle::new();
    assert_eq!(s.json(&["images", "list"]), serde_json::json!([]));
    s
}

/// A copy of the hello 1 OCI layout in the test's inputs, with its manifest.
fn layout_copy(s: &Socle) -> (PathBuf, Value) {
    let dir = s.inputs().join("hello");
    copy_tree(&fixtures().oci_dir, &dir);
    let manifest = read_json(&blob_path(&dir, manifest_digest(&dir).as_str()));
    (dir, manifest)
}

fn manifest_digest(layout: &Path) -> String {
    let index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

#[test]
fn pull_missing_archive_fails() {
    let s = empty_store();
    let before = s.snapshot();
    let missing = s.root().join("no-such-image.tar");
    let err = s.fails(&["pull", &format!("oci-archive:{}", missing.display())]);
    assert!(err.contains(&path_str(&missing)), "{err}");
    s.assert_unchanged(&before);
}

#[test]
fn pull_garbage_archive_fails() {
    let s = empty_store();
    let garbage = s.inputs().join("garbage.tar");
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&garbage, data).unwrap();
    let before = s.snapshot();
    for transport in ["oci-archive", "docker-archive"] {
        let err = s.fails(&["pull", &format!("{transport}:{}", garbage.display())]);
        assert!(err.contains(&path_str(&garbage)), "{err}");
        s.assert_unchanged(&before);
    }
}

/// Pulls the damaged layout `dir` and checks the one-line error names it and
/// `what`, and that the store is as it was.
fn pull_layout_fails_naming(s: &Socle, dir: &Path, what: &str) {
    let before = s.snapshot();
    let err = s.fails(&["pull", &format!("oci:{}:1", dir.display())]);
    assert!(err.contains(&path_str(dir)), "{err}");
    assert!(err.contains(what), "the error should name {what}: {err}");
    s.assert_unchanged(&before);
    assert!(image_names(s).is_empty());
}

#[test]
fn pull_blob_digest_mismatch_commits_nothing() {
    let s = empty_store();
    let (dir, manifest) = layout_copy(&s);
    // Flip a byte of the gzip header's MTIME in the first layer: the blob
    // still decompresses, only its digest is wrong.
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = blob_path(&dir, &layer);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[4] ^= 0xff;
    fs::write(&blob, bytes).unwrap();

    pull_layout_fails_naming(&s, &dir, &layer);
}

#[test]
fn pull_manifest_naming_a_missing_blob_fails() {
    let s = empty_store();
    let (dir, manifest) = layout_copy(&s);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(blob_path(&dir, &layer)).unwrap();

    pull_layout_fails_naming(&s, &dir, &layer);
}

#[test]
fn pull_unsupported_layer_media_type_fails() {
    let s = empty_store();
    let (dir, mut manifest) = layout_copy(&s);
    let odd = "application/vnd.example.layer.v1.tar+lz4";
    manifest["layers"][0]["mediaType"] = Value::from(odd);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fs::write(blob_path(&dir, &digest), &bytes).unwrap();
    let mut index = read_json(&dir.join("index.json"));
    index["manifests"][0]["digest"] = Value::from(digest.as_str());
    index["manifests"][0]["size"] = Value::from(bytes.len());
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let before = s.snapshot();
    let err = s.fails(&["pull", &format!("oci:{}:1", dir.display())]);
    assert!(err.contains(&path_str(&dir)), "{err}");
    assert!(
        err.contains(odd),
        "the error should name the media type: {err}"
    );
    s.assert_unchanged(&before);
    assert!(image_names(&s).is_empty());
}

// ---- bad input: install -------------------------------------------------------

#[test]
fn install_image_without_exports_uses_defaults() {
    let s = Socle::new();
    s.ok(&["pull", &oci_archive(&fixtures().no_exports)]);
    let (_, stderr) = s.ok_with_stderr(&["install", "--name", "plain", "noexports:1"]);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("/exports")),
        "expected a warning about the missing /exports:\n{stderr}"
    );
    let slot = s.slot("plain", 0);
    let config = read_json(&slot.join("config.json"));
    assert_eq!(config["root"]["path"], "rootfs", "{config:#}");
    assert_eq!(config["root"]["readonly"], true, "{config:#}");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/bin/hello-greeter"]),
        "the default config runs the image's command: {config:#}"
    );
    let unit = read(&s.units().join("plain.service"));
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStart=") && l.contains("runc")),
        "{unit}"
    );
    assert!(s.json(&["images", "info", "noexports:1"])["has_exports"] == false);
}

#[test]
fn install_template_with_unknown_variable_leaves_nothing() {
    let s = Socle::new();
    s.ok(&["pull", &oci_archive(&fixtures().bad_template)]);
    let before = s.snapshot();
    let err = s.fails(&["install", "--name", "bad", "badtemplate:1"]);
    assert!(err.contains("service.template"), "{err}");
    assert!(err.contains("FOO"), "{err}");
    s.assert_unchanged(&before);
    assert!(!s.units().join("bad.service").exists());
    assert!(!s.on_host("/etc/hello/bad.conf").exists());
    assert!(!s.slot("bad", 0).exists());
    assert!(fs::symlink_metadata(s.containers().join("bad")).is_err());
}

/// Pulls hello, runs `install ARGS`, and checks it fails with one line
/// naming `needle` and leaves store and host as they were.
fn install_is_rejected(args: &[&str], needle: &str) {
    let s = Socle::new();
    s.pull_hello();
    let before = s.snapshot();
    let mut full = vec!["install"];
    full.extend_from_slice(args);
    let err = s.fails(&full);
    assert!(err.contains(needle), "{err}");
    s.assert_unchanged(&before);
}

#[test]
fn install_names_runc_systemd_or_the_slots_would_misread_fail() {
    for (name, needle) in [
        ("a@b", "template unit"),
        ("foo@", "template unit"),
        ("-x", "starts with '-'"),
        ("x.0", "NAME.0, NAME.1"),
    ] {
        // --name=-x: clap would take a separate "-x" for an option.
        install_is_rejected(&[&format!("--name={name}"), "hello:1"], needle);
    }
}

/// `x.0` beside an installed `x` would have been x's live slot.
#[test]
fn install_beside_a_container_under_its_slot_name_leaves_it_alone() {
    let s = Socle::new();
    s.pull_hello();
    s.ok(&["install", "--name", "x", "hello:1"]);
    let before = s.snapshot();
    for slot in ["x.0", "x.1"] {
        let err = s.fails(&["install", "--name", slot, "hello:1"]);
        assert!(err.contains("invalid container name"), "{err}");
    }
    s.assert_unchanged(&before);
    let list = s.json(&["list", "--all"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    s.ok(&["uninstall", "x"]);
}

#[test]
fn install_set_without_equals_fails() {
    install_is_rejected(&["--name", "web", "--set", "PORT", "hello:1"], "PORT");
}

#[test]
fn install_set_forced_variable_is_ignored_with_a_warning() {
    let s = Socle::new();
    s.pull_hello();
    let (_, stderr) = s.ok_with_stderr(&["install", "--name", "web", "--set", "NAME=x", "hello:1"]);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("NAME")),
        "expected a warning about NAME:\n{stderr}"
    );
    let info = read_json(&s.slot("web", 0).join("info"));
    assert_eq!(info["values"]["NAME"], "web", "{info:#}");
    assert_eq!(
        read_json(&s.slot("web", 0).join("config.json"))["hostname"],
        "web"
    );
    assert!(s.on_host("/etc/hello/web.conf").is_file());
    assert!(!s.on_host("/etc/hello/x.conf").exists());
    assert!(!s.containers().join("x").exists());
}

#[test]
fn install_set_value_with_newline_fails() {
    install_is_rejected(
        &[
            "--name",
            "web",
            "--set",
            "RECEIVER=a\nExecStartPre=/bin/evil",
            "hello:1",
        ],
        "RECEIVER",
    );
}

#[test]
fn install_name_with_slash_fails() {
    install_is_rejected(&["--name", "a/b", "hello:1"], "a/b");
}

#[test]
fn install_name_starting_with_dot_fails() {
    install_is_rejected(&["--name", ".hidden", "hello:1"], ".hidden");
}

#[test]
fn install_existing_name_fails_and_keeps_the_first() {
    let s = Socle::new();
    let port = free_port();
    install_hello(&s, "twice", port);
    let before = s.snapshot();
    let err = s.fails(&[
        "install",
        "--name",
        "twice",
        "--set",
        "RECEIVER=other",
        "hello:1",
    ]);
    assert!(err.contains("twice"), "{err}");
    s.assert_unchanged(&before);
    let conf = read(&s.on_host("/etc/hello/twice.conf"));
    assert!(conf.contains("RECEIVER=test\n"), "{conf}");
    assert_eq!(s.json(&["list", "--all"]).as_array().unwrap().len(), 1);
}

/// A host file of the image's `hostfs` that exists on the host already (an
/// admin's file, another tool's) makes install fail; the file is untouched.
#[test]
fn install_never_overwrites_a_host_file_it_did_not_write() {
    let s = Socle::new();
    s.pull_hello();
    let conf = s.on_host("/etc/hello/mine.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(&conf, "the admin's own file\n").unwrap();
    let before = s.snapshot();
    let err = s.fails(&[
        "install",
        "--name",
        "mine",
        "--set",
        "PORT=1",
        "--set",
        "RECEIVER=x",
        "hello:1",
    ]);
    assert!(err.contains("/etc/hello/mine.conf"), "{err}");
    assert!(err.contains("already exists"), "{err}");
    s.assert_unchanged(&before);
    assert_eq!(read(&conf), "the admin's own file\n");
}

#[test]
fn uninstall_unknown_name_fails() {
    let s = Socle::new();
    s.pull_hello();
    let before = s.snapshot();
    let err = s.fails(&["uninstall", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    s.assert_unchanged(&before);
}

#[test]
fn a_second_run_waits_for_the_lock() {
    let s = Socle::new();
    // Build the fixtures first: the lock is held for a few seconds only.
    let source = oci_archive(&fixtures().oci_archive);
    let state = s.root().join("state");
    fs::create_dir_all(&state).unwrap();
    let ready = s.root().join("holder-ready");
    // Another "socle" holds the state lock for a moment.
    let mut holder = Command::new("flock")
        .arg(state.join("lock"))
        .args(["-c", &format!("touch {}; sleep 3", path_str(&ready))])
        .spawn()
        .expect("flock(1) runs");
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.exists(), "the lock holder did not start");
    let (_, stderr) = s.ok_with_stderr(&["pull", &source]);
    assert!(
        stderr.contains("Waiting for another socle run"),
        "expected a waiting message:\n{stderr}"
    );
    holder.wait().unwrap();
    assert!(s.ok(&["images", "list"]).contains("hello"));
}
