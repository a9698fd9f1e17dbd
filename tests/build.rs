//! The project's own image builder (`scripts/build-image --builder socle`,
//! which packs with `socle image pack`): reproducible, sharing the base
//! layer, and readable by independent tools (oci-image-tool, skopeo,
//! podman) as well as by socle.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{path_str, repo_root, tool, Socle};
use serde_json::Value;

/// Builds `images/NAME` with socle's packer into the OCI layout `layout`
/// (ref: the image's tag), returns the manifest digest.
fn build(name: &str, extra: &[&str], layout: &Path) -> String {
    let digest_file = layout.with_extension("digest");
    let mut cmd = Command::new(repo_root().join("scripts/build-image"));
    cmd.env("SOCLE_BIN", env!("CARGO_BIN_EXE_socle"))
        .args(["--builder", "socle", "--digest-file"])
        .arg(&digest_file)
        .args(extra)
        .arg(repo_root().join("images").join(name))
        .arg(format!("oci:{}", layout.display()))
        .stdin(Stdio::null());
    let out = cmd.output().expect("running scripts/build-image");
    assert!(
        out.status.success(),
        "build-image --builder socle {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(&digest_file).unwrap().trim().to_string()
}

fn blob(layout: &Path, digest: &str) -> Value {
    let p = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&fs::read(&p).unwrap()).unwrap()
}

fn layer_digests(layout: &Path, manifest: &str) -> Vec<String> {
    blob(layout, manifest)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("socle-build-")
        .tempdir()
        .unwrap()
}

#[test]
fn builds_are_reproducible_and_images_share_the_base_layer() {
    let d = tmp();
    let first = build("hello", &[], &d.path().join("a"));
    let second = build("hello", &[], &d.path().join("b"));
    assert_eq!(first, second, "two builds of the same definition");
    assert_eq!(
        fs::read(
            d.path()
                .join("a/blobs/sha256")
                .join(first.trim_start_matches("sha256:"))
        )
        .unwrap(),
        fs::read(
            d.path()
                .join("b/blobs/sha256")
                .join(second.trim_start_matches("sha256:"))
        )
        .unwrap(),
    );
    let v2 = build("hello", &["--version", "2"], &d.path().join("c"));
    assert_ne!(v2, first, "a bumped version is another image");

    let etcd = build("etcd", &[], &d.path().join("etcd"));
    let hello_layers = layer_digests(&d.path().join("a"), &first);
    let etcd_layers = layer_digests(&d.path().join("etcd"), &etcd);
    assert_eq!(hello_layers.len(), 2);
    assert_eq!(
        hello_layers[0], etcd_layers[0],
        "hello and etcd share the busybox base layer"
    );
    assert_eq!(etcd, build("etcd", &[], &d.path().join("etcd2")));

    // The config carries what image.conf says, with fixed dates.
    let config_digest = blob(&d.path().join("a"), &first)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config = blob(&d.path().join("a"), &config_digest);
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["config"]["Labels"]["version"], "1");
    assert_eq!(config["config"]["Cmd"][0], "/usr/bin/hello-greeter");
}

#[test]
fn built_images_validate_and_import_with_other_tools() {
    let d = tmp();
    let layout = d.path().join("layout");
    let digest = build("hello", &[], &layout);

    let out = tool(
        Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref", "name=1"])
            .arg(&layout),
    );
    assert!(out.contains("Validation succeeded"), "{out}");

    let inspect: Value = serde_json::from_str(&tool(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:1", layout.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Labels"]["name"], "hello");

    // podman, with a storage of its own (vfs: no mounts left behind). It
    // names the image after the layout's path, which must be lowercase.
    let lower = PathBuf::from(format!("/tmp/socle-build-podman-{}", std::process::id()));
    let _ = fs::remove_dir_all(&lower);
    tool(Command::new("cp").arg("-a").arg(&layout).arg(&lower));
    let storage = d.path().join("podman");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    tool(&mut podman(&[
        "pull",
        "-q",
        &format!("oci:{}:1", lower.display()),
    ]));
    let _ = fs::remove_dir_all(&lower);
    let config = blob(&layout, &digest)["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let ids = tool(&mut podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}}",
    ]));
    assert!(ids.contains(&config), "podman lists {ids}, not {config}");
    tool(&mut podman(&["rmi", "-a", "-f"]));
}

#[test]
fn socle_pulls_and_installs_what_it_built() {
    let d = tmp();
    let layout = d.path().join("layout");
    let digest = build("hello", &[], &layout);
    let s = Socle::new();
    let pulled = s.json(&[
        "pull",
        "--name",
        "built:1",
        &format!("oci:{}:1", path_str(&layout)),
    ]);
    assert_eq!(pulled["image"]["id"], digest.as_str());
    s.ok(&[
        "install",
        "--name",
        "built",
        "--set",
        "PORT=8099",
        "built:1",
    ]);
    let greeter: PathBuf = s.slot("built", 0).join("rootfs/usr/bin/hello-greeter");
    assert!(greeter.is_file(), "{} is missing", greeter.display());
    let busybox = s.slot("built", 0).join("rootfs/bin/busybox");
    assert!(busybox.is_file());
}

#[test]
fn pack_refuses_bad_input_plainly() {
    let d = tmp();
    let s = Socle::new();
    let missing = d.path().join("nope");
    let e = s.fails(&[
        "image",
        "pack",
        "--layer",
        &path_str(&missing),
        "-o",
        &format!("oci:{}", path_str(&d.path().join("out"))),
    ]);
    assert!(e.contains("not a directory") && e.contains("nope"), "{e}");
    fs::create_dir_all(d.path().join("l")).unwrap();
    let e = s.fails(&[
        "image",
        "pack",
        "--layer",
        &path_str(&d.path().join("l")),
        "-o",
        "docker://registry.local/x:1",
    ]);
    assert!(
        e.contains("expected oci-archive:FILE[:REF] or oci:DIR[:REF]"),
        "{e}"
    );
    let e = s.fails(&[
        "image",
        "pack",
        "--layer",
        &path_str(&d.path().join("l")),
        "-o",
        &format!("oci-archive:{}/no/such/dir/x.tar", path_str(d.path())),
    ]);
    assert!(e.contains("no directory"), "{e}");
    assert!(!d.path().join("out").exists());
}

/// flanneld and kube-apiserver are not in Debian and their release URLs are
/// not pinned yet: without `--binary` the build names what is missing and
/// how to give it, and writes nothing (it never substitutes a binary).
#[test]
fn upstream_images_without_their_binary_stop_and_say_so() {
    for (image, binary, var) in [
        ("flannel", "flanneld", "BINARY_FLANNELD"),
        ("kube-apiserver", "kube-apiserver", "BINARY_KUBE_APISERVER"),
    ] {
        let d = tmp();
        let layout = d.path().join("out");
        let out = Command::new(repo_root().join("scripts/build-image"))
            .env("SOCLE_BIN", env!("CARGO_BIN_EXE_socle"))
            .env_remove(var)
            .env("SOCLE_UPSTREAM_CACHE", d.path().join("cache"))
            .args(["--builder", "socle"])
            .arg(repo_root().join("images").join(image))
            .arg(format!("oci:{}", layout.display()))
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/build-image");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{image} built without {binary}");
        for needle in [
            format!("{binary} binary not available"),
            format!("--binary {binary}=FILE"),
            var.to_string(),
            format!("The image {image} is not built"),
        ] {
            assert!(err.contains(&needle), "{image}: no {needle:?} in:\n{err}");
        }
        assert!(
            !layout.exists(),
            "{image}: {} was written",
            layout.display()
        );
    }
}
