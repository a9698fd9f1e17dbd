//! Crash safety: socle killed (SIGKILL, `SOCLE_FAILPOINT`) at every step of
//! install, uninstall, pull, prune, update and rollback, then the next
//! command: it finishes or undoes what was interrupted, `socle fsck` finds
//! the state clean afterwards, and nothing of a removed container is left
//! on the host. `every_failpoint_has_a_crash_test` reads the source, so a
//! failpoint added without a case here fails the suite. Also: 20 mixed
//! operations at once against one state directory.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::{fixtures, oci_archive, repo_root, Socle};
use serde_json::Value;

const NAME: &str = "web";

/// The command a failpoint interrupts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// `install --name web --set PORT=9101 hello:1`
    Install,
    /// `uninstall web` after that install
    Uninstall,
    /// `pull` of hello 2 (two layers, the base shared with hello 1) into a
    /// store holding hello 1 and the container web
    Pull,
    /// `images prune` of the layer a killed pull left and of a stray slot
    Prune,
    /// `update web --set PORT=9102`
    Update,
    /// `rollback web` after that update
    Rollback,
}

/// Every failpoint and the command it interrupts.
const FAILPOINTS: &[(&str, Op)] = &[
    ("install:after-journal", Op::Install),
    ("install:after-staging", Op::Install),
    ("install:after-rename", Op::Install),
    ("install:after-publish", Op::Install),
    ("install:after-pointer", Op::Install),
    ("install:after-enable", Op::Install),
    ("uninstall:after-journal", Op::Uninstall),
    ("uninstall:after-unit", Op::Uninstall),
    ("uninstall:after-tmpfiles", Op::Uninstall),
    ("uninstall:after-host-files", Op::Uninstall),
    ("uninstall:after-pointer", Op::Uninstall),
    ("uninstall:after-slots", Op::Uninstall),
    ("pull:after-layer", Op::Pull),
    ("pull:after-layers", Op::Pull),
    ("store:before-layer-commit", Op::Pull),
    ("store:before-image-commit", Op::Pull),
    ("prune:after-slots", Op::Prune),
    ("gc:after-pins", Op::Prune),
    ("gc:after-layer-refs", Op::Prune),
    ("gc:after-prune", Op::Prune),
    ("update:after-staging", Op::Update),
    ("update:after-rename", Op::Update),
    ("update:after-journal", Op::Update),
    ("update:after-stop", Op::Update),
    ("switch:after-publish", Op::Update),
    ("switch:after-swap", Op::Update),
    ("rollback:after-stop", Op::Rollback),
];

/// Failpoints only a running unit reaches (the health gate): tier-2 tests
/// run `--systemd none`; vm-tests/scenarios/21-crash.sh kills socle there.
const BOOTED_NODE_ONLY: &[&str] = &["update:after-start"];

fn op_of(failpoint: &str) -> Op {
    FAILPOINTS
        .iter()
        .find(|(f, _)| *f == failpoint)
        .unwrap_or_else(|| panic!("{failpoint} is not in FAILPOINTS"))
        .1
}

const PORT1: &str = "PORT=9101";
const PORT2: &str = "PORT=9102";
const INSTALL: &[&str] = &["install", "--name", NAME, "--set", PORT1, "hello:1"];

/// Runs `args` with the failpoint set and asserts socle killed itself there.
fn kill_at(s: &Socle, failpoint: &str, args: &[&str]) {
    let out = s
        .command()
        .env("SOCLE_FAILPOINT", failpoint)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "socle {} with SOCLE_FAILPOINT={failpoint} should kill itself ({}):\n{stderr}",
        args.join(" "),
        out.status
    );
    assert!(
        stderr.contains(&format!("failpoint {failpoint}:")),
        "{stderr}"
    );
}

/// `socle --json fsck` (with `--repair` if asked): its report and exit code.
fn fsck(s: &Socle, repair: bool) -> (Value, Option<i32>) {
    let mut args = vec!["--json", "fsck"];
    if repair {
        args.push("--repair");
    }
    let out = s.run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A repair that pulls prints the pull's JSON lines first; the report is last.
    let values: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "fsck printed no JSON ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let report = values.into_iter().last().expect("fsck printed a report");
    (report, out.status.code())
}

/// Asserts `socle fsck` finds nothing at all.
fn assert_fsck_clean(s: &Socle, context: &str) {
    let (report, code) = fsck(s, false);
    assert_eq!(
        report["findings"],
        serde_json::json!([]),
        "{context}: fsck found problems:\n{report:#}"
    );
    assert_eq!(code, Some(0), "{context}: {report:#}");
}

fn unit(s: &Socle) -> std::path::PathBuf {
    s.units().join(format!("{NAME}.service"))
}
fn tmpfiles(s: &Socle) -> std::path::PathBuf {
    s.tmpfiles().join(format!("{NAME}.conf"))
}
fn host_conf(s: &Socle) -> std::path::PathBuf {
    s.on_host(&format!("/etc/hello/{NAME}.conf"))
}

fn listed(s: &Socle) -> Vec<String> {
    s.json(&["list", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts nothing of NAME is left: no pointer, slot, staging directory or
/// journal, no unit, tmpfiles snippet or host file.
fn assert_nothing_left(s: &Socle, context: &str) {
    let mut left: Vec<String> = match fs::read_dir(s.containers()) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| {
                n == NAME
                    || n.starts_with(&format!("{NAME}."))
                    || n.starts_with(&format!(".{NAME}."))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    for p in [unit(s), tmpfiles(s), host_conf(s)] {
        if fs::symlink_metadata(&p).is_ok() {
            left.push(p.display().to_string());
        }
    }
    assert!(left.is_empty(), "{context}: left behind: {left:?}");
}

/// Asserts web is installed from hello:1 with `port`: listed, and the
/// unit, tmpfiles and host file on the host are its slot's.
fn assert_installed(s: &Socle, port: &str, context: &str) {
    assert_eq!(listed(s), [NAME], "{context}");
    let slot = fs::read_link(s.containers().join(NAME)).unwrap();
    let slot = s.containers().join(slot);
    let info: Value =
        serde_json::from_str(&fs::read_to_string(slot.join("info")).unwrap()).unwrap();
    let want = port.strip_prefix("PORT=").unwrap();
    assert_eq!(info["values"]["PORT"], want, "{context}: {info:#}");
    for (on_host, copy) in [
        (unit(s), slot.join(format!("{NAME}.service"))),
        (tmpfiles(s), slot.join("tmpfiles.conf")),
        (
            host_conf(s),
            slot.join(format!("hostfiles/etc/hello/{NAME}.conf")),
        ),
    ] {
        assert_eq!(
            fs::read(&on_host).ok(),
            fs::read(&copy).ok(),
            "{context}: {} is not {}",
            on_host.display(),
            copy.display()
        );
    }
}

/// Layer digests in the store.
fn layers(s: &Socle) -> Vec<String> {
    s.json(&["images", "list", "--all"])["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn image_names(s: &Socle) -> Vec<String> {
    s.json(&["images", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// How the test goes on after the kill.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Next {
    /// The command a user runs next (the same again, or the natural next).
    Command,
    /// `socle fsck --repair`, then the command.
    Fsck,
    /// `socle list`, which recovers when no other run holds the lock.
    List,
}

/// An install killed once its pointer exists is finished, not undone.
fn failpoint_finishes_install(failpoint: &str) -> bool {
    ["install:after-pointer", "install:after-enable"].contains(&failpoint)
}

fn crash_case(failpoint: &str, next: Next) {
    let op = op_of(failpoint);
    let s = Socle::new();
    let v2 = oci_archive(&fixtures().v2_archive);
    s.pull_hello();
    match op {
        Op::Install => {}
        Op::Uninstall | Op::Update | Op::Pull => {
            s.ok(INSTALL);
        }
        Op::Rollback => {
            s.ok(INSTALL);
            s.ok(&["update", NAME, "--set", PORT2]);
        }
        Op::Prune => {
            s.ok(INSTALL);
            // A pull killed before its image commit leaves hello 2's own
            // layer, which no image uses; and a slot nobody owns.
            kill_at(&s, "pull:after-layers", &["pull", &v2]);
            fs::create_dir_all(s.slot("ghost", 0)).unwrap();
        }
    }
    let layers_before = layers(&s);
    let interrupted: Vec<&str> = match op {
        Op::Install => INSTALL.to_vec(),
        Op::Uninstall => vec!["uninstall", NAME],
        Op::Pull => vec!["pull", &v2],
        Op::Prune => vec!["images", "prune"],
        Op::Update => vec!["update", NAME, "--set", PORT2],
        Op::Rollback => vec!["rollback", NAME],
    };
    kill_at(&s, failpoint, &interrupted);
    let context = format!("killed at {failpoint} in `socle {}`", interrupted.join(" "));

    // The store is consistent right after the crash: nothing to repair in it.
    let (report, _) = fsck(&s, false);
    let store_problems: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "layer" || f["kind"] == "image")
        .collect();
    assert!(store_problems.is_empty(), "{context}: {report:#}");

    if next == Next::Fsck {
        let (report, code) = fsck(&s, true);
        assert_eq!(code, Some(0), "{context}: fsck --repair: {report:#}");
        assert!(
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["repaired"] == true),
            "{context}: {report:#}"
        );
        assert_fsck_clean(&s, &format!("{context}, then fsck --repair"));
    }
    let context = format!("{context}, then {next:?}");
    match op {
        Op::Install => {
            match next {
                Next::Command => {
                    // Finished (the pointer was there) or undone, then done.
                    let (_, stderr) = s.ok_with_stderr(INSTALL);
                    assert!(
                        stderr.contains("interrupted install"),
                        "{context}: {stderr}"
                    );
                }
                Next::List if failpoint_finishes_install(failpoint) => {
                    assert_eq!(listed(&s), [NAME], "{context}");
                }
                Next::Fsck | Next::List => {
                    if listed(&s).is_empty() {
                        assert_nothing_left(&s, &context);
                        s.ok(INSTALL);
                    }
                }
            }
            assert_installed(&s, PORT1, &context);
            assert_fsck_clean(&s, &context);
            s.ok(&["uninstall", NAME]);
            assert_nothing_left(&s, &context);
        }
        Op::Uninstall => {
            if next == Next::Command {
                s.ok(&["uninstall", NAME]);
            }
            if next == Next::List {
                assert!(listed(&s).is_empty(), "{context}");
            }
            assert_nothing_left(&s, &context);
            assert!(listed(&s).is_empty(), "{context}");
            s.ok(INSTALL);
            assert_installed(&s, PORT1, &context);
        }
        Op::Pull => {
            // No image became visible half pulled.
            assert_eq!(image_names(&s), ["hello:1"], "{context}");
            s.ok(&["pull", &v2]);
            assert_eq!(image_names(&s), ["hello:1", "hello:2"], "{context}");
            s.ok(&["images", "verify", "hello:2"]);
            s.ok(&["update", NAME, "--rebase", "hello:2"]);
            assert_eq!(
                s.json(&["list", "--all"])[0]["image"],
                "hello:2",
                "{context}"
            );
        }
        Op::Prune => {
            s.ok(&["images", "prune"]);
            let after = layers(&s);
            assert!(after.len() < layers_before.len(), "{context}: {after:?}");
            assert!(!s.slot("ghost", 0).exists(), "{context}");
            s.ok(&["images", "verify", "hello:1"]);
            // The container's image is whole: it deploys again.
            s.ok(&["update", NAME, "--set", PORT2]);
            assert_installed(&s, PORT2, &context);
        }
        Op::Update | Op::Rollback => {
            s.ok(&["update", NAME, "--set", "PORT=9103"]);
            assert_installed(&s, "PORT=9103", &context);
        }
    }
    assert_fsck_clean(&s, &format!("{context}, at the end"));
}

macro_rules! crash_tests {
    ($($test:ident: $failpoint:literal, $next:ident;)*) => {
        /// Every failpoint the macro made a test for, with how it goes on.
        const TESTED: &[(&str, Next)] = &[$(($failpoint, Next::$next)),*];
        $(
            #[test]
            fn $test() {
                crash_case($failpoint, Next::$next);
            }
        )*
    };
}

crash_tests! {
    install_after_journal_then_install: "install:after-journal", Command;
    install_after_journal_then_fsck: "install:after-journal", Fsck;
    install_after_staging_then_install: "install:after-staging", Command;
    install_after_staging_then_fsck: "install:after-staging", Fsck;
    install_after_rename_then_install: "install:after-rename", Command;
    install_after_rename_then_fsck: "install:after-rename", Fsck;
    install_after_publish_then_install: "install:after-publish", Command;
    install_after_publish_then_fsck: "install:after-publish", Fsck;
    install_after_pointer_then_install: "install:after-pointer", Command;
    install_after_pointer_then_fsck: "install:after-pointer", Fsck;
    install_after_enable_then_install: "install:after-enable", Command;
    install_after_enable_then_fsck: "install:after-enable", Fsck;
    install_after_staging_then_list: "install:after-staging", List;
    install_after_publish_then_list: "install:after-publish", List;
    install_after_pointer_then_list: "install:after-pointer", List;
    uninstall_after_unit_then_list: "uninstall:after-unit", List;
    uninstall_after_pointer_then_list: "uninstall:after-pointer", List;
    uninstall_after_journal_then_uninstall: "uninstall:after-journal", Command;
    uninstall_after_journal_then_fsck: "uninstall:after-journal", Fsck;
    uninstall_after_unit_then_uninstall: "uninstall:after-unit", Command;
    uninstall_after_unit_then_fsck: "uninstall:after-unit", Fsck;
    uninstall_after_tmpfiles_then_uninstall: "uninstall:after-tmpfiles", Command;
    uninstall_after_tmpfiles_then_fsck: "uninstall:after-tmpfiles", Fsck;
    uninstall_after_host_files_then_uninstall: "uninstall:after-host-files", Command;
    uninstall_after_host_files_then_fsck: "uninstall:after-host-files", Fsck;
    uninstall_after_pointer_then_uninstall: "uninstall:after-pointer", Command;
    uninstall_after_pointer_then_fsck: "uninstall:after-pointer", Fsck;
    uninstall_after_slots_then_uninstall: "uninstall:after-slots", Command;
    uninstall_after_slots_then_fsck: "uninstall:after-slots", Fsck;
    pull_after_layer_then_pull: "pull:after-layer", Command;
    pull_after_layer_then_fsck: "pull:after-layer", Fsck;
    pull_after_layers_then_pull: "pull:after-layers", Command;
    pull_after_layers_then_fsck: "pull:after-layers", Fsck;
    pull_before_layer_commit_then_pull: "store:before-layer-commit", Command;
    pull_before_layer_commit_then_fsck: "store:before-layer-commit", Fsck;
    pull_before_image_commit_then_pull: "store:before-image-commit", Command;
    pull_before_image_commit_then_fsck: "store:before-image-commit", Fsck;
    prune_after_slots_then_prune: "prune:after-slots", Command;
    prune_after_slots_then_fsck: "prune:after-slots", Fsck;
    prune_after_pins_then_prune: "gc:after-pins", Command;
    prune_after_pins_then_fsck: "gc:after-pins", Fsck;
    prune_after_layer_refs_then_prune: "gc:after-layer-refs", Command;
    prune_after_layer_refs_then_fsck: "gc:after-layer-refs", Fsck;
    prune_after_prune_then_prune: "gc:after-prune", Command;
    prune_after_prune_then_fsck: "gc:after-prune", Fsck;
    // `... then update` for these is in tests/update.rs (crash_tests!).
    update_after_staging_then_fsck: "update:after-staging", Fsck;
    update_after_rename_then_fsck: "update:after-rename", Fsck;
    update_after_journal_then_fsck: "update:after-journal", Fsck;
    update_after_stop_then_fsck: "update:after-stop", Fsck;
    switch_after_publish_then_fsck: "switch:after-publish", Fsck;
    switch_after_swap_then_fsck: "switch:after-swap", Fsck;
    rollback_after_stop_then_fsck: "rollback:after-stop", Fsck;
}

/// Every `failpoint("STEP")` in agent/src, found by reading the source.
fn failpoints_in_source() -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![repo_root().join("agent/src")];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                for piece in text.split("failpoint(\"").skip(1) {
                    let step = piece.split('"').next().unwrap();
                    if step != "STEP" {
                        found.push(step.to_string());
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_failpoint_has_a_crash_test() {
    let in_source = failpoints_in_source();
    assert!(in_source.len() >= 20, "{in_source:?}");
    let update_tests = fs::read_to_string(repo_root().join("tests/update.rs")).unwrap();
    for step in &in_source {
        if BOOTED_NODE_ONLY.contains(&step.as_str()) {
            let scenario = repo_root().join("vm-tests/scenarios/21-crash.sh");
            let text = fs::read_to_string(&scenario).unwrap();
            assert!(
                text.contains(step.as_str()),
                "{step}: not in {}",
                scenario.display()
            );
            continue;
        }
        let nexts: Vec<Next> = TESTED
            .iter()
            .filter(|(f, _)| f == step)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            nexts.contains(&Next::Fsck),
            "{step}: no `then fsck` crash test"
        );
        let again = nexts.contains(&Next::Command)
            || update_tests.contains(&format!("\"{step}\", Update;"));
        assert!(again, "{step}: no crash test with the next command");
    }
    for (step, _) in FAILPOINTS {
        assert!(
            in_source.iter().any(|s| s == step),
            "{step} is in FAILPOINTS but socle has no such failpoint"
        );
    }
}

/// 20 operations at once against one state directory: pulls of different
/// images (several layers, shared ones), installs and uninstalls of
/// different names, prunes, lists, verifies. Each either succeeds or waits
/// for the state lock; afterwards fsck finds nothing to repair.
#[test]
fn twenty_mixed_operations_at_once_leave_a_clean_state() {
    let s = Socle::new();
    let f = fixtures();
    s.pull_hello();
    for name in ["old1", "old2", "old3"] {
        s.ok(&["install", "--name", name, "hello:1"]);
    }
    let archive = |p: &Path| oci_archive(p);
    let ops: Vec<Vec<String>> = vec![
        vec!["pull".into(), archive(&f.v2_archive)],
        vec!["pull".into(), archive(&f.whiteout)],
        vec!["pull".into(), archive(&f.no_exports)],
        vec![
            "pull".into(),
            format!("docker-archive:{}", f.docker_archive.display()),
            "--name".into(),
            "dock:1".into(),
        ],
        vec![
            "pull".into(),
            format!("oci:{}:1", f.oci_dir.display()),
            "--name".into(),
            "copy:1".into(),
        ],
        vec![
            "install".into(),
            "--name".into(),
            "new1".into(),
            "hello:1".into(),
        ],
        vec![
            "install".into(),
            "--name".into(),
            "new2".into(),
            "--set".into(),
            "PORT=9201".into(),
            "hello:1".into(),
        ],
        vec![
            "install".into(),
            "--name".into(),
            "new3".into(),
            "hello:1".into(),
        ],
        vec!["uninstall".into(), "old1".into()],
        vec!["uninstall".into(), "old2".into()],
        vec![
            "update".into(),
            "old3".into(),
            "--set".into(),
            "PORT=9202".into(),
        ],
        vec!["images".into(), "prune".into()],
        vec!["images".into(), "prune".into()],
        vec!["list".into(), "--all".into()],
        vec!["list".into(), "--all".into()],
        vec!["list".into()],
        vec!["images".into(), "list".into(), "--all".into()],
        vec!["images".into(), "verify".into(), "hello:1".into()],
        vec!["images".into(), "verify".into(), "hello:1".into()],
        vec!["fsck".into()],
    ];
    assert_eq!(ops.len(), 20);
    let children: Vec<_> = ops
        .iter()
        .map(|args| {
            let child = s
                .command()
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (args, child)
        })
        .collect();
    let mut failures = Vec::new();
    for (args, child) in children {
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "socle {} ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_fsck_clean(&s, "after 20 operations at once");
    let mut names = listed(&s);
    names.sort();
    assert_eq!(names, ["new1", "new2", "new3", "old3"]);
    let mut images = image_names(&s);
    images.sort();
    assert_eq!(
        images,
        [
            "copy:1",
            "dock:1",
            "hello:1",
            "hello:2",
            "noexports:1",
            "whiteout:1"
        ]
    );
    for i in &images {
        s.ok(&["images", "verify", i]);
    }
}

// ---- fsck on damage that is not a crash ---------------------------------------

/// Installs `name` from hello:1 with PORT (pulling it first if needed).
fn install_named(s: &Socle, name: &str, port: &str) {
    s.ok(&[
        "install",
        "--name",
        name,
        "--set",
        &format!("PORT={port}"),
        "hello:1",
    ]);
}

#[test]
fn fsck_repairs_what_socle_wrote_and_never_touches_what_it_did_not() {
    let s = Socle::new();
    s.pull_hello();
    install_named(&s, NAME, "9301");
    install_named(&s, "gone", "9302");
    // web lost its unit and its host file; gone lost its pointer (a slot
    // nobody owns, with its unit, tmpfiles and host file still on the host).
    fs::remove_file(unit(&s)).unwrap();
    fs::remove_file(host_conf(&s)).unwrap();
    fs::remove_file(s.containers().join("gone")).unwrap();
    // Files socle did not write: a unit and a snippet of no container, and
    // a unit named like a slot's container but with other content.
    let foreign = [
        (
            s.units().join("other.service"),
            "[Service]\nExecStart=/bin/true\n",
        ),
        (
            s.tmpfiles().join("other.conf"),
            "d /run/other 0755 root root -\n",
        ),
        (
            s.units().join("ghost.service"),
            "[Service]\nExecStart=/bin/false\n",
        ),
    ];
    for (path, text) in &foreign {
        fs::write(path, text).unwrap();
    }
    fs::create_dir_all(s.slot("ghost", 0)).unwrap();
    fs::write(s.slot("ghost", 0).join("ghost.service"), "[Service]\n").unwrap();

    let before = s.snapshot();
    let (report, code) = fsck(&s, false);
    assert_eq!(code, Some(1), "{report:#}");
    s.assert_unchanged(&before);
    let found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    let p = |p: std::path::PathBuf| p.display().to_string();
    let mut want = vec![
        ("unit".to_string(), p(unit(&s))),
        ("host-file".to_string(), p(host_conf(&s))),
        ("unit".to_string(), p(s.units().join("gone.service"))),
        ("tmpfiles".to_string(), p(s.tmpfiles().join("gone.conf"))),
        (
            "host-file".to_string(),
            p(s.on_host("/etc/hello/gone.conf")),
        ),
        ("slot".to_string(), p(s.slot("gone", 0))),
        ("slot".to_string(), p(s.slot("ghost", 0))),
    ];
    let mut found_sorted = found.clone();
    found_sorted.sort();
    want.sort();
    assert_eq!(found_sorted, want, "{report:#}");

    let (report, code) = fsck(&s, true);
    assert_eq!(code, Some(0), "{report:#}");
    assert_installed(&s, "PORT=9301", "after fsck --repair");
    for (path, text) in &foreign {
        assert_eq!(
            &fs::read_to_string(path).unwrap(),
            text,
            "{}",
            path.display()
        );
    }
    for gone in [
        s.units().join("gone.service"),
        s.tmpfiles().join("gone.conf"),
        s.on_host("/etc/hello/gone.conf"),
        s.slot("gone", 0),
        s.slot("ghost", 0),
    ] {
        assert!(
            fs::symlink_metadata(&gone).is_err(),
            "{} is left",
            gone.display()
        );
    }
    assert_fsck_clean(&s, "after fsck --repair");

    // A host file the user edited is a note, never a problem, and stays.
    let mut text = fs::read_to_string(host_conf(&s)).unwrap();
    text.push_str("# mine\n");
    fs::write(host_conf(&s), &text).unwrap();
    let (report, code) = fsck(&s, true);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    assert!(
        report["notes"][0].as_str().unwrap().contains("edited"),
        "{report:#}"
    );
    assert_eq!(fs::read_to_string(host_conf(&s)).unwrap(), text);
}

#[test]
fn fsck_finds_a_damaged_store_object_and_repair_pulls_the_layer_again() {
    let s = Socle::new();
    s.pull_hello();
    assert_fsck_clean(&s, "after a pull");
    let object = s.json(&["images", "list"])[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| {
            let hex = l
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string();
            let out = std::process::Command::new("ostree")
                .arg(format!("--repo={}", s.repo().display()))
                .args([
                    "ls",
                    "-C",
                    &format!("ociimage/{hex}"),
                    "/usr/bin/hello-greeter",
                ])
                .output()
                .unwrap();
            let line = String::from_utf8_lossy(&out.stdout).to_string();
            let sum = line.split_whitespace().nth(4)?.to_string();
            Some(
                s.repo()
                    .join("objects")
                    .join(&sum[..2])
                    .join(format!("{}.file", &sum[2..])),
            )
        })
        .expect("a layer has /usr/bin/hello-greeter");
    let mut data = fs::read(&object).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
        .unwrap();

    let (report, code) = fsck(&s, false);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["findings"][0]["kind"], "image", "{report:#}");
    assert_eq!(report["findings"][0]["subject"], "hello:1", "{report:#}");
    let (report, code) = fsck(&s, true);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["findings"][0]["repaired"], true, "{report:#}");
    assert_fsck_clean(&s, "after fsck --repair");
}
