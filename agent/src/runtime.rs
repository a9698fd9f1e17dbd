//! Facts about the OCI runtime and the kernel that rendering needs: the
//! capability list, the runc command lines of a unit, and the default
//! `config.json` of an image that ships no template.

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image config has neither Entrypoint nor Cmd: nothing to run; ship /exports/config.json.template")]
    NoCommand,
    #[error("image config User {user:?} is not numeric uid[:gid]; socle can't resolve user names for a default config.json, ship /exports/config.json.template")]
    NonNumericUser { user: String },
    #[error("building the default config.json: {0}")]
    Spec(serde_json::Error),
    #[error("serializing config.json: {0}")]
    Serialize(serde_json::Error),
}

/// Capability names by number, as in linux/capability.h.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// runc's default set (`runc spec`): enough for a typical daemon, nothing more.
const DEFAULT_CAPABILITIES: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities numbered `0..=last`, as far as socle knows their names.
fn capabilities_up_to(last: usize) -> Vec<String> {
    CAPABILITIES
        .iter()
        .take(last.saturating_add(1))
        .map(|c| c.to_string())
        .collect()
}

/// Every capability the running kernel knows and the services of this host
/// may hold: a container asking for one outside systemd's bounding set
/// fails to start (runc's capset gets EPERM), as on a node booted in a
/// container manager that drops CAP_SYS_RESOURCE or CAP_SYS_MODULE.
pub fn all_capabilities() -> Vec<String> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let known = match std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        Some(last) => capabilities_up_to(last),
        None => {
            // Naming a capability the kernel lacks is only a warning for runc,
            // while missing one would silently weaken a privileged container.
            tracing::warn!("can't read {path}: assuming every capability socle knows");
            capabilities_up_to(usize::MAX)
        }
    };
    match services_bounding_set() {
        Some(mask) => within_bounding_set(known, mask),
        None => known,
    }
}

/// The capability bounding set systemd gives its services (PID 1's), else
/// this process's: the `CapBnd` mask of /proc/PID/status.
fn services_bounding_set() -> Option<u64> {
    ["/proc/1/status", "/proc/self/status"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|status| cap_bnd(&status))
}

fn cap_bnd(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// `caps` (numbered from 0 in kernel order) whose bit is set in `mask`.
fn within_bounding_set(caps: Vec<String>, mask: u64) -> Vec<String> {
    caps.into_iter()
        .enumerate()
        .filter(|(bit, _)| *bit < 64 && mask & (1 << bit) != 0)
        .map(|(_, c)| c)
        .collect()
}

/// atomic's `ALL_PROCESS_CAPABILITIES` format: `"CAP_A",\n"CAP_B"\n`,
/// written by templates between `[` and `]`.
fn capabilities_value(caps: &[String]) -> String {
    let quoted: Vec<String> = caps.iter().map(|c| format!("\"{c}\"")).collect();
    quoted.join(",\n") + "\n"
}

/// The value of `ALL_PROCESS_CAPABILITIES` on this kernel.
pub fn all_capabilities_value() -> String {
    capabilities_value(&all_capabilities())
}

/// The commands of a unit running one container in the foreground.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommands {
    pub exec_start: String,
    pub exec_stop: String,
    pub exec_startpre: String,
    pub exec_stoppost: String,
}

/// Quotes `s` as one word of a unit's command line: quotes and backslashes
/// escaped for systemd's unquoting, `%` and `$` doubled so that systemd's
/// specifier and variable expansion give them back literally.
pub fn systemd_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A word as is when it needs no quoting, so usual paths read as atomic wrote them.
fn systemd_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-:@=,".contains(c));
    if plain {
        s.to_string()
    } else {
        systemd_quote(s)
    }
}

/// atomic's directives for a runtime run in the foreground (`RUNTIME run`).
/// runc uses its cgroupfs driver, not `--systemd-cgroup` (atomic's choice,
/// which puts the container in a `runc-NAME.scope` of its own, outside the
/// unit): with [`container_cgroup`] as the config's `cgroupsPath` and the
/// unit's `Delegate=yes`, the container lives inside its unit's cgroup.
/// Start-pre and stop-post stay empty as in atomic; the cleanup lines come
/// from [`unit_lifecycle`].
pub fn exec_commands(runtime: &str, name: &str) -> ExecCommands {
    let runtime = systemd_word(runtime);
    let name = systemd_quote(name);
    ExecCommands {
        exec_start: format!("{runtime} run {name}"),
        exec_stop: format!("{runtime} kill {name}"),
        exec_startpre: String::new(),
        exec_stoppost: String::new(),
    }
}

/// The cgroup (relative to the cgroup root) runc puts container `name` in:
/// a child of the unit's own cgroup, `/system.slice/NAME.service/container`
/// for the default slice. `slice` is the unit's `Slice=`, if any.
pub fn container_cgroup(slice: Option<&str>, name: &str) -> String {
    let slice = slice.unwrap_or("system.slice");
    // systemd nests slices by their dashes: a-b.slice is in a.slice.
    let mut path = String::new();
    if slice != "-.slice" {
        let stem = slice.strip_suffix(".slice").unwrap_or(slice);
        let parts: Vec<&str> = stem.split('-').collect();
        for i in 1..=parts.len() {
            path.push('/');
            path.push_str(&parts[..i].join("-"));
            path.push_str(".slice");
        }
    }
    format!("{path}/{name}.service/container")
}

/// The `[Service]` lines socle adds to every container unit, so that the
/// container lives and dies with it: the unit owns the cgroup subtree runc
/// creates the container in (`Delegate=yes`), a stop sends SIGTERM to runc
/// (which passes it to the container) and SIGKILL to every process left
/// after `TimeoutStopSec` (`KillMode=mixed`, as podman's Quadlet units do),
/// and no runc state outlives a stop, a crash or a kill (`delete --force`
/// after every stop and before every start; `-`: nothing to delete is fine).
pub fn unit_lifecycle(runtime: &str, name: &str, kill_mode: &str) -> String {
    let runtime = systemd_word(runtime);
    let name = systemd_quote(name);
    format!(
        "# Added by socle: the container runs in this unit's cgroup and leaves no runc state behind.\n\
         Delegate=yes\n\
         KillMode={kill_mode}\n\
         ExecStartPre=-{runtime} delete --force {name}\n\
         ExecStopPost=-{runtime} delete --force {name}\n"
    )
}

/// `uid[:gid]` of the image config, both numeric; `None` when not numeric.
fn numeric_user(user: &str) -> Option<(u32, u32)> {
    match user.split_once(':') {
        // Like Docker when there is no passwd entry for a bare uid.
        None => Some((user.parse().ok()?, 0)),
        Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
    }
}

/// The `config.json` of an image without `config.json.template`: `runc spec`
/// made to run the image's command read-only, on the host network, as a
/// node service.
pub fn default_config(image: &ImageConfiguration) -> Result<Spec, RuntimeError> {
    let config = image.config().clone().unwrap_or_default();
    let args: Vec<String> = config
        .entrypoint()
        .iter()
        .flatten()
        .chain(config.cmd().iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let mut env: Vec<String> = config.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = match config.working_dir().as_deref() {
        None | Some("") => "/".to_string(),
        Some(d) if d.starts_with('/') => d.to_string(),
        // OCI requires an absolute cwd; Docker resolves a relative one from /.
        Some(d) => format!("/{d}"),
    };
    let (uid, gid) = match config.user().as_deref() {
        None | Some("") => (0, 0),
        Some(user) => numeric_user(user).ok_or_else(|| RuntimeError::NonNumericUser {
            user: user.to_string(),
        })?,
    };
    let caps = DEFAULT_CAPABILITIES;
    let tmpfs = |dest: &str, mode: &str| {
        json!({"destination": dest, "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", mode]})
    };
    let spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            // The rootfs is read-only: give the usual scratch places.
            tmpfs("/tmp", "mode=1777"),
            tmpfs("/run", "mode=755")
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            // No network or UTS namespace: a node service uses the host's
            // network and hostname, as atomic's system containers did.
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    serde_json::from_value(spec).map_err(RuntimeError::Spec)
}

/// `config.json` text of `spec`, the same bytes for the same spec: oci-spec
/// keeps capabilities in hash sets, so they are sorted here.
pub fn spec_to_json(spec: &Spec) -> Result<String, RuntimeError> {
    let mut value = serde_json::to_value(spec).map_err(RuntimeError::Serialize)?;
    if let Some(Value::Object(caps)) = value.pointer_mut("/process/capabilities") {
        for set in caps.values_mut() {
            if let Value::Array(list) = set {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&value).map_err(RuntimeError::Serialize)?;
    text.push('\n');
    Ok(text)
}

/// Validation of config.json texts against the OCI runtime-spec schema,
/// with Debian's copy of the schema and python3-jsonschema.
#[cfg(test)]
pub(crate) mod schema_check {
    use std::io::Write;
    use std::process::{Command, Stdio};

    const SCHEMA_DIR: &str = "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema";

    const SCRIPT: &str = r#"
import json, sys, jsonschema
d = sys.argv[1]
with open(d + "/config-schema.json") as f:
    schema = json.load(f)
resolver = jsonschema.RefResolver(base_uri="file://" + d + "/", referrer=schema)
cls = jsonschema.validators.validator_for(schema)
errors = sorted(cls(schema, resolver=resolver).iter_errors(json.load(sys.stdin)), key=str)
for e in errors:
    print("/".join(map(str, e.absolute_path)) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;

    /// Panics with the schema's complaints when `config_json` is not a valid config.
    pub(crate) fn assert_valid(config_json: &str) {
        assert!(
            std::path::Path::new(SCHEMA_DIR)
                .join("config-schema.json")
                .exists(),
            "OCI runtime-spec schema missing: install golang-github-opencontainers-specs-dev"
        );
        // Debian's python3 has python3-jsonschema; a python3 first in PATH may not.
        let python = if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .args(["-W", "ignore", "-c", SCRIPT, SCHEMA_DIR])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running python3 for schema validation");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(config_json.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "config.json does not validate against the OCI schema:\n{}{}\n{config_json}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ImageConfiguration;

    fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    #[test]
    fn capability_table_is_numbered_like_the_kernel() {
        assert_eq!(CAPABILITIES[0], "CAP_CHOWN");
        assert_eq!(CAPABILITIES[21], "CAP_SYS_ADMIN");
        assert_eq!(CAPABILITIES[37], "CAP_AUDIT_READ");
        assert_eq!(CAPABILITIES[40], "CAP_CHECKPOINT_RESTORE");
        assert_eq!(capabilities_up_to(37).len(), 38);
        assert_eq!(capabilities_up_to(63).len(), CAPABILITIES.len());
    }

    #[test]
    fn all_capabilities_follow_the_kernel_and_the_bounding_set() {
        let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let bounding = services_bounding_set().unwrap();
        let caps = all_capabilities();
        let expected = (0..=last.min(CAPABILITIES.len() - 1))
            .filter(|bit| bounding & (1 << bit) != 0)
            .count();
        assert_eq!(caps.len(), expected);
    }

    #[test]
    fn a_capability_outside_the_bounding_set_is_left_out() {
        let status = "Name:\tsystemd\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
        let mask = cap_bnd(status).unwrap();
        let caps = within_bounding_set(capabilities_up_to(40), mask);
        assert_eq!(caps.len(), 40);
        assert!(!caps.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert_eq!(caps[0], "CAP_CHOWN");
    }

    #[test]
    fn capabilities_value_has_atomics_format_and_fits_a_json_array() {
        let caps = capabilities_up_to(2);
        let value = capabilities_value(&caps);
        assert_eq!(
            value,
            "\"CAP_CHOWN\",\n\"CAP_DAC_OVERRIDE\",\n\"CAP_DAC_READ_SEARCH\"\n"
        );
        let list: Vec<String> =
            serde_json::from_str(&format!("[{}]", all_capabilities_value())).unwrap();
        assert_eq!(list, all_capabilities());
    }

    #[test]
    fn exec_commands_like_atomic() {
        let c = exec_commands("/usr/bin/runc", "etcd");
        assert_eq!(c.exec_start, "/usr/bin/runc run 'etcd'");
        assert_eq!(c.exec_stop, "/usr/bin/runc kill 'etcd'");
        assert_eq!(c.exec_startpre, "");
        assert_eq!(c.exec_stoppost, "");
    }

    #[test]
    fn the_container_cgroup_is_inside_its_unit() {
        assert_eq!(
            container_cgroup(None, "etcd"),
            "/system.slice/etcd.service/container"
        );
        assert_eq!(
            container_cgroup(Some("node-infra.slice"), "etcd"),
            "/node.slice/node-infra.slice/etcd.service/container"
        );
        assert_eq!(
            container_cgroup(Some("-.slice"), "etcd"),
            "/etcd.service/container"
        );
    }

    #[test]
    fn exec_commands_quote_what_systemd_would_interpret() {
        let c = exec_commands("/opt/my runc", "a'b%c$d\\e");
        assert_eq!(c.exec_start, r"'/opt/my runc' run 'a\'b%%c$$d\\e'");
    }

    #[test]
    fn default_config_runs_the_image_command() {
        let spec = default_config(&image(json!({
            "Entrypoint": ["/usr/bin/greeter", "--verbose"],
            "Cmd": ["--port", "80"],
            "Env": ["PATH=/usr/bin", "A=b"],
            "WorkingDir": "/srv",
            "User": "1000:100"
        })))
        .unwrap();
        let text = spec_to_json(&spec).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["process"]["args"],
            json!(["/usr/bin/greeter", "--verbose", "--port", "80"])
        );
        assert_eq!(v["process"]["env"], json!(["PATH=/usr/bin", "A=b"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"], json!({"uid": 1000, "gid": 100}));
        assert_eq!(v["process"]["terminal"], false);
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": true}));
        assert!(v.get("hostname").is_none());
        assert!(v["linux"].get("seccomp").is_none());
        let namespaces = v["linux"]["namespaces"].as_array().unwrap();
        assert!(!namespaces.contains(&json!({"type": "network"})));
        let mounts: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(mounts.contains(&"/tmp") && mounts.contains(&"/run"));
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            json!(DEFAULT_CAPABILITIES)
        );
        schema_check::assert_valid(&text);
    }

    #[test]
    fn default_config_defaults() {
        let spec = default_config(&image(json!({"Cmd": ["/bin/sh"]}))).unwrap();
        let text = spec_to_json(&spec).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(v["process"]["env"], json!([DEFAULT_PATH]));
        schema_check::assert_valid(&text);
    }

    #[test]
    fn default_config_needs_a_command() {
        assert!(matches!(
            default_config(&image(json!({"Env": ["A=b"]}))),
            Err(RuntimeError::NoCommand)
        ));
        assert!(matches!(
            default_config(&image(json!({"Cmd": [], "Entrypoint": []}))),
            Err(RuntimeError::NoCommand)
        ));
    }

    #[test]
    fn default_config_user_forms() {
        let user = |u: &str| default_config(&image(json!({"Cmd": ["x"], "User": u})));
        assert_eq!(
            user("7").unwrap().process().as_ref().unwrap().user().uid(),
            7
        );
        assert_eq!(
            user("7").unwrap().process().as_ref().unwrap().user().gid(),
            0
        );
        assert!(matches!(
            user("nobody"),
            Err(RuntimeError::NonNumericUser { .. })
        ));
        assert!(matches!(
            user("7:wheel"),
            Err(RuntimeError::NonNumericUser { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "does not validate")]
    fn schema_check_rejects_an_invalid_config() {
        schema_check::assert_valid(r#"{"ociVersion": "1.0.2", "process": {"cwd": 5}}"#);
    }

    #[test]
    fn spec_json_is_deterministic() {
        let spec = default_config(&image(json!({"Cmd": ["x"]}))).unwrap();
        let first = spec_to_json(&spec).unwrap();
        for _ in 0..20 {
            let again = default_config(&image(json!({"Cmd": ["x"]}))).unwrap();
            assert_eq!(spec_to_json(&again).unwrap(), first);
        }
    }
}
