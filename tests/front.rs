//! The smallest second front: JSON in, JSON out, over `socle::node`, used by
//! nothing else yet. It shows what a new front (the D-Bus daemon, the
//! `atomic` command line) needs for `list` and `update`: read the request,
//! call one `Node` method, write the report. The tests check that it
//! answers what the command line answers about the same node.

mod common;

use common::{fixtures, oci_archive, Socle};
use serde_json::{json, Value};
use socle::node::{one_line, Node, NodeConfig, PullSettings, Quiet, SystemdMode, UpdateRequest};

// ---- the front: 25 lines --------------------------------------------------

/// `{"op": "list", "all": BOOL}` or `{"op": "update", "name": NAME, "set":
/// ["VAR=VALUE", ...]}` → the report, or `{"error": MESSAGE}`.
fn handle(node: &Node, request: &Value) -> Value {
    let answer = match request["op"].as_str() {
        Some("list") => node
            .list(request["all"].as_bool().unwrap_or(false))
            .and_then(|r| Ok(serde_json::to_value(r)?)),
        Some("update") => {
            let mut update = UpdateRequest::new(request["name"].as_str().unwrap_or_default());
            update.set = serde_json::from_value(request["set"].clone()).unwrap_or_default();
            node.update(&update, &PullSettings::default())
                .and_then(|r| Ok(serde_json::to_value(r)?))
        }
        other => Err(anyhow::anyhow!("unknown op {other:?}: give list or update")),
    };
    answer.unwrap_or_else(|e| json!({ "error": one_line(&e) }))
}

// ---- the tests -------------------------------------------------------------

/// The node the command line of `s` works on.
fn node_of(s: &Socle) -> Node {
    let config = NodeConfig {
        state_dir: s.state(),
        unit_dir: s.units(),
        tmpfiles_dir: s.tmpfiles(),
        host_root: s.host(),
        systemd: SystemdMode::None,
        runtime: "runc".into(),
    };
    Node::new(config, Box::new(Quiet))
}

fn installed_web() -> Socle {
    let s = Socle::new();
    s.ok(&["pull", &oci_archive(&fixtures().oci_archive)]);
    s.ok(&["install", "--name", "web", "--set", "PORT=9101", "hello:1"]);
    s
}

#[test]
fn list_answers_what_the_command_line_lists() {
    let s = installed_web();
    let front = handle(&node_of(&s), &json!({"op": "list", "all": true}));
    assert_eq!(front, s.json(&["list", "--all"]));
    assert_eq!(front[0]["name"], "web", "{front:#}");
}

#[test]
fn update_through_the_front_is_what_the_command_line_sees() {
    let s = installed_web();
    let node = node_of(&s);
    let report = handle(
        &node,
        &json!({"op": "update", "name": "web", "set": ["PORT=9102"]}),
    );
    assert_eq!(report["status"], "updated", "{report:#}");
    assert_eq!(report["slot"], 1, "{report:#}");
    let listed = s.json(&["list", "--all"]);
    assert_eq!(listed[0]["slot"], 1, "{listed:#}");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(s.slot("web", 1).join("info")).unwrap())
            .unwrap();
    assert_eq!(info["values"]["PORT"], "9102", "{info:#}");
    // Nothing new: the same answer the command line gives.
    let again = handle(&node, &json!({"op": "update", "name": "web"}));
    assert_eq!(again["status"], "up to date", "{again:#}");
    assert_eq!(again, s.json(&["update", "web"]));
}

#[test]
fn a_failure_is_an_error_answer_with_the_command_lines_message() {
    let s = installed_web();
    let answer = handle(&node_of(&s), &json!({"op": "update", "name": "nope"}));
    let cli = s.fails(&["update", "nope"]);
    let message = answer["error"].as_str().expect("an error answer");
    assert!(
        message.contains("no container \"nope\" is installed"),
        "{message}"
    );
    assert!(
        cli.contains(message),
        "command line: {cli}\nfront: {message}"
    );
    let unknown = handle(&node_of(&s), &json!({"op": "frobnicate"}));
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("give list or update"));
}
