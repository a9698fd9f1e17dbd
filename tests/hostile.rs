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
fn device(path: &str, kind: &str, major: u32, minor: u32) -> Value {
    json!({"path": path, "type": kind, "major": major, "minor": minor})
}
fn fifo(path: &str) -> Value {
    json!({"path": path, "type": "fifo"})
}

const TAR_BUILDER: &str = r#"
import json, sys, tarfile, io
spec = json.load(open(sys.argv[1]))
with tarfile.open(sys.argv[2], "w", format=tarfile.PAX_FORMAT,
                  errors="surrogateescape") as t:
    for e in spec:
        # `path_hex`: a name that is not UTF-8, as raw bytes.
        path = (bytes.fromhex(e["path_hex"]).decode("utf-8", "surrogateescape")
                if "path_hex" in e else e["path"])
        i = tarfile.TarInfo(path)
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
        elif e["type"] in ("chardev", "blockdev"):
            i.type = tarfile.CHRTYPE if e["type"] == "chardev" else tarfile.BLKTYPE
            i.devmajor, i.devminor = e["major"], e["minor"]
            i.mode = 0o666
        elif e["type"] == "fifo":
            i.type = tarfile.FIFOTYPE
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
    odd_whiteout_entry(file(&format!("etc/{entry}"), ""), entry);
}

/// [`odd_whiteout`] for any tar entry at `etc/ENTRY`.
fn odd_whiteout_entry(tar_entry: Value, entry: &str) {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "odd",
        &[
            vec![dir("etc"), file("etc/a", "a\n")],
            vec![dir("etc"), tar_entry],
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
fn aufs_metadata_is_not_a_whiteout() {
    odd_whiteout(".wh..wh.plnk");
}

#[test]
fn an_opaque_marker_directory_is_refused() {
    odd_whiteout_entry(dir("etc/.wh..wh..opq"), ".wh..wh..opq");
}

#[test]
fn a_file_under_an_opaque_marker_is_refused() {
    odd_whiteout(".wh..wh..opq/x");
}

#[test]
fn a_file_under_a_whiteout_is_refused() {
    odd_whiteout(".wh.a/x");
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

/// Pulls an image that must be refused and checks that the error names
/// `entry`, and that neither the store nor the host directory changed.
fn refused(s: &Socle, sentinel: &Sentinel, reference: &str, entry: &str) -> String {
    // An initialized store to compare with.
    s.ok(&["images", "list"]);
    let before = s.snapshot();
    let host_before = sentinel.state();
    let err = s.fails(&["pull", reference]);
    assert!(
        err.contains(entry),
        "the error should name {entry:?}: {err}"
    );
    s.assert_unchanged(&before);
    assert_eq!(sentinel.state(), host_before);
    err
}

#[test]
fn dot_dot_entries_are_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let escape = relative_to_root(&sentinel.dir().join("x"));
    for (n, entry) in [
        file(&escape, "overwritten\n"),
        file("a/../../escape", "e\n"),
        dir("../up"),
        symlink("../evil-link", "/"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = entry["path"].as_str().unwrap().to_string();
        let reference = image(
            &s.inputs(),
            &format!("dotdot{n}"),
            &[vec![file("base", "b\n")], vec![entry]],
        );
        let err = refused(&s, &sentinel, &reference, &path);
        assert!(err.contains("escapes the layer root"), "{err}");
    }
}

#[test]
fn absolute_entry_paths_land_inside_the_rootfs() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let target = path_str(&sentinel.dir().join("x"));
    let reference = image(
        &s.inputs(),
        "abspath",
        &[
            vec![file("base", "b\n")],
            vec![file(&target, "from the image\n")],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "abspath");
    assert_store_file(
        &rootfs.join(target.trim_start_matches('/')),
        "from the image\n",
    );
    assert_eq!(
        fs::read_to_string(sentinel.dir().join("x")).unwrap(),
        "host x\n"
    );
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let secret = sentinel.dir().join("secret");
    for (n, target) in [
        path_str(&secret),
        relative_to_root(&secret),
        // A file of the layer below: a hardlink names only this layer.
        "base".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let reference = image(
            &s.inputs(),
            &format!("hlout{n}"),
            &[vec![file("base", "b\n")], vec![hardlink("h", &target)]],
        );
        let err = refused(&s, &sentinel, &reference, "hardlink");
        assert!(err.contains("not earlier in this layer"), "{err}");
    }
}

/// Device nodes and fifos are never created: runc makes the container's
/// /dev, and a block device of the host's disk in an image is an attack.
#[test]
fn device_nodes_and_fifos_are_not_created() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "devices",
        &[
            vec![dir("dev"), file("base", "b\n")],
            vec![
                device("dev/disk", "blockdev", 8, 0),
                device("dev/mem", "chardev", 1, 1),
                device("mem", "chardev", 1, 1),
                fifo("pipe"),
                file("after", "a\n"),
            ],
        ],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "devices");
    for p in ["dev/disk", "dev/mem", "mem", "pipe"] {
        assert!(
            fs::symlink_metadata(rootfs.join(p)).is_err(),
            "{p} was created"
        );
    }
    assert_store_file(&rootfs.join("after"), "a\n");
    assert_store_file(&rootfs.join("base"), "b\n");
}

/// A tar may name one path twice: the later entry wins, whatever the types.
#[test]
fn duplicate_entries_the_later_one_wins() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let reference = image(
        &s.inputs(),
        "dups",
        &[vec![
            file("twice", "first\n"),
            file("twice", "second\n"),
            dir("dir-then-file"),
            file("dir-then-file/inner", "i\n"),
            file("dir-then-file", "a file now\n"),
            file("file-then-dir", "f\n"),
            dir("file-then-dir"),
            file("file-then-dir/inner", "inner\n"),
            symlink("link-then-file", &path_str(&sentinel.dir().join("x"))),
            file("link-then-file", "not through the link\n"),
        ]],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "dups");
    assert_store_file(&rootfs.join("twice"), "second\n");
    assert_store_file(&rootfs.join("dir-then-file"), "a file now\n");
    assert_real_dir(&rootfs.join("file-then-dir"));
    assert_store_file(&rootfs.join("file-then-dir/inner"), "inner\n");
    assert_store_file(&rootfs.join("link-then-file"), "not through the link\n");
}

#[test]
fn names_that_are_not_utf8_stay_in_the_rootfs() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let mut odd = file("", "latin-1 name\n");
    // "caf\xe9": not UTF-8.
    odd["path_hex"] = json!("636166e9");
    let reference = image(&s.inputs(), "nonutf8", &[vec![odd, file("plain", "p\n")]]);
    let rootfs = pull_info_install(&s, &sentinel, &reference, "nonutf8");
    let names = names_in(&rootfs);
    let cafe: Vec<_> = names.iter().filter(|n| n.starts_with("caf")).collect();
    assert_eq!(cafe.len(), 1, "{names:?}");
    assert_store_file(&rootfs.join(cafe[0]), "latin-1 name\n");
    assert_store_file(&rootfs.join("plain"), "p\n");
}

#[test]
fn a_name_longer_than_the_file_system_allows_is_refused() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let long = format!("d/{}", "n".repeat(300));
    let reference = image(
        &s.inputs(),
        "longname",
        &[vec![dir("d"), file(&long, "x\n")]],
    );
    refused(&s, &sentinel, &reference, &"n".repeat(300));
}

#[test]
fn a_deep_path_stays_in_the_rootfs() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    // 40 levels of 100 bytes: about 4 KB, PATH_MAX, without leaving the tree.
    let deep = vec!["d".repeat(100); 40].join("/");
    let reference = image(
        &s.inputs(),
        "deep",
        &[vec![file(&format!("{deep}/leaf"), "leaf\n")]],
    );
    let rootfs = pull_info_install(&s, &sentinel, &reference, "deep");
    let mut dir = rootfs.clone();
    for _ in 0..40 {
        dir = dir.join("d".repeat(100));
        assert_real_dir(&dir);
    }
}

/// The same hostile layers reach a running system through `update`: the new
/// slot's rootfs is composed as safely as an install's.
#[test]
fn update_to_a_hostile_image_stays_in_the_rootfs() {
    let s = Socle::new();
    let sentinel = Sentinel::new();
    let benign = image(&s.inputs(), "benign", &[vec![file("base", "b\n")]]);
    s.ok(&["pull", &benign]);
    s.ok(&["install", "--name", "upd", "benign:t"]);
    let hostile = image(
        &s.inputs(),
        "hostileupd",
        &[
            vec![symlink("link", &path_str(&sentinel.dir()))],
            vec![
                dir("link"),
                file("link/x", "from the image\n"),
                file("link/.wh.secret", ""),
            ],
        ],
    );
    let before = sentinel.state();
    s.ok(&["pull", &hostile]);
    s.ok(&["update", "upd", "--rebase", "hostileupd:t"]);
    assert_eq!(
        sentinel.state(),
        before,
        "update changed the host directory"
    );
    let rootfs = s.slot("upd", 1).join("rootfs");
    assert_real_dir(&rootfs.join("link"));
    assert_eq!(names_in(&rootfs.join("link")), ["x"]);
    assert_store_file(&rootfs.join("link/x"), "from the image\n");
}
