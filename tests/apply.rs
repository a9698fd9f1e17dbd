//! `socle apply` on files (`--systemd none`): declarations in a
//! containers.d directory become installed containers, updates and
//! uninstalls, in dependency order; bad declarations are named and left
//! out with their dependents; a container installed by hand is never
//! touched. The booted-node scenario (boot order, health gate) is in
//! vm-tests/.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{fixtures, oci_archive, path_str, Socle};
use serde_json::Value;

/// A containers.d directory inside the test's environment.
fn declarations(s: &Socle) -> PathBuf {
    let d = s.root().join("containers.d");
    fs::create_dir_all(&d).unwrap();
    d
}

fn declare(s: &Socle, name: &str, text: &str) -> PathBuf {
    let file = declarations(s).join(format!("{name}.toml"));
    fs::write(&file, text).unwrap();
    file
}

/// hello 1 from its seed, with a PORT.
fn hello(port: u16, after: &[&str]) -> String {
    format!(
        "image = \"hello:1\"\nseed = \"{}\"\nafter = {after:?}\n[values]\nPORT = \"{port}\"\n",
        oci_archive(&fixtures().oci_archive)
    )
}

fn apply(s: &Socle, extra: &[&str]) -> Value {
    let dir = path_str(&declarations(s));
    let mut args = vec!["apply", "--offline", "--dir", &dir];
    args.extend_from_slice(extra);
    s.json(&args)
}

/// `apply --json` that exits 1 (some declaration was left out or failed).
fn apply_failing(s: &Socle) -> Value {
    let dir = path_str(&declarations(s));
    let out = s.run(&["--json", "apply", "--offline", "--dir", &dir]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pulls of seeds print their progress events first; the report is last.
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .last()
        .expect("apply --json prints its report")
        .expect("the report is JSON")
}

/// (name, action, status) of each step.
fn steps(report: &Value) -> Vec<(String, String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn step(name: &str, action: &str, status: &str) -> (String, String, String) {
    (name.into(), action.into(), status.into())
}

fn installed(s: &Socle) -> Vec<String> {
    s.json(&["list", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn port_of(s: &Socle, name: &str) -> String {
    let slot = fs::read_link(s.containers().join(name)).unwrap();
    let info: Value =
        serde_json::from_str(&fs::read_to_string(s.containers().join(slot).join("info")).unwrap())
            .unwrap();
    info["values"]["PORT"].as_str().unwrap().to_string()
}

#[test]
fn declarations_are_installed_in_order_then_nothing_changes() {
    let s = Socle::new();
    declare(&s, "web", &hello(9201, &["base"]));
    declare(&s, "base", &hello(9202, &[]));
    let plan = apply(&s, &["--dry-run"]);
    assert_eq!(
        steps(&plan),
        [
            step("base", "install", "planned"),
            step("web", "install", "planned")
        ]
    );
    assert!(installed(&s).is_empty(), "a dry run installs nothing");

    let first = apply(&s, &[]);
    assert_eq!(
        steps(&first),
        [
            step("base", "install", "done"),
            step("web", "install", "done")
        ]
    );
    assert_eq!(installed(&s), ["base", "web"]);
    assert_eq!(port_of(&s, "web"), "9201");
    // The order holds at every boot: a drop-in on the dependent's unit.
    let drop_in = fs::read_to_string(s.units().join("web.service.d/50-socle-after.conf")).unwrap();
    assert!(drop_in.contains("\nAfter=base.service\n"), "{drop_in}");
    assert!(drop_in.contains("\nWants=base.service\n"), "{drop_in}");
    assert!(!s.units().join("base.service.d").exists());

    let before = s.snapshot();
    let second = apply(&s, &[]);
    assert_eq!(
        steps(&second),
        [
            step("base", "unchanged", "done"),
            step("web", "unchanged", "done")
        ]
    );
    s.assert_unchanged(&before);
    let text = s.ok(&["apply", "--offline", "--dir", &path_str(&declarations(&s))]);
    assert!(text.contains("Nothing to change"), "{text}");
}

#[test]
fn a_changed_value_updates_and_a_removed_declaration_uninstalls() {
    let s = Socle::new();
    declare(&s, "web", &hello(9211, &[]));
    let base = declare(&s, "base", &hello(9212, &[]));
    apply(&s, &[]);

    declare(&s, "web", &hello(9213, &[]));
    let plan = apply(&s, &["--dry-run"]);
    let web = &plan["steps"][1];
    assert_eq!(web["action"], "update", "{plan:#}");
    assert_eq!(web["changes"][0], "values.PORT: 9211 → 9213", "{plan:#}");
    assert_eq!(port_of(&s, "web"), "9211", "a dry run changes nothing");

    let done = apply(&s, &[]);
    assert_eq!(
        steps(&done),
        [
            step("base", "unchanged", "done"),
            step("web", "update", "done")
        ]
    );
    assert_eq!(port_of(&s, "web"), "9213");

    fs::remove_file(base).unwrap();
    let done = apply(&s, &[]);
    assert_eq!(
        steps(&done),
        [
            step("base", "uninstall", "done"),
            step("web", "unchanged", "done")
        ]
    );
    assert_eq!(installed(&s), ["web"]);
    assert!(!s.units().join("base.service").exists());
}

#[test]
fn a_container_installed_by_hand_is_never_touched() {
    let s = Socle::new();
    s.pull_hello();
    s.ok(&[
        "install",
        "--name",
        "manual",
        "--set",
        "PORT=9221",
        "hello:1",
    ]);
    declare(&s, "web", &hello(9222, &[]));
    apply(&s, &[]);
    assert_eq!(installed(&s), ["manual", "web"]);

    // A declaration of the same name is refused, not taken over.
    declare(&s, "manual", &hello(9223, &[]));
    let report = apply_failing(&s);
    let manual = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "manual")
        .unwrap();
    assert_eq!(manual["status"], "failed", "{report:#}");
    assert!(
        manual["reason"]
            .as_str()
            .unwrap()
            .contains("installed by hand"),
        "{report:#}"
    );
    assert_eq!(port_of(&s, "manual"), "9221");
    fs::remove_file(declarations(&s).join("manual.toml")).unwrap();
    apply(&s, &[]);
    assert_eq!(
        installed(&s),
        ["manual", "web"],
        "apply never removes it either"
    );
}

/// Declares `text` as `bad` beside a good `good` and a `child` of `bad`;
/// returns the one problem reported.
fn bad_declaration(text: &str) -> (Socle, Value) {
    let s = Socle::new();
    declare(&s, "good", &hello(9231, &[]));
    declare(&s, "bad", text);
    declare(&s, "child", &hello(9232, &["bad"]));
    let report = apply_failing(&s);
    assert_eq!(installed(&s), ["good"], "{report:#}");
    (s, report)
}

fn problem<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no problem for {name}: {report:#}"))
}

#[test]
fn each_bad_declaration_is_named_with_file_line_and_key_and_the_rest_applies() {
    let cases: [(&str, usize, Option<&str>, &str); 6] = [
        (
            "image = \"hello:1\"\ncolour = \"blue\"\n",
            2,
            None,
            "unknown field `colour`",
        ),
        ("image = \"hello:1\n", 1, None, ""),
        (
            "image = \"hello:1\"\nstate = \"paused\"\n",
            2,
            Some("state"),
            "\"paused\"",
        ),
        (
            "image = \"hello:1\"\n[values]\nPORT = \"\"\"92\n33\"\"\"\n",
            3,
            Some("values.PORT"),
            "line break",
        ),
        (
            "image = \"hello:1\"\nafter = [\"nope\"]\n",
            2,
            Some("after"),
            "\"nope\"",
        ),
        ("image = \"no such ref!\"\n", 1, Some("image"), ""),
    ];
    for (text, line, key, words) in cases {
        let (s, report) = bad_declaration(text);
        let p = problem(&report, "bad");
        let file = path_str(&declarations(&s).join("bad.toml"));
        assert_eq!(p["file"], file.as_str(), "{text}: {p:#}");
        assert_eq!(p["line"], line, "{text}: {p:#}");
        assert_eq!(p["key"].as_str(), key, "{text}: {p:#}");
        assert!(
            p["message"].as_str().unwrap().contains(words),
            "{text}: {p:#}"
        );
        // Its dependent is left out too, saying why.
        let child = problem(&report, "child");
        assert!(
            child["message"].as_str().unwrap().contains("bad"),
            "{child:#}"
        );
        let text_out = s.run(&["apply", "--offline", "--dir", &path_str(&declarations(&s))]);
        let stdout = String::from_utf8_lossy(&text_out.stdout);
        assert!(
            stdout.contains(&format!("! bad: left out: {file}:{line}")),
            "{stdout}"
        );
    }

    // A cycle, and a missing image with --offline and no seed.
    let (_s, report) = bad_declaration("image = \"hello:1\"\nafter = [\"child\"]\n");
    assert!(
        problem(&report, "bad")["message"]
            .as_str()
            .unwrap()
            .contains("cycle"),
        "{report:#}"
    );
    let (s, report) =
        bad_declaration("image = \"hello:7\"\nseed = \"oci-archive:/nonexistent/hello.tar\"\n");
    let bad = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bad")
        .unwrap();
    assert_eq!(bad["status"], "failed", "{report:#}");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/hello.tar"),
        "{report:#}"
    );
    assert!(!s.units().join("bad.service").exists());
    let child = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "child")
        .unwrap();
    assert_eq!(child["status"], "skipped", "{report:#}");
}

#[test]
fn offline_without_a_seed_fails_that_container_only_and_masks_hide_declarations() {
    let s = Socle::new();
    declare(&s, "web", &hello(9241, &[]));
    declare(&s, "remote", "image = \"127.0.0.1:9/hello:1\"\n");
    let report = apply_failing(&s);
    let remote = &report["steps"][0];
    assert_eq!(remote["name"], "remote", "{report:#}");
    assert!(
        remote["reason"]
            .as_str()
            .unwrap()
            .contains("--offline never pulls"),
        "{report:#}"
    );
    assert_eq!(installed(&s), ["web"]);

    // An empty file masks a declaration: apply removes what it installed.
    fs::write(declarations(&s).join("remote.toml"), "").unwrap();
    fs::write(declarations(&s).join("web.toml"), "").unwrap();
    let report = apply(&s, &[]);
    assert_eq!(report["masked"], serde_json::json!(["remote", "web"]));
    assert_eq!(steps(&report), [step("web", "uninstall", "done")]);
    assert!(installed(&s).is_empty());
}

/// The `status` row of `name`.
fn status_of(s: &Socle, name: &str) -> Value {
    let dir = path_str(&declarations(s));
    let report = s.json(&["status", "--dir", &dir]);
    report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

#[test]
fn status_shows_deployments_last_operations_and_drift() {
    let s = Socle::new();
    declare(&s, "web", &hello(9261, &[]));
    apply(&s, &[]);
    assert_eq!(installed(&s), ["web"]);

    let web = status_of(&s, "web");
    assert_eq!(web["applied"], true, "{web:#}");
    assert_eq!(web["current"]["image"], "hello:1", "{web:#}");
    assert_eq!(web["rollback"], Value::Null, "{web:#}");
    assert_eq!(web["last"]["operation"], "apply: install", "{web:#}");
    assert_eq!(web["last"]["ok"], true, "{web:#}");
    assert_eq!(web["drift"], serde_json::json!([]), "{web:#}");
    // Declared but not applied yet.
    declare(&s, "ghost", "image = \"ghost:1\"\n");
    let ghost = status_of(&s, "ghost");
    assert_eq!(ghost["state"], "not installed", "{ghost:#}");
    assert!(
        ghost["drift"][0]
            .as_str()
            .unwrap()
            .contains("not installed"),
        "{ghost:#}"
    );
    fs::remove_file(declarations(&s).join("ghost.toml")).unwrap();

    // Changed by hand: the deployment drifts from the declaration, and the
    // update is the last operation, with its rollback slot.
    s.ok(&["update", "web", "--set", "PORT=9263"]);
    let web = status_of(&s, "web");
    assert_eq!(web["last"]["operation"], "update", "{web:#}");
    assert_eq!(web["rollback"]["slot"], 0, "{web:#}");
    assert_eq!(
        web["drift"],
        serde_json::json!(["values.PORT: declared 9261, deployed 9263"]),
        "{web:#}"
    );
    // A refused input changes nothing, not even the last operation.
    s.fails(&["update", "web", "--rebase", "nosuch:1"]);
    assert_eq!(status_of(&s, "web")["last"]["operation"], "update");
    s.ok(&["rollback", "web"]);
    assert_eq!(status_of(&s, "web")["last"]["operation"], "rollback");
    s.ok(&["rollback", "web"]);

    // No longer declared: apply would remove it.
    fs::remove_file(declarations(&s).join("web.toml")).unwrap();
    let web = status_of(&s, "web");
    assert!(
        web["drift"][0]
            .as_str()
            .unwrap()
            .contains("no longer declared"),
        "{web:#}"
    );
    let text = s.ok(&["status", "--dir", &path_str(&declarations(&s))]);
    assert!(
        text.contains("web: drift: installed by apply but no longer declared"),
        "{text}"
    );
}
