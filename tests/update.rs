//! `socle update` and `socle rollback` on files: with `--systemd none` the
//! health gate has no unit to ask about, so these tests cover what lands in
//! the slots, the pointer, the unit and tmpfiles dirs and on the host —
//! including after socle was killed at every step of a switch
//! (`SOCLE_FAILPOINT`). The booted-node scenario (real systemd, the health
//! gate) lives in vm-tests/.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::{all_paths, fixtures, oci_archive, path_str, update_fixtures, Socle, NEW_CONF_MARKER};
use serde_json::{json, Value};

const NAME: &str = "web";
const PORT1: &str = "9101";
const PORT2: &str = "9102";

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn info(s: &Socle, slot: u32) -> Value {
    read_json(&s.slot(NAME, slot).join("info"))
}

fn pointer(s: &Socle) -> PathBuf {
    let p = s.containers().join(NAME);
    fs::read_link(&p).unwrap_or_else(|e| panic!("reading the pointer {}: {e}", p.display()))
}

/// The slot the pointer designates (it must be `NAME.0` or `NAME.1`).
fn current_slot(s: &Socle) -> u32 {
    let target = pointer(s);
    match target.to_str() {
        Some(t) if t == format!("{NAME}.0") => 0,
        Some(t) if t == format!("{NAME}.1") => 1,
        _ => panic!("the pointer designates {target:?}, not {NAME}.0 or {NAME}.1"),
    }
}

fn unit(s: &Socle) -> PathBuf {
    s.units().join(format!("{NAME}.service"))
}
fn tmpfiles(s: &Socle) -> PathBuf {
    s.tmpfiles().join(format!("{NAME}.conf"))
}
/// The host file hello installs (`/etc/hello/$NAME.conf`).
fn host_conf(s: &Socle) -> PathBuf {
    s.on_host(&format!("/etc/hello/{NAME}.conf"))
}
fn slot_unit(s: &Socle, slot: u32) -> PathBuf {
    s.slot(NAME, slot).join(format!("{NAME}.service"))
}
fn slot_tmpfiles(s: &Socle, slot: u32) -> PathBuf {
    s.slot(NAME, slot).join("tmpfiles.conf")
}
fn slot_host_conf(s: &Socle, slot: u32) -> PathBuf {
    s.slot(NAME, slot)
        .join(format!("hostfiles/etc/hello/{NAME}.conf"))
}
fn transition(s: &Socle) -> PathBuf {
    s.containers().join(format!(".{NAME}.transition"))
}

/// The `process.env` of a slot's config.json.
fn env(s: &Socle, slot: u32) -> Vec<String> {
    let config = read_json(&s.slot(NAME, slot).join("config.json"));
    config["process"]["env"]
        .as_array()
        .expect("config.json has process.env")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Asserts a slot was rendered with PORT and RECEIVER: its info, its
/// config.json and its copy of the host file agree.
fn assert_slot_values(s: &Socle, slot: u32, port: &str, receiver: &str) {
    let i = info(s, slot);
    assert_eq!(i["values"]["PORT"], port, "slot {slot} info: {i:#}");
    assert_eq!(i["values"]["RECEIVER"], receiver, "slot {slot} info: {i:#}");
    let e = env(s, slot);
    for want in [format!("PORT={port}"), format!("RECEIVER={receiver}")] {
        assert!(
            e.contains(&want),
            "slot {slot} config.json env {e:?}: no {want}"
        );
    }
    let conf = read(&slot_host_conf(s, slot));
    for want in [format!("PORT={port}\n"), format!("RECEIVER={receiver}\n")] {
        assert!(
            conf.contains(&want),
            "slot {slot} host file copy has no {want:?}:\n{conf}"
        );
    }
}

/// Asserts the unit, tmpfiles and host file are the copies of `slot`.
fn assert_host_matches_slot(s: &Socle, slot: u32) {
    for (what, on_host, copy) in [
        ("unit", unit(s), slot_unit(s, slot)),
        ("tmpfiles", tmpfiles(s), slot_tmpfiles(s, slot)),
        ("host file", host_conf(s), slot_host_conf(s, slot)),
    ] {
        assert_eq!(
            read(&on_host),
            read(&copy),
            "the {what} {} is not slot {slot}'s copy {}",
            on_host.display(),
            copy.display()
        );
    }
}

/// Pulls hello:1 and installs it as NAME with `sets`.
fn install(s: &Socle, sets: &[&str]) {
    s.pull_hello();
    let mut args = vec!["install", "--name", NAME];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.push("hello:1");
    s.ok(&args);
}

fn install_default(s: &Socle) {
    install(s, &[&format!("PORT={PORT1}"), "RECEIVER=test"]);
}

fn set_port(port: &str) -> String {
    format!("PORT={port}")
}

// ---- update -------------------------------------------------------------------

#[test]
fn update_set_port_renders_a_new_slot_and_keeps_user_values_and_uuid() {
    let s = Socle::new();
    install_default(&s);
    assert_eq!(pointer(&s), Path::new("web.0"));
    let before = info(&s, 0);

    let out = s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    assert!(
        out.starts_with("web updated: hello:1 (") && out.trim_end().ends_with(", slot 1"),
        "{out}"
    );
    assert_eq!(pointer(&s), Path::new("web.1"));
    assert_slot_values(&s, 1, PORT2, "test");
    // The old slot is left as it was: the rollback target.
    assert_slot_values(&s, 0, PORT1, "test");
    assert_eq!(info(&s, 0), before, "slot 0's info changed");

    let new = info(&s, 1);
    assert_eq!(new["slot"], 1, "{new:#}");
    assert_eq!(
        new["user-values"],
        json!({"PORT": PORT2, "RECEIVER": "test"}),
        "{new:#}"
    );
    let uuid = before["values"]["UUID"].as_str().unwrap();
    assert!(!uuid.is_empty(), "{before:#}");
    assert_eq!(new["values"]["UUID"], uuid, "the UUID changed on update");

    // The host follows slot 1: its unit (WorkingDirectory=DESTDIR), tmpfiles
    // and host file.
    assert_host_matches_slot(&s, 1);
    assert!(
        read(&unit(&s)).contains(&path_str(&s.slot(NAME, 1))),
        "{}",
        read(&unit(&s))
    );
    let conf = read(&host_conf(&s));
    assert!(conf.contains(&format!("PORT={PORT2}\n")), "{conf}");
    assert!(conf.contains("RECEIVER=test\n"), "{conf}");
    assert!(!transition(&s).exists());

    let list = s.json(&["list", "--all"]);
    assert_eq!(list[0]["slot"], 1, "{list:#}");
}

#[test]
fn update_with_nothing_new_says_so_and_changes_nothing() {
    let s = Socle::new();
    install_default(&s);
    let before = s.snapshot();
    for args in [
        vec!["update", NAME],
        vec!["update", NAME, "--set", "RECEIVER=test"],
        vec!["update", NAME, "--rebase", "hello:1"],
    ] {
        let (out, err) = s.ok_with_stderr(&args);
        assert_eq!(out, "Latest version already installed.\n", "{args:?}");
        assert_eq!(err, "", "{args:?}");
        s.assert_unchanged(&before);
    }
    let report = s.json(&["update", NAME]);
    assert_eq!(report["status"], "up to date", "{report:#}");
    assert_eq!(report["slot"], 0, "{report:#}");
    s.assert_unchanged(&before);
}

#[test]
fn rollback_switches_back_to_the_old_slot_and_again_forward() {
    let s = Socle::new();
    install_default(&s);
    let old_conf = read(&host_conf(&s));
    s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    let new_conf = read(&host_conf(&s));
    assert_ne!(old_conf, new_conf);

    let out = s.ok(&["rollback", NAME]);
    assert!(
        out.contains("rolled back") && out.contains("slot 0"),
        "{out}"
    );
    assert_eq!(pointer(&s), Path::new("web.0"));
    assert_host_matches_slot(&s, 0);
    assert_eq!(read(&host_conf(&s)), old_conf);
    assert!(!transition(&s).exists());

    // A second rollback goes forward again.
    let out = s.ok(&["rollback", NAME]);
    assert!(out.contains("slot 1"), "{out}");
    assert_eq!(pointer(&s), Path::new("web.1"));
    assert_host_matches_slot(&s, 1);
    assert_eq!(read(&host_conf(&s)), new_conf);
    // Both slots are still as the update left them.
    assert_slot_values(&s, 0, PORT1, "test");
    assert_slot_values(&s, 1, PORT2, "test");
}

#[test]
fn rollback_without_a_second_slot_fails_and_changes_nothing() {
    let s = Socle::new();
    install_default(&s);
    let before = s.snapshot();
    let err = s.fails(&["rollback", NAME]);
    assert!(err.contains("no other deployment"), "{err}");
    s.assert_unchanged(&before);
}

#[test]
fn rebase_onto_other_hostfs_replaces_the_host_file_and_rollback_restores_it() {
    let s = Socle::new();
    install_default(&s);
    let old_conf = read(&host_conf(&s));
    s.ok(&["pull", &oci_archive(&update_fixtures().new_conf)]);

    let (_, err) = s.ok_with_stderr(&["update", NAME, "--rebase", "hello:newconf"]);
    assert!(!err.contains("edited"), "{err}");
    assert_eq!(info(&s, 1)["image"], "hello:newconf");
    let conf = read(&host_conf(&s));
    assert!(conf.starts_with(NEW_CONF_MARKER), "{conf}");
    assert_host_matches_slot(&s, 1);
    assert!(!s
        .on_host(&format!("/etc/hello/{NAME}.conf.socle-new"))
        .exists());

    s.ok(&["rollback", NAME]);
    assert_eq!(read(&host_conf(&s)), old_conf);
    assert_host_matches_slot(&s, 0);
}

#[test]
fn new_image_defaults_apply_to_values_the_user_never_set() {
    let s = Socle::new();
    // RECEIVER is left to the image's default ("world").
    install(&s, &[&set_port(PORT1)]);
    assert_slot_values(&s, 0, PORT1, "world");
    s.ok(&["pull", &oci_archive(&update_fixtures().new_defaults)]);

    s.ok(&["update", NAME, "--rebase", "hello:newdefaults"]);
    assert_eq!(pointer(&s), Path::new("web.1"));
    let i = info(&s, 1);
    assert_eq!(i["image"], "hello:newdefaults", "{i:#}");
    // The new default (PORT 8082) does not override what the user set.
    assert_slot_values(&s, 1, PORT1, "everyone");
    assert_eq!(i["user-values"], json!({"PORT": PORT1}), "{i:#}");
    assert_host_matches_slot(&s, 1);

    // A later update with a new value keeps the image's current default.
    s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    assert_slot_values(&s, 0, PORT2, "everyone");
}

#[test]
fn rebase_onto_an_image_missing_a_default_fails_and_changes_nothing() {
    let s = Socle::new();
    // PORT comes from hello:1's default; hello:noport has none.
    install(&s, &["RECEIVER=test"]);
    s.ok(&["pull", &oci_archive(&update_fixtures().no_port_default)]);
    let before = s.snapshot();

    let err = s.fails(&["update", NAME, "--rebase", "hello:noport"]);
    assert!(err.contains("PORT"), "the error should name PORT: {err}");
    assert_eq!(pointer(&s), Path::new("web.0"));
    s.assert_unchanged(&before);
}

#[test]
fn a_reused_slot_is_rebuilt_from_scratch() {
    let s = Socle::new();
    install_default(&s);
    let rootfs0 = s.slot(NAME, 0).join("rootfs");
    for f in ["bin/wget", "usr/share/hello/version"] {
        assert!(rootfs0.join(f).exists(), "hello:1 ships /{f}");
    }
    s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    // Something in slot 0 that no deployment wrote.
    fs::write(s.slot(NAME, 0).join("leftover"), "stale\n").unwrap();

    s.ok(&["pull", &oci_archive(&update_fixtures().slim)]);
    s.ok(&["update", NAME, "--rebase", "hello:slim"]);
    assert_eq!(pointer(&s), Path::new("web.0"));
    assert_eq!(info(&s, 0)["image"], "hello:slim");
    for f in ["bin/wget", "usr/share/hello/version"] {
        assert!(
            fs::symlink_metadata(rootfs0.join(f)).is_err(),
            "/{f} is still in the rebuilt slot 0"
        );
    }
    assert!(rootfs0.join("usr/bin/hello-greeter").exists());
    assert!(
        !s.slot(NAME, 0).join("leftover").exists(),
        "slot 0 was not rebuilt from scratch: a stale file survived"
    );
    let whiteouts: Vec<_> = all_paths(&rootfs0)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".wh."))
        .collect();
    assert!(whiteouts.is_empty(), "{whiteouts:?}");
    assert_slot_values(&s, 0, PORT2, "test");
    assert_host_matches_slot(&s, 0);
}

#[test]
fn an_edited_host_file_is_not_overwritten_on_update() {
    let s = Socle::new();
    install_default(&s);
    let edited = format!("{}# mine\n", read(&host_conf(&s)));
    fs::write(host_conf(&s), &edited).unwrap();

    let (_, err) = s.ok_with_stderr(&["update", NAME, "--set", &set_port(PORT2)]);
    assert_eq!(read(&host_conf(&s)), edited, "the edited host file changed");
    let beside = s.on_host(&format!("/etc/hello/{NAME}.conf.socle-new"));
    assert_eq!(
        read(&beside),
        read(&slot_host_conf(&s, 1)),
        "{} is not the new render",
        beside.display()
    );
    assert!(read(&beside).contains(&format!("PORT={PORT2}\n")));
    assert!(
        err.contains(&path_str(&host_conf(&s))) && err.contains(&path_str(&beside)),
        "stderr should name the edited file and the new version:\n{err}"
    );

    // Nor on rollback.
    s.ok(&["rollback", NAME]);
    assert_eq!(read(&host_conf(&s)), edited, "rollback overwrote the edit");
}

/// Asserts nothing of NAME (pointer, slots, staging, journal) is left in
/// the containers directory.
fn assert_nothing_of_name_left(s: &Socle) {
    let left: Vec<_> = fs::read_dir(s.containers())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| {
            n == NAME || n.starts_with(&format!("{NAME}.")) || n.starts_with(&format!(".{NAME}."))
        })
        .collect();
    assert!(
        left.is_empty(),
        "left in {}: {left:?}",
        s.containers().display()
    );
}

#[test]
fn uninstall_after_an_update_removes_both_slots_and_the_host_files() {
    let s = Socle::new();
    install_default(&s);
    s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    s.ok(&["uninstall", NAME]);
    assert_nothing_of_name_left(&s);
    for p in [unit(&s), tmpfiles(&s), host_conf(&s)] {
        assert!(fs::symlink_metadata(&p).is_err(), "{} is left", p.display());
    }
    assert_eq!(s.json(&["list", "--all"]), json!([]));
}

#[test]
fn uninstall_after_an_interrupted_update_leaves_nothing() {
    let s = Socle::new();
    install_default(&s);
    let out = s
        .command()
        .env("SOCLE_FAILPOINT", "update:after-staging")
        .args(["update", NAME, "--set", &set_port(PORT2)])
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    s.ok(&["uninstall", NAME]);
    assert_nothing_of_name_left(&s);
}

// ---- crash safety ---------------------------------------------------------------

/// What runs after socle was killed.
#[derive(Clone, Copy, Debug)]
enum After {
    /// `socle update NAME --set PORT=PORT2`: ends with PORT2.
    Update,
    /// `socle rollback NAME`: ends with PORT1, the values from before the
    /// interrupted update (for an interrupted rollback: its target).
    Rollback,
}

/// Installs NAME with PORT1, kills socle at `failpoint` in the middle of
/// the update to PORT2 (or, for `rollback:*` failpoints, of the rollback
/// from that update back to PORT1), checks the state is consistent, runs
/// `after` and checks the host is on one slot, with nothing left over.
fn crash_case(failpoint: &str, after: After) {
    let s = Socle::new();
    install_default(&s);
    let uuid = info(&s, 0)["values"]["UUID"].clone();
    let set = set_port(PORT2);
    let update = ["update", NAME, "--set", set.as_str()];
    let rollback = ["rollback", NAME];
    let interrupted: &[&str] = if failpoint.starts_with("rollback:") {
        s.ok(&update);
        &rollback
    } else {
        &update
    };

    let out = s
        .command()
        .env("SOCLE_FAILPOINT", failpoint)
        .args(interrupted)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "socle {interrupted:?} with SOCLE_FAILPOINT={failpoint} should kill itself ({}):\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("failpoint {failpoint}")),
        "{stderr}"
    );

    // Consistent after the crash: the pointer designates one complete slot,
    // the unit is one slot's copy.
    let slot = current_slot(&s);
    let i = info(&s, slot);
    for key in [
        "name",
        "image",
        "image-id",
        "values",
        "user-values",
        "installed-files",
    ] {
        assert!(i.get(key).is_some(), "slot {slot} info has no {key}: {i:#}");
    }
    assert_eq!(i["slot"], slot, "{i:#}");
    let on_host = read(&unit(&s));
    assert!(
        [0, 1]
            .iter()
            .any(|&n| fs::read_to_string(slot_unit(&s, n)).is_ok_and(|u| u == on_host)),
        "after the crash at {failpoint}, the unit is no slot's copy:\n{on_host}"
    );

    let (args, port): (&[&str], &str) = match after {
        After::Update => (&update, PORT2),
        After::Rollback => (&rollback, PORT1),
    };
    let out = s.run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "killed at {failpoint} during `socle {}`, then `socle {}` ({}):\nstdout:\n{stdout}stderr:\n{stderr}",
        interrupted.join(" "),
        args.join(" "),
        out.status
    );
    // Every problem at once, for a precise report.
    let mut problems = Vec::new();
    if !out.status.success() {
        problems.push("the command failed".to_string());
    }
    if transition(&s).exists() {
        problems.push(format!("{} is left", transition(&s).display()));
    }
    for e in fs::read_dir(s.containers()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        if n.starts_with(&format!(".{NAME}.")) && n.ends_with(".staging") {
            problems.push(format!("staging dir {n} is left"));
        }
    }
    let slot = current_slot(&s);
    let i = info(&s, slot);
    if i["values"]["PORT"] != port {
        problems.push(format!(
            "the pointer designates slot {slot} with PORT={}, expected PORT={port}",
            i["values"]["PORT"]
        ));
    }
    if i["values"]["UUID"] != uuid {
        problems.push(format!("UUID {} is not {uuid}", i["values"]["UUID"]));
    }
    for (what, on_host, copy) in [
        ("unit", unit(&s), slot_unit(&s, slot)),
        ("tmpfiles", tmpfiles(&s), slot_tmpfiles(&s, slot)),
        ("host file", host_conf(&s), slot_host_conf(&s, slot)),
    ] {
        if fs::read(&on_host).ok() != fs::read(&copy).ok() {
            problems.push(format!(
                "the {what} {} is not slot {slot}'s copy",
                on_host.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{context}\nproblems:\n  {}",
        problems.join("\n  ")
    );
    assert_slot_values(&s, slot, port, "test");
    assert!(read(&host_conf(&s)).contains(&format!("PORT={port}\n")));
}

macro_rules! crash_tests {
    ($($test:ident: $failpoint:literal, $after:ident;)*) => {$(
        #[test]
        fn $test() {
            crash_case($failpoint, After::$after);
        }
    )*};
}

crash_tests! {
    killed_after_staging_then_update: "update:after-staging", Update;
    killed_after_staging_then_rollback: "update:after-staging", Rollback;
    killed_after_rename_then_update: "update:after-rename", Update;
    killed_after_rename_then_rollback: "update:after-rename", Rollback;
    killed_after_journal_then_update: "update:after-journal", Update;
    killed_after_journal_then_rollback: "update:after-journal", Rollback;
    killed_after_stop_then_update: "update:after-stop", Update;
    killed_after_stop_then_rollback: "update:after-stop", Rollback;
    killed_after_publish_then_update: "switch:after-publish", Update;
    killed_after_publish_then_rollback: "switch:after-publish", Rollback;
    killed_after_swap_then_update: "switch:after-swap", Update;
    killed_after_swap_then_rollback: "switch:after-swap", Rollback;
    killed_in_rollback_after_stop_then_update: "rollback:after-stop", Update;
    killed_in_rollback_after_stop_then_rollback: "rollback:after-stop", Rollback;
}

/// The fixtures are the hello images: make sure the ones these tests rely
/// on differ where they should.
#[test]
fn fixtures_differ_as_described() {
    let s = Socle::new();
    let u = update_fixtures();
    for p in [&fixtures().oci_archive, &u.new_defaults, &u.no_port_default] {
        s.ok(&["pull", &oci_archive(p)]);
    }
    let defaults = |image: &str| s.json(&["images", "info", image])["defaults"].clone();
    assert_eq!(
        defaults("hello:1"),
        json!({"PORT": "8081", "RECEIVER": "world"})
    );
    assert_eq!(
        defaults("hello:newdefaults"),
        json!({"PORT": "8082", "RECEIVER": "everyone"})
    );
    let info = s.json(&["images", "info", "hello:noport"]);
    assert_eq!(info["required"], json!(["PORT"]), "{info:#}");
}

// ---- update --all, --pull, --rebase SOURCE, D directories ------------------------

#[test]
fn update_all_updates_only_containers_whose_image_has_a_newer_id() {
    let s = Socle::new();
    install_default(&s);
    s.ok(&[
        "install",
        "--name",
        "other",
        "--set",
        "PORT=9103",
        "hello:1",
    ]);
    let v1 = info(&s, 0)["image-id"].clone();
    let table = s.ok(&["update", "--all"]);
    assert_eq!(table.matches("up to date").count(), 2, "{table}");
    // hello:1 now names version 2's image.
    s.ok(&[
        "pull",
        "--name",
        "hello:1",
        &oci_archive(&fixtures().v2_archive),
    ]);
    let rows = s.json(&["update", "--all", "--json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in rows {
        assert_eq!(r["status"], "updated", "{r}");
        assert_eq!(r["id_before"], v1, "{r}");
        assert_eq!(r["id_after"], json!(fixtures().v2_digest), "{r}");
    }
    assert_eq!(current_slot(&s), 1);
    let again = s.ok(&["update", "--all"]);
    assert_eq!(again.matches("up to date").count(), 2, "{again}");
}

#[test]
fn update_pull_pulls_again_from_the_recorded_source() {
    let s = Socle::new();
    let archive = s.inputs().join("hello.tar");
    fs::copy(&fixtures().oci_archive, &archive).unwrap();
    s.ok(&["pull", &oci_archive(&archive)]);
    s.ok(&["install", "--name", NAME, "hello:1"]);
    // The source now holds version 2 (as a registry tag would, later).
    fs::copy(&fixtures().v2_archive, &archive).unwrap();
    s.ok(&["update", NAME, "--pull"]);
    assert_eq!(
        info(&s, current_slot(&s))["image-id"],
        json!(fixtures().v2_digest)
    );
    assert_eq!(info(&s, current_slot(&s))["image"], "hello:1");
}

#[test]
fn rebase_onto_a_source_pulls_it_first() {
    let s = Socle::new();
    install_default(&s);
    let out = s.ok(&[
        "update",
        NAME,
        "--rebase",
        &oci_archive(&fixtures().v2_archive),
    ]);
    assert!(out.contains("hello:2"), "{out}");
    assert_eq!(info(&s, 1)["image"], "hello:2");
    assert!(s.ok(&["images", "list"]).contains("hello"));
}

#[test]
fn big_d_directories_are_emptied_on_a_switch_and_small_d_ones_are_kept() {
    let s = Socle::new();
    let template = s.inputs().join("tmpfiles.template");
    fs::write(
        &template,
        "d ${STATE_DIRECTORY}/$NAME 0755 root root -\nD ${STATE_DIRECTORY}/$NAME-cache 0755 root root -\n",
    )
    .unwrap();
    let archive = s.inputs().join("cache.tar");
    let out = std::process::Command::new(common::repo_root().join("scripts/build-image"))
        .arg("--add-file")
        .arg(format!(
            "{}:/exports/tmpfiles.template",
            path_str(&template)
        ))
        .arg(common::repo_root().join("images/hello"))
        .arg(format!("oci-archive:{}:cache:1", path_str(&archive)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["pull", &oci_archive(&archive)]);
    s.ok(&["install", "--name", NAME, "cache:1"]);
    let data = s.on_host("/var/lib/web");
    let cache = s.on_host("/var/lib/web-cache");
    assert!(data.is_dir() && cache.is_dir());
    fs::write(data.join("keep"), "data").unwrap();
    fs::write(cache.join("scratch"), "cache").unwrap();
    s.ok(&["update", NAME, "--set", &set_port(PORT2)]);
    assert!(data.join("keep").is_file(), "d directory lost its data");
    assert!(cache.is_dir(), "D directory is recreated");
    assert!(
        !cache.join("scratch").exists(),
        "D directory was not emptied"
    );
    s.ok(&["uninstall", NAME]);
    assert!(data.join("keep").is_file(), "uninstall removed the data");
}
