//! What in a rendered deployment reaches into the host in ways an admin
//! should hear about before installing: read-write binds of host system
//! directories, access to every device, destructive commands in the unit,
//! tmpfiles lines that replace or remove host paths, host files in places
//! that run code or grant access. One table, used by `socle image lint`
//! and by install and update (warnings, or errors with `--deny-dangerous`).
//!
//! These are warnings about what an image asks for, not a sandbox: an image
//! is trusted like root (docs/architecture.md, "Trust model").

use std::path::{Component, Path};

use serde_json::Value;

use crate::deploy::render::Rendered;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A read-write bind mount of this host directory (exactly).
    BindSource,
    /// A tmpfiles.d line type, on a host path outside the container's own directories.
    TmpfilesType,
    /// A host file at this path, or under it when it ends with `/`, or
    /// starting with it when it ends with `*`.
    HostFile,
    /// A command word in `Exec*=` (see [`destructive`]).
    Command,
}

struct Rule {
    kind: Kind,
    pattern: &'static str,
    why: &'static str,
}

const fn rule(kind: Kind, pattern: &'static str, why: &'static str) -> Rule {
    Rule { kind, pattern, why }
}

/// The dangerous things, all of them.
const RULES: &[Rule] = &[
    rule(Kind::BindSource, "/", "the whole host filesystem, writable"),
    rule(
        Kind::BindSource,
        "/etc",
        "the host's configuration, writable",
    ),
    rule(
        Kind::BindSource,
        "/root",
        "root's home (ssh keys, shell startup files), writable",
    ),
    rule(Kind::BindSource, "/var", "the host's state, writable"),
    rule(Kind::BindSource, "/usr", "the host's programs, writable"),
    rule(
        Kind::BindSource,
        "/boot",
        "the host's kernels and boot loader, writable",
    ),
    rule(Kind::BindSource, "/dev", "every host device, writable"),
    rule(
        Kind::TmpfilesType,
        "L+",
        "replaces whatever is at a host path with a symlink",
    ),
    rule(Kind::TmpfilesType, "C+", "replaces a host path with a copy"),
    rule(
        Kind::TmpfilesType,
        "R",
        "removes a host path and everything under it",
    ),
    rule(Kind::TmpfilesType, "r", "removes a host path"),
    rule(
        Kind::TmpfilesType,
        "D",
        "empties a host directory at every boot",
    ),
    rule(Kind::TmpfilesType, "w", "writes into an existing host file"),
    rule(Kind::TmpfilesType, "w+", "appends to an existing host file"),
    rule(
        Kind::TmpfilesType,
        "Z",
        "changes mode and owner of a host tree",
    ),
    rule(
        Kind::HostFile,
        "/root/",
        "root's home: ssh keys, shell startup files",
    ),
    rule(Kind::HostFile, "/home/", "users' homes"),
    rule(Kind::HostFile, "/etc/cron*", "cron runs it as root"),
    rule(Kind::HostFile, "/var/spool/cron/", "cron runs it"),
    rule(Kind::HostFile, "/etc/sudoers*", "grants root"),
    rule(Kind::HostFile, "/etc/passwd", "user accounts"),
    rule(Kind::HostFile, "/etc/shadow", "passwords"),
    rule(Kind::HostFile, "/etc/group", "group membership"),
    rule(Kind::HostFile, "/etc/gshadow", "group passwords"),
    rule(Kind::HostFile, "/etc/pam.d/", "authentication"),
    rule(
        Kind::HostFile,
        "/etc/security/",
        "authentication limits and access",
    ),
    rule(
        Kind::HostFile,
        "/etc/ssh/",
        "the ssh server's configuration and keys",
    ),
    rule(
        Kind::HostFile,
        "/etc/ld.so.preload",
        "loaded into every program",
    ),
    rule(
        Kind::HostFile,
        "/etc/ld.so.conf*",
        "where every program finds its libraries",
    ),
    rule(Kind::HostFile, "/etc/profile*", "run by every login shell"),
    rule(Kind::HostFile, "/etc/bash.bashrc", "run by every bash"),
    rule(
        Kind::HostFile,
        "/etc/environment",
        "every session's environment",
    ),
    rule(
        Kind::HostFile,
        "/etc/systemd/",
        "systemd runs it (units, generators, drop-ins)",
    ),
    rule(Kind::HostFile, "/usr/lib/systemd/", "systemd runs it"),
    rule(Kind::HostFile, "/lib/systemd/", "systemd runs it"),
    rule(Kind::HostFile, "/etc/init.d/", "run at boot"),
    rule(Kind::HostFile, "/etc/rc.local", "run at boot"),
    rule(
        Kind::HostFile,
        "/etc/udev/",
        "udev runs its rules' programs",
    ),
    rule(Kind::HostFile, "/etc/modprobe.d/", "kernel module loading"),
    rule(Kind::HostFile, "/etc/sysctl.d/", "kernel settings"),
    rule(Kind::HostFile, "/etc/polkit-1/", "grants privileges"),
    rule(Kind::HostFile, "/boot/", "kernels and boot loader"),
    rule(
        Kind::HostFile,
        "/etc/tmpfiles.d/",
        "systemd-tmpfiles runs it as root",
    ),
    rule(
        Kind::Command,
        "rm",
        "recursively removes a host system directory",
    ),
    rule(Kind::Command, "mkfs", "formats a file system"),
    rule(Kind::Command, "dd", "writes to a raw device"),
];

/// Host directories a recursive `rm` must not be pointed at.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/*", "/etc", "/usr", "/var", "/boot", "/root", "/home", "/bin", "/sbin", "/lib", "/opt",
];

/// One dangerous thing found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Danger {
    /// The deployment file it is in (`config.json`, the unit, `tmpfiles`, `hostfs`).
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for Danger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dangerous: {}: {}", self.file, self.message)
    }
}

fn rules(kind: Kind) -> impl Iterator<Item = &'static Rule> {
    RULES.iter().filter(move |r| r.kind == kind)
}

/// `path` without `.`, `..` resolved lexically, no trailing `/`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or("")),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

fn matches_host_path(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        path.starts_with(prefix)
    } else if pattern.ends_with('/') {
        path.starts_with(pattern)
    } else {
        path == pattern
    }
}

/// Everything dangerous in `rendered`.
pub fn find(rendered: &Rendered) -> Vec<Danger> {
    let mut out = Vec::new();
    config(&rendered.config_json, &mut out);
    if let Some(unit) = &rendered.unit {
        commands(unit, &mut out);
    }
    tmpfiles(&rendered.tmpfiles, &rendered.values, &mut out);
    for f in &rendered.host_files {
        let dest = normalize(&f.dest.to_string_lossy());
        for r in rules(Kind::HostFile).filter(|r| matches_host_path(r.pattern, &dest)) {
            out.push(Danger {
                file: "hostfs".into(),
                message: format!("installs {dest} on the host: {}", r.why),
            });
        }
    }
    out
}

fn config(config_json: &str, out: &mut Vec<Danger>) {
    let Ok(config) = serde_json::from_str::<Value>(config_json) else {
        return;
    };
    let danger = |message: String| Danger {
        file: "config.json".into(),
        message,
    };
    for mount in config["mounts"].as_array().into_iter().flatten() {
        let options: Vec<&str> = mount["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let bind = mount["type"].as_str().is_some_and(|t| t.contains("bind"))
            || options.iter().any(|o| *o == "bind" || *o == "rbind");
        let read_only = options.iter().any(|o| *o == "ro" || *o == "rro");
        let Some(source) = mount["source"].as_str() else {
            continue;
        };
        if !bind || read_only || !source.starts_with('/') {
            continue;
        }
        let source = normalize(source);
        for r in rules(Kind::BindSource).filter(|r| r.pattern == source) {
            out.push(danger(format!(
                "read-write bind of host {source} into {}: {}",
                mount["destination"].as_str().unwrap_or("?"),
                r.why
            )));
        }
    }
    for device in config["linux"]["resources"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let every_type = device["type"].as_str().is_none_or(|t| t == "a");
        if device["allow"] == Value::Bool(true)
            && every_type
            && device["major"].is_null()
            && device["minor"].is_null()
        {
            out.push(danger(
                "linux.resources.devices allows every device of the host (read, write, mknod)"
                    .into(),
            ));
        }
    }
}

/// Whether the words of one command line do what a `Command` rule names.
fn destructive(words: &[&str]) -> Option<&'static Rule> {
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    for (i, w) in words.iter().enumerate() {
        let rest = &words[i + 1..];
        let name = base(w.trim_start_matches(['-', '@', ':', '+', '!']));
        let hit = match name.as_str() {
            "rm" => {
                let recursive = rest.iter().any(|a| {
                    *a == "--recursive"
                        || (a.starts_with('-') && !a.starts_with("--") && a.contains(['r', 'R']))
                });
                recursive
                    && rest
                        .iter()
                        .any(|a| SYSTEM_DIRS.contains(&a.trim_end_matches('/')) || *a == "/")
            }
            n if n.starts_with("mkfs") => true,
            "dd" => rest.iter().any(|a| a.starts_with("of=/dev/")),
            _ => false,
        };
        if hit {
            let key = if name.starts_with("mkfs") {
                "mkfs"
            } else {
                name.as_str()
            };
            return rules(Kind::Command).find(|r| r.pattern == key);
        }
    }
    None
}

fn commands(unit: &str, out: &mut Vec<Danger>) {
    for line in unit.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !(key.starts_with("ExecStart") || key.starts_with("ExecStop") || key == "ExecReload") {
            continue;
        }
        // Words as a shell or systemd would see them, quotes dropped, so
        // `sh -c "rm -rf /"` is seen too.
        let flat: String = value
            .chars()
            .map(|c| {
                if matches!(c, '"' | '\'' | ';' | '&' | '|') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let words: Vec<&str> = flat.split_whitespace().collect();
        if let Some(r) = destructive(&words) {
            out.push(Danger {
                file: "unit".into(),
                message: format!("{key}={} {}", value.trim(), r.why),
            });
        }
    }
}

/// The container's own directories on the host, where anything goes.
fn own_dirs(values: &crate::template::Values) -> Vec<String> {
    let get = |k: &str| values.get(k).map(String::as_str).unwrap_or("");
    let name = get("NAME");
    let mut dirs: Vec<String> = ["STATE_DIRECTORY", "RUN_DIRECTORY", "CONF_DIRECTORY"]
        .iter()
        .map(|k| normalize(&format!("{}/{name}", get(k))))
        .collect();
    dirs.extend([
        format!("/var/log/{name}"),
        format!("/var/cache/{name}"),
        normalize(get("DESTDIR")),
    ]);
    dirs.retain(|d| !name.is_empty() && d != "/");
    dirs
}

fn tmpfiles(text: &str, values: &crate::template::Values, out: &mut Vec<Danger>) {
    let own = own_dirs(values);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(path)) = (fields.next(), fields.next()) else {
            continue;
        };
        if kind.starts_with('#') {
            continue;
        }
        // Modifiers other than `+` (`!`, `-`, `=`, `~`, `^`) change when, not what.
        let base: String = kind
            .chars()
            .filter(|c| c.is_alphabetic() || *c == '+')
            .collect();
        let path = normalize(&path.replace('\\', "").replace(['"', '\''], ""));
        let inside_own = own
            .iter()
            .any(|d| path == *d || path.starts_with(&format!("{d}/")));
        if inside_own {
            continue;
        }
        for r in rules(Kind::TmpfilesType).filter(|r| r.pattern == base) {
            out.push(Danger {
                file: "tmpfiles".into(),
                message: format!(
                    "{line:?} {}, outside the container's own directories",
                    r.why
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::render::HostFile;
    use std::path::PathBuf;

    fn rendered() -> Rendered {
        Rendered {
            values: [
                ("NAME", "web"),
                ("STATE_DIRECTORY", "/var/lib"),
                ("RUN_DIRECTORY", "/run"),
                ("CONF_DIRECTORY", "/etc"),
                ("DESTDIR", "/var/lib/socle/containers/web.0"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            warnings: vec![],
            config_json: r#"{"root": {"path": "rootfs", "readonly": true}}"#.into(),
            unit: Some("[Service]\nExecStart=/usr/bin/runc run web\n".into()),
            tmpfiles: "d /var/lib/web 0700 - - -\n".into(),
            host_files: vec![],
        }
    }

    #[test]
    fn a_plain_deployment_is_not_dangerous() {
        assert_eq!(find(&rendered()), vec![]);
    }

    #[test]
    fn each_class_is_found() {
        let mut r = rendered();
        r.config_json = serde_json::json!({
            "mounts": [
                {"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]},
                {"destination": "/etc-ro", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]},
                {"destination": "/e", "type": "none", "source": "/etc/", "options": ["bind"]},
                {"destination": "/data", "type": "bind", "source": "/var/lib/web", "options": ["rbind"]}
            ],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "access": "rwm"}]}}
        })
        .to_string();
        r.unit = Some("[Service]\nExecStartPre=/bin/sh -c \"rm -rf /\"\nExecStart=/bin/rm -r /tmp/x\nExecStopPost=-/usr/bin/rm --recursive --force /usr/\n".into());
        r.tmpfiles = "d /var/lib/web 0700 - - -\nR /var/lib/web/cache\nL+ /etc/resolv.conf - - - - /x\nR! /home\nD /var/lib/web\nD /tmp/shared\n".into();
        r.host_files = [
            "/root/.ssh/authorized_keys",
            "/etc/cron.d/x",
            "/etc/hello/ok.conf",
            "/usr/local/bin/tool",
        ]
        .iter()
        .map(|d| HostFile {
            source: PathBuf::from("/x"),
            dest: PathBuf::from(d),
            content: None,
        })
        .collect();
        let found: Vec<String> = find(&r).iter().map(|d| d.to_string()).collect();
        let text = found.join("\n");
        for needle in [
            "config.json: read-write bind of host / into /host",
            "config.json: read-write bind of host /etc into /e",
            "allows every device",
            "unit: ExecStartPre=/bin/sh -c \"rm -rf /\" recursively removes",
            "unit: ExecStopPost=-/usr/bin/rm --recursive --force /usr/",
            "tmpfiles: \"L+ /etc/resolv.conf - - - - /x\"",
            "tmpfiles: \"R! /home\"",
            "tmpfiles: \"D /tmp/shared\"",
            "hostfs: installs /root/.ssh/authorized_keys",
            "hostfs: installs /etc/cron.d/x",
        ] {
            assert!(text.contains(needle), "{needle} not in:\n{text}");
        }
        assert_eq!(found.len(), 10, "{text}");
    }
}
