//! Tier 2: hostile images. Layers crafted with Python's `tarfile` and
//! assembled by umoci (independent tools, not socle's own tar code) try to
//! make socle write, link or delete outside the image's root file system:
//! through a symlink an earlier layer put there, through whiteouts and
//! opaque markers under such a symlink, through hardlinks, or with whiteout
//! names that are not file names. Each test checks that a sentinel
//! directory outside the state dir is exactly as it was (content, inode,
//! link count) and that the rootfs holds what OCI says it should.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str, tool, Socle};
use serde_json::{json, Value};

/// One tar entry, as the Python builder takes it.
fn file(path: &str, data: &str) -> Value {
    json!({"path": path, "type": "file", "data": data})
}
fn dir(path: &str) -> Value {
    json!({"path": path, "type": "dir"})
}
fn dir_mode(path: &str, mode: u32) -> Value {
    json!({"path": path, "type": "dir", "mode": mode})
}
fn symlink(path: &str, target: &str) -> Value {
    json!({"path": path, "type": "symlink", "target": target})
}
fn hardlink(path: &str, target: &str) -> Value {
    json!({"path": path, "type": "hardlink", "target": target})
}

const TAR_BUILDER: &str = r#"
import json, sys, tarfile, io
spec = json.load(open(sys.argv[1]))
with tarfile.open(sys.argv[2], "w", format=tarfile.PAX_FORMAT) as t:
    for e in spec:
        i = tarfile.TarInfo(e["path"])
        i.uid = i.gid = 0
        i.mtime = 0
        data = None
        if e["type"] == "dir":
            i.type = tarfile.DIRTYPE
            i.mode = e.get("mode", 0o755)
        elif e["type"] == "file":
            data = e["data"].encode()
            i.size = len(data)
            i.mode = 0o644
        elif e["type"] == "symlink":
            i.type = tarfile.SYMTYPE
            i.linkname = e["target"]
            i.mode = 0o777
        elif e["type"] == "hardlink":
            i.type = tarfile.LNKTYPE
            i.linkname = e["target"]
            i.mode = 0o644
        t.addfile(i, io.BytesIO(data) if data is not None else None)
"#;

/// A temporary "host" directory outside socle's environment, with a file,
/// a subdirectory and a file in it: what a hostile image aims at.
struct Sentinel {
    tmp: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let tmp = tempfile::Builder::new()
            .prefix("socle-sentinel-")
            .tempdir()
            .unwrap();
        let d = tmp.path().join("hostdir");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("secret"), "host secret\n").unwrap();
        fs::write(d.join("x"), "host x\n").unwrap();
        fs::write(d.join("file"), "host file\n").unwrap();
        fs::write(d.join("sub/keep"), "host keep\n").unwrap();
        Sentinel { tmp }
    }

    /// The directory hostile images point at.
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("hostdir")
    }

    /// Everything about the sentinel tree a write, link or delete changes.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            let m = fs::symlink_metadata(&d).unwrap();
            out.push(format!(
                "{}\tdir\t{:o}\t{}\t{}",
                d.display(),
                m.mode(),
                m.ino(),
                m.nlink()
            ));
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else {
                    out.push(format!(
                        "{}\t{:o}\t{}\t{}\t{}\t{:?}",
                        p.display(),
                        m.mode(),
                        m.ino(),
                        m.nlink(),
                        m.mtime_nsec(),
                        fs::read(&p).unwrap()
                    ));
                }
            }
        }
        out.sort();
        out
    }
}

/// Builds an OCI layout `DIR/NAME` holding image `NAME:t` with one layer
/// per entry list (tars by Python's tarfile, assembled by umoci) and
/// returns the `oci:` reference socle pulls.
fn image(root: &Path, name: &str, layers: &[Vec<Value>]) -> String {
    let work = root.join(format!("{name}-build"));
    fs::create_dir_all(&work).unwrap();
    let builder = work.join("mktar.py");
    fs::write(&builder, TAR_BUILDER).unwrap();
    let layout = root.join(name);
    let image = format!("{}:t", path_str(&layout));
    tool(Command::new("umoci").args(["init", "--layout", &path_str(&layout)]));
    tool(Command::new("umoci").args(["new", "--image", &image]));
    for (n, entries) in layers.iter().enumerate() {
        let spec = work.join(format!("layer{n}.json"));
        let tar = work.join(format!("layer{n}.tar"));
        fs::write(&spec, serde_json::to_vec(entries).unwrap()).unwrap();
        tool(Command::new("python3").args([&builder, &spec, &tar]));
        tool(Command::new("umoci").args(["raw", "add-layer", "--image", &image, &path_str(&tar)]));
    }
    tool(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/true"]));
    format!("oci:{image}")
}

/// A symlink target that climbs from anywhere to `/` and then down to `to`.
fn relative_to_root(to: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(40),
        path_str(to).trim_start_matches('/')
    )
}

/// Pulls `reference` (as `NAME:t`), runs `images info` and `install` on it,
/// checking the sentinel after each, and returns the installed rootfs.
fn pull_info_install(s: &Socle, sentinel: &Sentinel, reference: &str, name: &str) -> PathBuf {
    let before = sentinel.state();
    s.ok(&["pull", reference]);
    assert_eq!(sentinel.state(), before, "pull changed the host directory");
    let image = format!("{name}:t");
    let info = s.json(&["images", "info", &image]);
    assert_eq!(info["has_exports"], false, "{info:#}");
    assert_eq!(
        sentinel.state(),
        before,
        "images info changed the host directory"
    );
    s.ok(&["install", "--name", name, &image]);
    assert_eq!(
        sentinel.state(),
        before,
        "install changed the host directory"
    );
    s.slot(name, 0).join("rootfs")
}

fn assert_real_dir(p: &Path) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.is_dir(), "{} should be a directory: {m:?}", p.display());
}

/// A regular file with this content, a hardlink into the store (never a
/// copy, never a host file).
fn assert_store_file(p: &Path, content: &str) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.is_file(), "{} should be a file: {m:?}", p.display());
    assert_eq!(fs::read_to_string(p).unwrap(), content, "{}", p.display());
    assert!(m.nlink() >= 2, "{} is not linked to the store", p.display());
}

fn names_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A directory in an upper layer where a lower layer has a symlink; the
/// symlink's target is made from the sentinel's host directory.
fn dir_over_symlink(name: &str, target: impl FnOnce(&Path) -> String) {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        name,
        &[
            vec![
                symlink("link", &target(&sentinel.dir())),
                file("base", "base\n"),
            ],
            vec![dir("link"), file("link/x", "from the image\n")],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, name);
    assert_real_dir(&rootfs.join("link"));
    assert_eq!(names_in(&rootfs.join("link")), ["x"]);
    assert_store_file(&rootfs.join("link/x"), "from the image\n");
    assert_store_file(&rootfs.join("base"), "base\n");
}

#[test]
fn directory_over_absolute_symlink_stays_in_the_rootfs() {
    dir_over_symlink("absdir", path_str);
}

#[test]
fn directory_over_relative_symlink_stays_in_the_rootfs() {
    dir_over_symlink("reldir", relative_to_root);
}

#[test]
fn directory_over_symlink_to_a_missing_path_is_plain() {
    dir_over_symlink("missing", |_| "/nonexistent/socle-hostile".to_string());
}

#[test]
fn whiteout_through_a_symlink_deletes_nothing_on_the_host() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "whsym",
        &[
            vec![symlink("link", &path_str(&sentinel.dir()))],
            vec![
                dir("link"),
                file("link/.wh.secret", ""),
                file("other", "o\n"),
            ],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "whsym");
    assert!(sentinel.dir().join("secret").is_file());
    // The whiteout hid nothing below (there is no directory `link` there),
    // and the layer's own `link/` replaced the symlink.
    assert_real_dir(&rootfs.join("link"));
    assert!(names_in(&rootfs.join("link")).is_empty());
    assert_store_file(&rootfs.join("other"), "o\n");
}

#[test]
fn whiteout_under_a_symlink_without_a_directory_keeps_the_symlink() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let target = path_str(&sentinel.dir());
    // The tar names `link/.wh.secret` without `link/`: a whiteout looks for
    // a directory `link` in the layers below, finds a symlink, and hides
    // nothing; the symlink stays as the image made it.
    let reference = image(
        &s.inputs(),
        "whsym2",
        &[
            vec![symlink("link", &target), file("keep", "k\n")],
            vec![file("link/.wh.secret", "")],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "whsym2");
    assert!(sentinel.dir().join("secret").is_file());
    assert_eq!(fs::read_link(rootfs.join("link")).unwrap(), sentinel.dir());
    assert_store_file(&rootfs.join("keep"), "k\n");
}

#[test]
fn opaque_marker_through_a_symlink_deletes_nothing_on_the_host() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "opqsym",
        &[
            vec![symlink("link", &path_str(&sentinel.dir()))],
            vec![
                dir("link"),
                file("link/.wh..wh..opq", ""),
                file("link/new", "new\n"),
            ],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "opqsym");
    assert!(sentinel.dir().join("secret").is_file());
    assert!(sentinel.dir().join("sub/keep").is_file());
    assert_real_dir(&rootfs.join("link"));
    assert_eq!(names_in(&rootfs.join("link")), ["new"]);
    assert_store_file(&rootfs.join("link/new"), "new\n");
}

#[test]
fn replacements_whiteouts_and_opaque_directories_follow_oci() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "oci",
        &[
            vec![
                dir("d1"),
                file("d1/a", "a\n"),
                dir("d1/deep"),
                file("d1/deep/b", "b\n"),
                file("f1", "f1 file\n"),
                dir("d2"),
                file("d2/x", "x\n"),
                dir("d3"),
                file("d3/old1", "old1\n"),
                dir("d3/olddir"),
                file("d3/olddir/y", "y\n"),
                dir_mode("tmp", 0o1777),
                dir_mode("perm", 0o755),
                file("perm/p", "p\n"),
                file("gone", "gone\n"),
                symlink("sl", "d1"),
            ],
            vec![
                // A file replaces the whole directory d1.
                file("d1", "d1 is a file now\n"),
                // A directory replaces the file f1.
                dir("f1"),
                file("f1/inner", "inner\n"),
                // A whiteout removes a directory and everything in it.
                file(".wh.d2", ""),
                file(".wh.gone", ""),
                // Opaque: d3 keeps only what this layer puts there.
                dir("d3"),
                file("d3/.wh..wh..opq", ""),
                file("d3/new", "new\n"),
                // Described directories take this layer's metadata; tmp is
                // only a parent here and keeps its mode.
                file("tmp/t", "t\n"),
                dir_mode("perm", 0o700),
                // A symlink replaced by a symlink.
                symlink("sl", "f1"),
            ],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "oci");
    assert_store_file(&rootfs.join("d1"), "d1 is a file now\n");
    assert_real_dir(&rootfs.join("f1"));
    assert_eq!(names_in(&rootfs.join("f1")), ["inner"]);
    assert_store_file(&rootfs.join("f1/inner"), "inner\n");
    assert!(fs::symlink_metadata(rootfs.join("d2")).is_err());
    assert!(fs::symlink_metadata(rootfs.join("gone")).is_err());
    assert_eq!(names_in(&rootfs.join("d3")), ["new"]);
    assert_store_file(&rootfs.join("d3/new"), "new\n");
    let mode = |p: &str| {
        fs::symlink_metadata(rootfs.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(names_in(&rootfs.join("tmp")), ["t"]);
    assert_eq!(mode("perm"), 0o700);
    assert_store_file(&rootfs.join("perm/p"), "p\n");
    assert_eq!(fs::read_link(rootfs.join("sl")).unwrap(), Path::new("f1"));
    // No whiteout marker reaches the rootfs.
    assert!(common::all_paths(&rootfs).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".wh.")));
}

/// An image whose second layer holds the whiteout `NAME` is refused at
/// pull, with an error naming the entry, and the store is as it was.
fn odd_whiteout(entry: &str) {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "odd",
        &[
            vec![dir("etc"), file("etc/a", "a\n")],
            vec![dir("etc"), file(&format!("etc/{entry}"), "")],
        ],
    );
    // An empty store to compare with.
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let host_before = sentinel.state();
    let err = s.fails(&["pull", &reference]);
    assert!(err.contains(&format!("etc/{entry}")), "{err}");
    assert!(err.contains("whiteout"), "{err}");
    s.assert_unchanged(&before);
    assert_eq!(sentinel.state(), host_before);
}

#[test]
fn whiteout_of_dot_is_refused() {
    odd_whiteout(".wh..");
}

#[test]
fn whiteout_of_dot_dot_is_refused() {
    odd_whiteout(".wh...");
}

#[test]
fn whiteout_of_nothing_is_refused() {
    odd_whiteout(".wh.");
}

#[test]
fn symlink_chain_to_the_host_is_not_followed() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "chain",
        &[
            vec![symlink("a", "b"), symlink("b", &path_str(&sentinel.dir()))],
            vec![dir("a"), file("a/file", "image file\n")],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "chain");
    assert_real_dir(&rootfs.join("a"));
    assert_eq!(names_in(&rootfs.join("a")), ["file"]);
    assert_store_file(&rootfs.join("a/file"), "image file\n");
    // b is still the image's symlink (pointing out, as the image says; it
    // is only a name inside the rootfs).
    assert_eq!(fs::read_link(rootfs.join("b")).unwrap(), sentinel.dir());
}

#[test]
fn hardlink_through_a_symlink_to_the_host_is_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "hlink",
        &[
            vec![symlink("link", &path_str(&sentinel.dir()))],
            vec![hardlink("h", "link/secret")],
        ],
    );
    // An empty store to compare with.
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let host_before = sentinel.state();
    let err = s.fails(&["pull", &reference]);
    assert!(err.contains("link/secret"), "{err}");
    s.assert_unchanged(&before);
    assert_eq!(sentinel.state(), host_before);
}

#[test]
fn hardlink_through_a_symlink_of_the_same_layer_is_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "hlink2",
        &[
            vec![file("base", "b\n")],
            vec![
                symlink("link", &path_str(&sentinel.dir())),
                hardlink("h", "link/secret"),
            ],
        ],
    );
    // An empty store to compare with.
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let host_before = sentinel.state();
    let err = s.fails(&["pull", &reference]);
    assert!(err.contains("link/secret"), "{err}");
    s.assert_unchanged(&before);
    assert_eq!(sentinel.state(), host_before);
}

/// `exports/hostfs` links are installed as the file they name: one that
/// leaves `exports/hostfs` (absolute, or `..` past it) would copy a host
/// file, a secret, into a host file the image chose. Install refuses the
/// image, names the link and writes nothing.
#[test]
fn hostfs_link_to_a_host_file_is_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let secret = sentinel.dir().join("secret");
    for (name, target) in [
        ("abslink", path_str(&secret)),
        ("rellink", relative_to_root(&secret)),
    ] {
        let reference = image(
            &s.inputs(),
            name,
            &[vec![
                dir("exports"),
                file("exports/manifest.json", "{}"),
                dir("exports/hostfs"),
                dir("exports/hostfs/etc"),
                symlink("exports/hostfs/etc/stolen.conf", &target),
            ]],
        );
        let before = sentinel.state();
        s.ok(&["pull", &reference]);
        let err = s.fails(&["install", "--name", name, &format!("{name}:t")]);
        assert!(err.contains("exports/hostfs/etc/stolen.conf"), "{err}");
        assert!(err.contains("never follows a link"), "{err}");
        assert!(!s.on_host("/etc/stolen.conf").exists());
        assert!(!s.containers().join(name).exists());
        assert_eq!(
            sentinel.state(),
            before,
            "install changed the host directory"
        );
    }
}
