//! Tier 2: the store life cycle (images list/tag/delete/prune/verify/update)
//! as a user sees it: the real binary, a real ostree store (`bare` as
//! root), images built by umoci and skopeo, `--systemd none`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_tree, fixtures, oci_archive, path_str, sha256_hex, Socle};
use serde_json::{json, Value};

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..12]
}

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// `images list --json` rows by name.
fn rows(s: &Socle) -> Vec<Value> {
    s.json(&["images", "list"])
        .as_array()
        .expect("images list --json is an array")
        .clone()
}

fn row(s: &Socle, name: &str) -> Value {
    rows(s)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in images list"))
}

fn names(s: &Socle) -> Vec<String> {
    rows(s)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// `images list -a --json` layers: digest -> used_by.
fn layers(s: &Socle) -> Vec<(String, Vec<String>)> {
    let v = s.json(&["images", "list", "-a"]);
    v["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("images list -a --json has no layers: {v:#}"))
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["used_by"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Layer refs as ostree itself lists them.
fn layer_refs(s: &Socle) -> BTreeSet<String> {
    ostree(s, &["refs"])
        .lines()
        .filter_map(|r| r.strip_prefix("ociimage/"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|h| format!("sha256:{h}"))
        .collect()
}

fn ostree(s: &Socle, args: &[&str]) -> String {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", path_str(&s.repo())))
        .args(args)
        .output()
        .expect("running ostree");
    assert!(
        out.status.success(),
        "ostree {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The store object of `path` in the layer `digest` (`objects/XX/REST.file`).
fn object_of(s: &Socle, digest: &str, path: &str) -> Option<PathBuf> {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", path_str(&s.repo())))
        .args(["ls", "-C", &format!("ociimage/{}", hex(digest)), path])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    // -00755 0 0 1234 CHECKSUM /usr/bin/hello-greeter
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let checksum = line.split_whitespace().nth(4)?.to_string();
    Some(
        s.repo()
            .join("objects")
            .join(&checksum[..2])
            .join(format!("{}.file", &checksum[2..])),
    )
}

fn pull_v1_and_v2(s: &Socle) {
    s.pull_hello();
    s.ok(&["pull", &oci_archive(&fixtures().v2_archive)]);
}

/// Installs hello:1 as `web` (files only: `--systemd none`).
fn install_web(s: &Socle) {
    s.ok(&["install", "--name", "web", "--set", "PORT=9301", "hello:1"]);
}

// ---- list: sizes and sharing ------------------------------------------------------

#[test]
fn list_shows_own_and_shared_sizes_and_the_layers() {
    let s = Socle::new();
    pull_v1_and_v2(&s);
    let (v1, v2) = (row(&s, "hello:1"), row(&s, "hello:2"));
    for r in [&v1, &v2] {
        let (size, own, shared) = (
            r["size"].as_u64().unwrap(),
            r["own_size"].as_u64().unwrap(),
            r["shared_size"].as_u64().unwrap(),
        );
        assert_eq!(size, own + shared, "{r:#}");
        assert!(own > 0 && shared > 0, "{r:#}");
        assert_eq!(r["layers"].as_array().unwrap().len(), 2, "{r:#}");
    }
    // The busybox base layer is the shared part, the same for both.
    assert_eq!(v1["layers"][0], v2["layers"][0]);
    assert_ne!(v1["layers"][1], v2["layers"][1]);
    assert_eq!(v1["shared_size"], v2["shared_size"]);

    let all = s.json(&["images", "list", "-a"]);
    assert_eq!(all["images"].as_array().unwrap().len(), 2, "{all:#}");
    let l = layers(&s);
    assert_eq!(l.len(), 3, "{all:#}");
    let base = v1["layers"][0].as_str().unwrap();
    let base_row = l.iter().find(|(d, _)| d == base).unwrap();
    assert_eq!(base_row.1, ["hello:1", "hello:2"]);
    let base_size = all["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == base)
        .unwrap()["size"]
        .as_u64()
        .unwrap();
    assert_eq!(v1["shared_size"].as_u64().unwrap(), base_size);

    let table = s.ok(&["images", "list"]);
    let header = table.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("Disk: 3 layers stored once"), "{table}");
    assert!(table.contains("shared layers save"), "{table}");
    assert!(table.contains("hardlinks"), "{table}");
    let table_a = s.ok(&["images", "list", "-a"]);
    assert!(table_a.contains("LAYER"), "{table_a}");
    assert!(table_a.contains(&base[7..19]), "{table_a}");
    assert!(table_a.contains("hello:1, hello:2"), "{table_a}");
}

#[test]
fn deployments_are_hardlinks_into_the_store() {
    let s = Socle::new();
    s.pull_hello();
    install_web(&s);
    let file = s.slot("web", 0).join("rootfs/usr/bin/hello-greeter");
    let meta = fs::metadata(&file).unwrap();
    assert!(meta.nlink() > 1, "{} has one link", file.display());
    let v1 = row(&s, "hello:1");
    let object = v1["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| object_of(&s, l.as_str().unwrap(), "/usr/bin/hello-greeter"))
        .expect("a layer has /usr/bin/hello-greeter");
    let obj_meta = fs::metadata(&object).unwrap();
    assert_eq!(
        (meta.dev(), meta.ino()),
        (obj_meta.dev(), obj_meta.ino()),
        "the deployment's file is not the store's object {}",
        object.display()
    );
}

// ---- tag ------------------------------------------------------------------------

#[test]
fn tag_then_install_by_the_new_name() {
    let s = Socle::new();
    pull_v1_and_v2(&s);
    let f = fixtures();
    let out = s.ok(&["images", "tag", "hello:1", "hello:stable"]);
    assert!(out.contains("Tagged hello:1"), "{out}");
    assert_eq!(row(&s, "hello:stable")["id"], f.v1_digest.as_str());
    // Tagging adds no layer.
    assert_eq!(layers(&s).len(), 3);
    let again = s.ok(&["images", "tag", "hello:1", "hello:stable"]);
    assert!(again.contains("already names"), "{again}");

    s.ok(&["install", "--name", "web", "hello:stable"]);
    let info: Value =
        serde_json::from_str(&fs::read_to_string(s.slot("web", 0).join("info")).unwrap()).unwrap();
    assert_eq!(info["image"], "hello:stable");
    assert_eq!(info["image-id"], f.v1_digest.as_str());

    // Moving a tag says what it named before; by id prefix works too.
    let moved = s.ok(&["images", "tag", &hex(&f.v2_digest)[..8], "hello:latest"]);
    assert!(moved.contains("Tagged hello:2"), "{moved}");
    let moved = s.ok(&["images", "tag", "hello:2", "hello:stable"]);
    assert!(moved.contains(short(&f.v1_digest)), "{moved}");
    assert_eq!(row(&s, "hello:stable")["id"], f.v2_digest.as_str());
}

#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let s = Socle::new();
    s.pull_hello();
    install_web(&s);
    let before = s.snapshot();
    for (args, want) in [
        (vec!["images", "tag", "nothere:1", "x:1"], "nothere:1"),
        (vec!["images", "tag", "hello:1", "Bad Name"], "Bad Name"),
        (
            vec!["images", "delete", "nothere:1"],
            "no image \"nothere:1\"",
        ),
        (
            vec!["images", "delete", "hello:1", "nothere:1"],
            "nothere:1",
        ),
        (vec!["images", "delete", "0000"], "at least 4 digits"),
        (vec!["images", "delete", "hello:1"], "container web"),
        (vec!["images", "verify", "nothere:1"], "nothere:1"),
        (vec!["images", "update", "nothere:1"], "nothere:1"),
        (vec!["images", "update", "Bad Name"], "Bad Name"),
    ] {
        let err = s.fails(&args);
        assert!(err.contains(want), "socle {}: {err}", args.join(" "));
        s.assert_unchanged(&before);
    }
    let usage = s.run(&["images", "update"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "images update needs NAME or --all"
    );
    s.assert_unchanged(&before);
}

// ---- delete ---------------------------------------------------------------------

#[test]
fn delete_is_refused_while_installed_and_forced_keeps_the_container() {
    let s = Socle::new();
    s.pull_hello();
    install_web(&s);
    let before = s.snapshot();
    let err = s.fails(&["images", "delete", "hello:1"]);
    for want in [
        "hello:1 is used by container web (current slot 0)",
        "uninstall web",
        "--force",
    ] {
        assert!(err.contains(want), "{err}");
    }
    s.assert_unchanged(&before);
    // By id too.
    let err = s.fails(&["images", "delete", &hex(&fixtures().v1_digest)[..12]]);
    assert!(err.contains("container web"), "{err}");
    s.assert_unchanged(&before);

    let out = s.ok(&["images", "delete", "--force", "hello:1"]);
    assert!(out.contains("Deleted hello:1"), "{out}");
    assert!(out.contains("container web"), "{out}");
    assert!(names(&s).is_empty());
    let list = s.json(&["list", "--all"]);
    assert_eq!(list[0]["name"], "web", "{list:#}");
    assert!(s
        .slot("web", 0)
        .join("rootfs/usr/bin/hello-greeter")
        .is_file());
    // The layers stay while web uses them, and say who holds them.
    let l = layers(&s);
    assert_eq!(l.len(), 2, "{l:?}");
    for (_, used_by) in &l {
        assert_eq!(used_by, &["container web (current slot 0)"]);
    }
    let pruned = s.json(&["images", "prune"]);
    assert_eq!(pruned["layers_removed"], json!([]), "{pruned:#}");
    assert_eq!(layer_refs(&s).len(), 2);

    // Once web is gone, prune frees them.
    s.ok(&["uninstall", "web"]);
    let pruned = s.json(&["images", "prune"]);
    assert_eq!(pruned["layers_removed"].as_array().unwrap().len(), 2);
    assert!(pruned["bytes_freed"].as_u64().unwrap() > 0, "{pruned:#}");
    assert!(layer_refs(&s).is_empty());
}

#[test]
fn delete_frees_the_layers_only_that_image_used() {
    let s = Socle::new();
    pull_v1_and_v2(&s);
    let v2 = row(&s, "hello:2");
    let own = v2["layers"][1].as_str().unwrap().to_string();
    let out = s.ok(&["images", "delete", "hello:2"]);
    assert!(out.contains("Deleted hello:2"), "{out}");
    assert!(out.contains("Removed 1 layer no image uses"), "{out}");
    assert!(out.contains(&own[7..19]), "{out}");
    assert!(out.contains("Freed"), "{out}");
    let refs = layer_refs(&s);
    assert_eq!(refs.len(), 2);
    assert!(!refs.contains(&own));
    // hello:1 still checks out whole.
    s.ok(&["images", "verify", "hello:1"]);
    install_web(&s);
}

#[test]
fn delete_of_an_id_with_two_names_needs_force() {
    let s = Socle::new();
    s.pull_hello();
    s.ok(&["images", "tag", "hello:1", "hello:stable"]);
    let prefix = &hex(&fixtures().v1_digest)[..10];
    let before = s.snapshot();
    let err = s.fails(&["images", "delete", prefix]);
    assert!(
        err.contains("under 2 names (hello:1, hello:stable)"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    s.assert_unchanged(&before);
    // One name of two: nothing to free.
    let out = s.ok(&["images", "delete", "hello:stable"]);
    assert!(out.contains("No layer freed"), "{out}");
    assert_eq!(names(&s), ["hello:1"]);
    s.ok(&["images", "tag", "hello:1", "hello:stable"]);
    let out = s.ok(&["images", "delete", "--force", prefix]);
    assert!(out.contains("Deleted hello:1") && out.contains("Deleted hello:stable"));
    assert!(names(&s).is_empty());
    assert!(layer_refs(&s).is_empty());
}

/// An OCI layout holding hello 1 under a manifest whose digest starts with
/// the same 4 hex digits as hello 1's: same config and layers, a nonce
/// annotation found by trying.
fn twin_layout(s: &Socle) -> PathBuf {
    let f = fixtures();
    let dir = s.inputs().join("twin");
    copy_tree(&f.oci_dir, &dir);
    let blob = |d: &str| dir.join("blobs/sha256").join(hex(d));
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob(&f.v1_digest)).unwrap()).unwrap();
    let want = &hex(&f.v1_digest)[..4];
    let (bytes, digest) = (0u64..)
        .find_map(|n| {
            manifest["annotations"] = json!({ "socle.test.nonce": n.to_string() });
            let bytes = serde_json::to_vec(&manifest).unwrap();
            let digest = sha256_hex(&bytes);
            (digest.starts_with(want) && digest != hex(&f.v1_digest)).then_some((bytes, digest))
        })
        .unwrap();
    fs::write(blob(&digest), &bytes).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{digest}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn delete_of_an_ambiguous_prefix_lists_the_images_and_changes_nothing() {
    let s = Socle::new();
    s.pull_hello();
    let twin = twin_layout(&s);
    s.ok(&[
        "pull",
        "--name",
        "twin:1",
        &format!("oci:{}:1", path_str(&twin)),
    ]);
    let twin_id = row(&s, "twin:1")["id"].as_str().unwrap().to_string();
    let v1 = &fixtures().v1_digest;
    assert_ne!(&twin_id, v1);
    let prefix = &hex(v1)[..4];
    assert!(hex(&twin_id).starts_with(prefix));

    let before = s.snapshot();
    let err = s.fails(&["images", "delete", prefix]);
    for want in [
        "is ambiguous",
        &format!("{} (hello:1)", short(v1)),
        &format!("{} (twin:1)", short(&twin_id)),
        "more digits",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    s.assert_unchanged(&before);
    // More digits pick one.
    s.ok(&["images", "delete", &hex(&twin_id)[..16]]);
    assert_eq!(names(&s), ["hello:1"]);
}

// ---- prune ----------------------------------------------------------------------

#[test]
fn prune_removes_exactly_the_unused_layer() {
    let s = Socle::new();
    pull_v1_and_v2(&s);
    let v2_own = row(&s, "hello:2")["layers"][1]
        .as_str()
        .unwrap()
        .to_string();
    // hello:2 now names version 1: version 2's own layer is used by nothing.
    s.ok(&[
        "pull",
        "--name",
        "hello:2",
        &oci_archive(&fixtures().oci_archive),
    ]);
    let before: Vec<_> = layers(&s);
    assert_eq!(before.len(), 3);
    let unused: Vec<_> = before.iter().filter(|(_, u)| u.is_empty()).collect();
    assert_eq!(unused.len(), 1, "{before:?}");
    assert_eq!(unused[0].0, v2_own);
    let table = s.ok(&["images", "list", "-a"]);
    assert!(table.contains("socle images prune` removes it"), "{table}");
    // delete frees only what the deleted image used: here nothing.
    s.ok(&["images", "tag", "hello:1", "hello:extra"]);
    let out = s.ok(&["images", "delete", "hello:extra"]);
    assert!(out.contains("No layer freed"), "{out}");
    assert!(layer_refs(&s).contains(&v2_own));

    let pruned = s.json(&["images", "prune"]);
    assert_eq!(
        pruned["layers_removed"][0]["digest"],
        v2_own.as_str(),
        "{pruned:#}"
    );
    assert_eq!(pruned["layers_removed"].as_array().unwrap().len(), 1);
    assert!(pruned["bytes_freed"].as_u64().unwrap() > 0, "{pruned:#}");
    assert!(
        pruned["objects_removed"].as_u64().unwrap() > 0,
        "{pruned:#}"
    );
    let after = layer_refs(&s);
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&v2_own));
    // Nothing left to do; the images are whole.
    let again = s.ok(&["images", "prune"]);
    assert!(again.contains("No layer freed"), "{again}");
    for image in ["hello:1", "hello:2"] {
        s.ok(&["images", "verify", image]);
    }
}

#[test]
fn prune_never_removes_the_image_of_a_rollback_slot() {
    let s = Socle::new();
    pull_v1_and_v2(&s);
    install_web(&s);
    s.ok(&["update", "web", "--rebase", "hello:2"]);
    let v1_own = row(&s, "hello:1")["layers"][1]
        .as_str()
        .unwrap()
        .to_string();

    let before = s.snapshot();
    let err = s.fails(&["images", "delete", "hello:1"]);
    assert!(err.contains("container web (rollback slot 0)"), "{err}");
    s.assert_unchanged(&before);
    let err = s.fails(&["images", "delete", "hello:2"]);
    assert!(err.contains("container web (current slot 1)"), "{err}");

    // hello:1 now names version 2: no name points at version 1 any more,
    // but web's rollback slot still uses it.
    s.ok(&[
        "pull",
        "--name",
        "hello:1",
        &oci_archive(&fixtures().v2_archive),
    ]);
    let pruned = s.json(&["images", "prune"]);
    assert_eq!(pruned["layers_removed"], json!([]), "{pruned:#}");
    assert_eq!(
        pruned["held"],
        json!(["container web (rollback slot 0) (hello:1)"]),
        "{pruned:#}"
    );
    assert!(layer_refs(&s).contains(&v1_own));
    let l = layers(&s);
    let held = l.iter().find(|(d, _)| d == &v1_own).unwrap();
    assert_eq!(held.1, ["container web (rollback slot 0)"]);
    let out = s.ok(&["images", "prune"]);
    assert!(
        out.contains("Kept for container web (rollback slot 0)"),
        "{out}"
    );

    // The rollback works, and its image is still complete in the store.
    s.ok(&["rollback", "web"]);
    assert_eq!(
        fs::read_link(s.containers().join("web")).unwrap(),
        Path::new("web.0")
    );
    s.ok(&["images", "prune"]);
    assert!(layer_refs(&s).contains(&v1_own));
}

#[test]
fn prune_removes_orphan_slots_but_not_an_interrupted_switch() {
    let s = Socle::new();
    s.pull_hello();
    install_web(&s);
    let c = s.containers();
    // A container removed by hand, and staging left by a crash.
    for d in ["ghost.0/rootfs", ".web.1.staging/rootfs", ".gone.0.staging"] {
        fs::create_dir_all(c.join(d)).unwrap();
    }
    fs::write(c.join("ghost.0/info"), "{}").unwrap();
    // A switch that was interrupted: recovery's business.
    fs::create_dir_all(c.join("busy.1/rootfs")).unwrap();
    fs::create_dir_all(c.join(".busy.0.staging")).unwrap();
    fs::write(c.join(".busy.transition"), "{}").unwrap();
    // Not socle's names.
    fs::create_dir_all(c.join("notes")).unwrap();
    fs::create_dir_all(c.join("web.7")).unwrap();

    let pruned = s.json(&["images", "prune"]);
    let removed: Vec<String> = pruned["slots_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = [".gone.0.staging", ".web.1.staging", "ghost.0"]
        .iter()
        .map(|d| path_str(&c.join(d)))
        .collect();
    assert_eq!(removed, want);
    for kept in [
        "web",
        "web.0",
        "busy.1",
        ".busy.0.staging",
        ".busy.transition",
        "notes",
        "web.7",
    ] {
        assert!(
            c.join(kept).symlink_metadata().is_ok(),
            "prune removed {kept}"
        );
    }
    assert!(c.join("web.0/rootfs/usr/bin/hello-greeter").is_file());
    let text = s.ok(&["images", "prune"]);
    assert!(!text.contains("no installed container owns it"), "{text}");
}

// ---- verify ---------------------------------------------------------------------

#[test]
fn verify_finds_a_changed_file_and_repair_pulls_it_again() {
    let s = Socle::new();
    s.pull_hello();
    let out = s.ok(&["images", "verify", "hello:1"]);
    assert!(out.contains("all intact"), "{out}");
    let clean = s.json(&["images", "verify", "hello:1"]);
    assert_eq!(clean["damaged"], json!([]));
    assert!(clean["objects_checked"].as_u64().unwrap() > 10, "{clean:#}");

    let (layer, object) = row(&s, "hello:1")["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| {
            let l = l.as_str().unwrap().to_string();
            object_of(&s, &l, "/usr/bin/hello-greeter").map(|o| (l, o))
        })
        .expect("a layer has /usr/bin/hello-greeter");
    // One byte changed in place: same inode, size and mode.
    let mut data = fs::read(&object).unwrap();
    let len = data.len();
    data[len / 2] ^= 0x01;
    fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
        .unwrap();
    assert_eq!(fs::metadata(&object).unwrap().len() as usize, len);

    let before = s.snapshot();
    let out = s.run(&["images", "verify", "hello:1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "usr/bin/hello-greeter in layer sha256:{}: content changed",
            short(&layer)
        ),
    );
    assert!(stderr.contains("1 object changed"), "{stderr}");
    assert!(
        stderr.contains("socle images verify --repair hello:1"),
        "{stderr}"
    );
    s.assert_unchanged(&before);
    let report = s.run(&["--json", "images", "verify", "hello:1"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["damaged"][0]["path"], "usr/bin/hello-greeter");
    assert_eq!(report["damaged"][0]["layer"], layer.as_str());

    let repaired = s.ok(&["images", "verify", "--repair", "hello:1"]);
    assert!(repaired.contains("now: 0 damaged"), "{repaired}");
    let out = s.ok(&["images", "verify", "hello:1"]);
    assert!(out.contains("all intact"), "{out}");
    assert_eq!(row(&s, "hello:1")["id"], fixtures().v1_digest.as_str());
}

// ---- update ---------------------------------------------------------------------

#[test]
fn images_update_pulls_again_from_the_recorded_source() {
    let s = Socle::new();
    let f = fixtures();
    let archive = s.inputs().join("hello.tar");
    fs::copy(&f.oci_archive, &archive).unwrap();
    s.ok(&["pull", &oci_archive(&archive)]);
    let table = s.ok(&["images", "update", "hello:1"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "ID BEFORE", "ID AFTER", "STATUS"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("up to date"), "{table}");

    // The source now holds version 2, as a registry tag would later.
    fs::copy(&f.v2_archive, &archive).unwrap();
    let rows = s.json(&["images", "update", "--all"]);
    assert_eq!(
        rows,
        json!([{
            "name": "hello:1",
            "source": oci_archive(&archive),
            "id_before": f.v1_digest,
            "id_after": f.v2_digest,
            "status": "updated",
        }])
    );
    assert_eq!(row(&s, "hello:1")["id"], f.v2_digest.as_str());

    // A source that is gone: a failed row, exit 1, the image unchanged.
    fs::remove_file(&archive).unwrap();
    let out = s.run(&["images", "update", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed: "), "{stdout}");
    assert!(stdout.contains(&path_str(&archive)), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 images failed"));
    assert_eq!(row(&s, "hello:1")["id"], f.v2_digest.as_str());
}
