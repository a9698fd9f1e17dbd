//! `socle image lint DIR`: checks an image definition's `/exports` before it
//! is built, as atomic's syscontainers-lint did, and renders the templates
//! the way an install would so that what socle or systemd would refuse is
//! found at build time.
//!
//! DIR is a directory holding `exports/` (an image definition such as
//! `images/hello`, or an unpacked rootfs).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::deploy::render::{self, HostFacts, RenderInput};
use crate::exports::{self, Exports};
use crate::template::{self, Values};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The file of `exports/` the finding is about.
    pub file: String,
    pub message: String,
}

/// Mount options runc understands (and a few filesystems' own), for
/// catching typos such as `rbnid`.
const KNOWN_MOUNT_OPTIONS: &[&str] = &[
    "bind",
    "rbind",
    "ro",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "noatime",
    "atime",
    "nodiratime",
    "diratime",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "newinstance",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "rro",
    "rrw",
    "recursive",
    "nosymfollow",
    "idmap",
    "ridmap",
    "tmpcopyup",
];

/// Names the lint gives the variables nobody sets, so templates render.
const PLACEHOLDER: &str = "lint-placeholder";

fn finding(severity: Severity, file: &str, message: impl Into<String>) -> Finding {
    Finding {
        severity,
        file: file.into(),
        message: message.into(),
    }
}

/// Lints the image definition in `dir`.
pub fn lint(dir: &Path) -> anyhow::Result<Vec<Finding>> {
    let Some(exports) = exports::read(dir)? else {
        anyhow::bail!(
            "{}: no exports/ directory (an image definition holds exports/manifest.json, config.json.template, service.template, tmpfiles.template)",
            dir.display()
        );
    };
    let mut out = Vec::new();
    if exports.config_template.is_none() && exports.config_json.is_none() {
        out.push(finding(
            Severity::Warning,
            "config.json.template",
            "missing: socle generates a default config.json (host network, runc's default capabilities)",
        ));
    }
    check_service_template(&exports, &mut out);
    let required = render::required_variables(&exports);
    for v in &required {
        out.push(finding(
            Severity::Warning,
            "manifest.json",
            format!("${v} has no default in defaultValues: every install must --set it"),
        ));
    }
    render_and_check(&exports, &required, &mut out)?;
    Ok(out)
}

fn check_service_template(exports: &Exports, out: &mut Vec<Finding>) {
    const FILE: &str = "service.template";
    if exports.manifest.no_container_service {
        return;
    }
    let Some(unit) = &exports.service_template else {
        return; // socle's default unit is fine
    };
    let used = template::variables_in(unit);
    if !used.contains("EXEC_START") {
        out.push(finding(
            Severity::Error,
            FILE,
            "ExecStart does not use $EXEC_START: the unit would not run the container as socle deploys it",
        ));
    }
    if !used.contains("DESTDIR") {
        out.push(finding(
            Severity::Error,
            FILE,
            "no WorkingDirectory=$DESTDIR: runc finds the bundle (config.json) in the working directory",
        ));
    }
    if !used.contains("EXEC_STOP") {
        out.push(finding(
            Severity::Warning,
            FILE,
            "no ExecStop=$EXEC_STOP: systemd stops the container by signalling runc only",
        ));
    }
}

fn render_and_check(
    exports: &Exports,
    required: &BTreeSet<String>,
    out: &mut Vec<Finding>,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let destdir = scratch.path().join("lint.0");
    std::fs::create_dir_all(&destdir)?;
    let user_set: Values = required
        .iter()
        .map(|v| (v.clone(), PLACEHOLDER.to_string()))
        .collect();
    // Without a config template socle generates one from the image's
    // command, which a definition does not have yet: give it one.
    let image_config: oci_spec::image::ImageConfiguration =
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))?;
    let input = RenderInput {
        name: "lint",
        image_name: "lint:latest",
        image_id: "0000",
        destdir: &destdir,
        runtime: "/usr/sbin/runc",
        exports: Some(exports),
        image_config: &image_config,
        user_set: &user_set,
        previous: None,
        host_root: scratch.path(),
    };
    let facts = HostFacts {
        uid: 0,
        gid: 0,
        atomic: "/usr/bin/socle".into(),
        all_capabilities: crate::runtime::all_capabilities_value(),
        new_uuid: "00000000-0000-4000-8000-000000000000".into(),
    };
    let rendered = match render::render_on(&input, &facts) {
        Ok(r) => r,
        Err(e) => {
            out.push(finding(Severity::Error, "exports", e.to_string()));
            return Ok(());
        }
    };
    for d in crate::danger::find(&rendered) {
        out.push(finding(
            Severity::Warning,
            &d.file,
            format!("dangerous: {}", d.message),
        ));
    }
    check_config(
        &rendered.config_json,
        exports.config_template.as_deref().unwrap_or_default(),
        out,
    );
    if let Some(unit) = &rendered.unit {
        verify_unit(unit, scratch.path(), out)?;
    }
    Ok(())
}

/// Checks the rendered config; `template` is its source text, to tell a
/// hard-coded path from one rendered from a variable.
fn check_config(config_json: &str, template: &str, out: &mut Vec<Finding>) {
    const FILE: &str = "config.json.template";
    let Ok(config) = serde_json::from_str::<serde_json::Value>(config_json) else {
        return; // render already refused it
    };
    if config.pointer("/process/terminal") == Some(&serde_json::Value::Bool(true)) {
        out.push(finding(
            Severity::Error,
            FILE,
            "process.terminal is true: a service has no terminal; runc would wait for a console socket",
        ));
    }
    let mounts = config
        .get("mounts")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    for m in &mounts {
        let dest = m.get("destination").and_then(|d| d.as_str()).unwrap_or("?");
        let source = m.get("source").and_then(|s| s.as_str()).unwrap_or("");
        for opt in m
            .get("options")
            .and_then(|o| o.as_array())
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str())
        {
            let name = opt.split('=').next().unwrap_or(opt);
            if opt.contains('=') || KNOWN_MOUNT_OPTIONS.contains(&name) {
                continue;
            }
            let hint = KNOWN_MOUNT_OPTIONS
                .iter()
                .filter(|k| edit_distance(k, name) <= 2)
                .min_by_key(|k| edit_distance(k, name));
            out.push(finding(
                Severity::Error,
                FILE,
                match hint {
                    Some(k) => format!("mount {dest}: unknown option {opt:?}; did you mean {k:?}?"),
                    None => format!("mount {dest}: unknown option {opt:?}"),
                },
            ));
        }
        for (prefix, var) in [("/var/lib/", "STATE_DIRECTORY"), ("/run/", "RUN_DIRECTORY")] {
            if source.starts_with(prefix) && is_literal_source(template, source) {
                out.push(finding(
                    Severity::Warning,
                    FILE,
                    format!(
                        "mount {dest}: source {source} is hard-coded; use ${{{var}}} so the host can move it"
                    ),
                ));
            }
        }
    }
}

/// Whether `template` spells `"source": "<source>"` literally (not through a
/// variable). A destination with the same path does not count.
fn is_literal_source(template: &str, source: &str) -> bool {
    let quoted = format!("\"{source}\"");
    template.match_indices(&quoted).any(|(at, _)| {
        let before = template[..at].trim_end();
        before
            .strip_suffix(':')
            .is_some_and(|key| key.trim_end().ends_with("\"source\""))
    })
}

/// Runs `systemd-analyze verify` on the rendered unit; what it prints on
/// stderr about the unit is a finding.
fn verify_unit(unit: &str, scratch: &Path, out: &mut Vec<Finding>) -> anyhow::Result<()> {
    // ExecStart must name an existing binary for verify to pass; the lint
    // renders with /usr/sbin/runc, which may be absent where images are built.
    let runc = Path::new("/usr/sbin/runc");
    let unit = if runc.exists() {
        unit.to_string()
    } else {
        unit.replace("/usr/sbin/runc", "/bin/true")
    };
    let path = scratch.join("lint.service");
    std::fs::write(&path, unit)?;
    let result = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output();
    let Ok(o) = result else {
        out.push(finding(
            Severity::Warning,
            "service.template",
            "systemd-analyze is not installed: the unit was not verified",
        ));
        return Ok(());
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    for line in stderr.lines().filter(|l| l.contains("lint.service")) {
        out.push(finding(
            Severity::Error,
            "service.template",
            format!("systemd-analyze verify: {}", line.trim()),
        ));
    }
    Ok(())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join("exports").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    fn messages(f: &[Finding]) -> String {
        f.iter()
            .map(|f| format!("{:?} {}: {}", f.severity, f.file, f.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_image_of_the_project_is_clean() {
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for name in ["hello", "etcd", "flannel", "kube-apiserver"] {
            let f = lint(&images.join(name)).unwrap();
            assert!(f.is_empty(), "{name}: {}", messages(&f));
        }
        // An engine needs the host's devices: said, not hidden.
        let f = lint(&images.join("dockerd")).unwrap();
        assert_eq!(
            messages(&f),
            "Warning config.json: dangerous: read-write bind of host /dev into /dev: every host device, writable\n\
             Warning config.json: dangerous: linux.resources.devices allows every device of the host (read, write, mknod)"
        );
    }

    #[test]
    fn a_source_is_hard_coded_only_where_the_template_spells_it() {
        let literal = r#"{"destination": "/run/x", "source" : "/run/x"}"#;
        let through_var = r#"{"destination": "/run/x", "source": "${RUN_DIRECTORY}/x"}"#;
        assert!(is_literal_source(literal, "/run/x"));
        assert!(!is_literal_source(through_var, "/run/x"));
    }

    #[test]
    fn finds_what_atomic_lint_found() {
        let config = r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": true},
            "process": {"terminal": true, "args": ["/bin/sh"], "cwd": "/"},
            "mounts": [{"destination": "/data", "type": "bind", "source": "/var/lib/app",
                        "options": ["rbnid", "rw"]}]}"#;
        let d = definition(&[
            ("manifest.json", r#"{"defaultValues": {}}"#),
            ("config.json.template", config),
            (
                "service.template",
                "[Service]\nExecStart=/bin/true $WHO\n\n[Install]\nWantedBy=multi-user.target\n",
            ),
        ]);
        let all = messages(&lint(d.path()).unwrap());
        for needle in [
            "terminal is true",
            "did you mean \"rbind\"",
            "use ${STATE_DIRECTORY}",
            "$EXEC_START",
            "WorkingDirectory=$DESTDIR",
            "$WHO has no default",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn a_unit_systemd_rejects_is_an_error() {
        let d = definition(&[
            ("manifest.json", r#"{"defaultValues": {}}"#),
            (
                "service.template",
                "[Service]\nType=bogus\nExecStart=$EXEC_START\nWorkingDirectory=$DESTDIR\nExecStop=$EXEC_STOP\n",
            ),
        ]);
        let all = messages(&lint(d.path()).unwrap());
        assert!(all.contains("systemd-analyze verify"), "{all}");
    }

    #[test]
    fn a_template_that_renders_invalid_json_is_an_error() {
        let d = definition(&[
            ("manifest.json", r#"{"defaultValues": {"X": "1"}}"#),
            (
                "config.json.template",
                r#"{"root": {"path": "rootfs", "readonly": true}, $X}"#,
            ),
        ]);
        let f = lint(d.path()).unwrap();
        assert!(
            f.iter().any(|f| f.severity == Severity::Error),
            "{}",
            messages(&f)
        );
    }
}
