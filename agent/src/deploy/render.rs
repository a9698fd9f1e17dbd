//! Everything that turns an image and values into the files of one deployment:
//! the values themselves, `config.json`, the unit, the tmpfiles lines and the
//! files for the host. Nothing is written here; the deploy code does that.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde_json::Value;

use crate::escape::{self, Origin};
use crate::exports::{Exports, ExportsError};
use crate::runtime::{self, RuntimeError};
use crate::template::{self, Resolved, TemplateError, Values};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Exports(#[from] ExportsError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{file}: the rendered configuration is not valid JSON (line {line}, column {column}): {message}")]
    InvalidJson {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {problem}; socle runs only read-only root filesystems at \"rootfs\"")]
    InvalidRoot { file: String, problem: String },
    #[error("manifest.json: renameFiles {key:?} renders to {dest:?}, which is not an absolute, normalized host path")]
    RenameDestination { key: String, dest: String },
    #[error("manifest.json: renameFiles maps both {first} and {second} to {dest}")]
    DuplicateDestination {
        dest: PathBuf,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("finding the socle executable for $ATOMIC: {0}")]
    CurrentExe(io::Error),
    #[error("--set {names}: image {image} has no such variable ({listed}); check the spelling, or pass --force to set it anyway")]
    UnknownSet {
        names: String,
        image: String,
        listed: String,
    },
    #[error("{what} {path:?} is not valid UTF-8 and can't be a template value")]
    NonUtf8Path { what: &'static str, path: PathBuf },
}

/// Facts of the host the values depend on, gathered once so that rendering
/// itself is pure and tests can pin them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Effective uid and gid of socle: `HOST_UID`, `HOST_GID`.
    pub uid: u32,
    pub gid: u32,
    /// `ATOMIC`: the path of the socle binary.
    pub atomic: PathBuf,
    /// `ALL_PROCESS_CAPABILITIES`, in atomic's format.
    pub all_capabilities: String,
    /// The `UUID` of a deployment that has none yet.
    pub new_uuid: String,
}

impl HostFacts {
    /// The facts of the running host.
    pub fn current() -> Result<Self, RenderError> {
        let uuid_path = Path::new("/proc/sys/kernel/random/uuid");
        let new_uuid = std::fs::read_to_string(uuid_path)
            .map_err(|source| RenderError::Read {
                path: uuid_path.to_path_buf(),
                source,
            })?
            .trim()
            .to_string();
        Ok(HostFacts {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            atomic: std::env::current_exe().map_err(RenderError::CurrentExe)?,
            all_capabilities: runtime::all_capabilities_value(),
            new_uuid,
        })
    }
}

/// What one deployment is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub name: &'a str,
    /// As the user named it (`IMAGE_NAME`).
    pub image_name: &'a str,
    /// The image's id, its config digest without `sha256:` (`IMAGE_ID`).
    pub image_id: &'a str,
    /// The slot directory, e.g. `/var/lib/socle/containers/NAME.0` (`DESTDIR`).
    pub destdir: &'a Path,
    /// Path of the OCI runtime the unit runs (`RUNTIME`, `EXEC_*`).
    pub runtime: &'a str,
    /// `None` when the image has no `/exports`.
    pub exports: Option<&'a Exports>,
    pub image_config: &'a ImageConfiguration,
    /// `--set` values.
    pub user_set: &'a Values,
    /// Values of the deployment being updated; its `UUID` is kept.
    pub previous: Option<&'a Values>,
    /// Where the host's `/` is (`/` except in tests): bind sources are checked there.
    pub host_root: &'a Path,
}

/// A file of `exports/hostfs` and where it goes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Absolute path inside `rootfs/exports/hostfs`.
    pub source: PathBuf,
    /// Absolute host path, not prefixed by `host_root`.
    pub dest: PathBuf,
    /// The rendered content when the file is listed in `installedFilesTemplate`;
    /// `None` means copy (or link) `source` as it is.
    pub content: Option<String>,
}

/// The files of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub values: Values,
    pub warnings: Vec<String>,
    pub config_json: String,
    /// `None` for a `noContainerService` image.
    pub unit: Option<String>,
    pub tmpfiles: String,
    pub host_files: Vec<HostFile>,
}

/// Variables the host provides (overridable), see docs/architecture.md; kept next to
/// `compute_values_on`, which gives them their values.
const OS_PROVIDED: &[&str] = &[
    "RUN_DIRECTORY",
    "STATE_DIRECTORY",
    "CONF_DIRECTORY",
    "PIDFILE",
    "UUID",
    "ALL_PROCESS_CAPABILITIES",
    "RUNTIME",
    "ATOMIC",
];

/// Variables the templates use that no image default, host value or forced
/// value provides: an install must `--set` them.
pub fn required_variables(exports: &Exports) -> BTreeSet<String> {
    [
        &exports.config_template,
        &exports.service_template,
        &exports.tmpfiles_template,
    ]
    .into_iter()
    .flatten()
    .flat_map(|t| template::variables_in(t))
    .filter(|v| {
        !exports.manifest.default_values.contains_key(v)
            && !template::FORCED.contains(&v.as_str())
            && !OS_PROVIDED.contains(&v.as_str())
    })
    .collect()
}

/// Every variable the image has: those its templates, host file templates,
/// `renameFiles` and probe use, and its `defaultValues`. A `--set` of
/// anything else would be silently ignored.
pub fn image_variables(exports: Option<&Exports>) -> Result<BTreeSet<String>, RenderError> {
    let Some(exports) = exports else {
        return Ok(BTreeSet::new());
    };
    let manifest = &exports.manifest;
    let mut texts: Vec<String> = [
        &exports.config_template,
        &exports.service_template,
        &exports.tmpfiles_template,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    texts.extend(manifest.rename_files.values().cloned());
    texts.extend(manifest.health_check.iter().map(|h| h.to_string()));
    if let Some(hostfs) = &exports.hostfs {
        for file in &manifest.installed_files_template {
            let path = hostfs.join(file.trim_start_matches('/'));
            if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
                texts.push(
                    std::fs::read_to_string(&path)
                        .map_err(|source| RenderError::Read { path, source })?,
                );
            }
        }
    }
    let mut names: BTreeSet<String> = texts
        .iter()
        .flat_map(|t| template::variables_in(t))
        .collect();
    names.extend(manifest.default_values.keys().cloned());
    // PIDFILE is derived from RUN_DIRECTORY.
    if names.contains("PIDFILE") {
        names.insert("RUN_DIRECTORY".to_string());
    }
    Ok(names)
}

/// Checks `--set` names against the image's variables: an unknown one is an
/// error, or with `force` a warning (returned). Forced names are left to
/// [`template::resolve`], which ignores them with a warning.
pub fn check_set_names(
    exports: Option<&Exports>,
    image: &str,
    set: &Values,
    force: bool,
) -> Result<Vec<String>, RenderError> {
    let known = image_variables(exports)?;
    let unknown: Vec<&str> = set
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(*k) && !template::FORCED.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let settable: Vec<&str> = known
        .iter()
        .map(String::as_str)
        .filter(|k| !template::FORCED.contains(k))
        .collect();
    let listed = if settable.is_empty() {
        "it has none".to_string()
    } else {
        format!("its variables are {}", settable.join(", "))
    };
    let names = unknown.join(", ");
    if force {
        Ok(vec![format!(
            "--set {names}: image {image} has no such variable ({listed}); set anyway (--force)"
        )])
    } else {
        Err(RenderError::UnknownSet {
            names,
            image: image.to_string(),
            listed,
        })
    }
}

/// The unit file name of deployment `name`.
pub fn unit_name(name: &str) -> String {
    format!("{name}.service")
}

fn utf8<'p>(what: &'static str, path: &'p Path) -> Result<&'p str, RenderError> {
    path.to_str().ok_or_else(|| RenderError::NonUtf8Path {
        what,
        path: path.to_path_buf(),
    })
}

fn owned(pairs: &[(&str, &str)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The values of a deployment: `--set`, then the OS-provided ones, then the
/// image's `defaultValues`; the forced ones always computed.
pub fn compute_values(input: &RenderInput) -> Result<Resolved, RenderError> {
    compute_values_on(input, &HostFacts::current()?)
}

/// [`compute_values`] with the given host facts.
pub fn compute_values_on(input: &RenderInput, host: &HostFacts) -> Result<Resolved, RenderError> {
    // atomic derived PIDFILE from the RUN_DIRECTORY in effect, a --set one included.
    let run_directory = input
        .user_set
        .get("RUN_DIRECTORY")
        .map_or("/run", String::as_str);
    let pidfile = format!(
        "{}/container-{}.pid",
        run_directory.trim_end_matches('/'),
        input.name
    );
    let uuid = input
        .previous
        .and_then(|p| p.get("UUID"))
        .unwrap_or(&host.new_uuid);
    let os_provided = owned(&[
        ("RUN_DIRECTORY", "/run"),
        ("STATE_DIRECTORY", "/var/lib"),
        ("CONF_DIRECTORY", "/etc"),
        ("PIDFILE", &pidfile),
        ("UUID", uuid),
        ("ALL_PROCESS_CAPABILITIES", &host.all_capabilities),
        ("RUNTIME", input.runtime),
        ("ATOMIC", utf8("socle executable", &host.atomic)?),
    ]);
    let image_defaults = input
        .exports
        .map(|e| e.manifest.default_values.clone())
        .unwrap_or_default();
    let exec = runtime::exec_commands(input.runtime, input.name);
    let forced = owned(&[
        ("DESTDIR", utf8("deployment directory", input.destdir)?),
        ("NAME", input.name),
        ("EXEC_START", &exec.exec_start),
        ("EXEC_STOP", &exec.exec_stop),
        ("EXEC_STARTPRE", &exec.exec_startpre),
        ("EXEC_STOPPOST", &exec.exec_stoppost),
        ("HOST_UID", &host.uid.to_string()),
        ("HOST_GID", &host.gid.to_string()),
        ("IMAGE_NAME", input.image_name),
        ("IMAGE_ID", input.image_id),
    ]);
    Ok(template::resolve(
        input.user_set,
        &os_provided,
        &image_defaults,
        &forced,
    ))
}

/// Renders every file of the deployment.
pub fn render(input: &RenderInput) -> Result<Rendered, RenderError> {
    render_on(input, &HostFacts::current()?)
}

/// [`render`] with the given host facts.
pub fn render_on(input: &RenderInput, host: &HostFacts) -> Result<Rendered, RenderError> {
    let Resolved {
        values,
        mut warnings,
    } = compute_values_on(input, host)?;
    let exports = input.exports;
    let origins = |name: &str| value_origin(input, name);

    let config_json = match exports {
        Some(Exports {
            config_json: Some(text),
            ..
        }) => {
            check_config(text, "config.json")?;
            text.clone()
        }
        Some(Exports {
            config_template: Some(text),
            ..
        }) => {
            let file = "config.json.template";
            let text =
                template::substitute_into(text, &values, file, &mut escape::Json::new(&origins))?;
            check_config(&text, file)?;
            text
        }
        _ => {
            warnings.push(match exports {
                None => "image has no /exports: using a default config.json and unit".to_string(),
                Some(_) => {
                    "image has no /exports/config.json.template: using a default config.json"
                        .to_string()
                }
            });
            runtime::spec_to_json(&runtime::default_config(input.image_config)?)?
        }
    };

    let no_service = exports.is_some_and(|e| e.manifest.no_container_service);
    let unit = match exports.and_then(|e| e.service_template.as_deref()) {
        _ if no_service => None,
        Some(text) => Some(template::substitute_into(
            text,
            &values,
            "service.template",
            &mut escape::Unit::new(&origins),
        )?),
        None => Some(default_unit(&values)),
    };
    // The container belongs to its unit: runc creates it in a child of the
    // unit's cgroup, which the unit delegates and cleans up after.
    let (unit, config_json) = match unit {
        Some(text) => {
            let slice = service_setting(&text, "Slice");
            let cgroup = runtime::container_cgroup(slice.as_deref(), input.name);
            let config_json = with_cgroups_path(&config_json, &cgroup, &mut warnings)?;
            (
                Some(bind_container_to_unit(&text, input, &mut warnings)),
                config_json,
            )
        }
        None => (None, config_json),
    };

    let host_files = match exports {
        Some(e) => host_files(e, &values)?,
        None => Vec::new(),
    };

    let tmpfiles = match exports.and_then(|e| e.tmpfiles_template.as_deref()) {
        Some(text) => template::substitute_into(
            text,
            &values,
            "tmpfiles.template",
            &mut escape::Tmpfiles::new(&origins),
        )?,
        None => missing_bind_sources_tmpfiles(&config_json, input.host_root, &host_files),
    };

    Ok(Rendered {
        values,
        warnings,
        config_json,
        unit,
        tmpfiles,
        host_files,
    })
}

/// Where the value of `name` came from, for the escaping and its errors.
fn value_origin(input: &RenderInput, name: &str) -> Origin {
    if template::FORCED.contains(&name) {
        Origin::Socle
    } else if input.user_set.contains_key(name) {
        Origin::Set
    } else if OS_PROVIDED.contains(&name) {
        Origin::Socle
    } else {
        Origin::Image
    }
}

/// The last value of `key` in the `[Service]` section of a unit.
fn service_setting(unit: &str, key: &str) -> Option<String> {
    let mut in_service = false;
    let mut value = None;
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if let (true, Some((k, v))) = (in_service, line.split_once('=')) {
            if k.trim() == key {
                value = Some(v.trim().to_string()).filter(|v| !v.is_empty());
            }
        }
    }
    value
}

/// The unit with socle's lifecycle lines at the end of its `[Service]`
/// section (added when the template has none). A `KillMode` that would let
/// container processes outlive the unit is replaced, with a warning.
fn bind_container_to_unit(unit: &str, input: &RenderInput, warnings: &mut Vec<String>) -> String {
    let image_kill_mode = service_setting(unit, "KillMode");
    let kill_mode = match image_kill_mode.as_deref() {
        Some("control-group") => "control-group",
        Some(other @ ("process" | "none")) => {
            warnings.push(format!(
                "service.template: KillMode={other} would let the container's processes outlive its unit; using KillMode=mixed"
            ));
            "mixed"
        }
        _ => "mixed",
    };
    let lines = runtime::unit_lifecycle(input.runtime, input.name, kill_mode);
    let mut out = String::with_capacity(unit.len() + lines.len() + 16);
    let mut in_service = false;
    let mut added = false;
    for line in unit.split_inclusive('\n') {
        let header = line.trim();
        if header.starts_with('[') {
            if in_service && !added {
                // Right after the section's last setting, before blank lines.
                let kept = out.trim_end_matches('\n').len();
                out.truncate(kept);
                out.push('\n');
                out.push_str(&lines);
                out.push('\n');
                added = true;
            }
            in_service = header == "[Service]";
        }
        let setting = line.split_once('=').map(|(k, _)| k.trim());
        if in_service && setting == Some("KillMode") {
            // Ours comes last and wins; the image's is kept as a comment.
            out.push_str("# (replaced by socle) ");
        }
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    if !added {
        if !in_service {
            out.push_str("\n[Service]\n");
        }
        out.push_str(&lines);
    }
    out
}

/// `config_json` with `linux.cgroupsPath` set to `cgroup`; an image's own
/// value is replaced, with a warning.
fn with_cgroups_path(
    config_json: &str,
    cgroup: &str,
    warnings: &mut Vec<String>,
) -> Result<String, RenderError> {
    let mut config = parse_config(config_json, "config.json")?;
    let Some(object) = config.as_object_mut() else {
        return Ok(config_json.to_string());
    };
    let linux = object
        .entry("linux")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(linux) = linux.as_object_mut() else {
        return Ok(config_json.to_string());
    };
    match linux.get("cgroupsPath").and_then(Value::as_str) {
        Some(p) if p == cgroup => return Ok(config_json.to_string()),
        Some(p) => warnings.push(format!(
            "config.json: linux.cgroupsPath {p:?} replaced by {cgroup:?}: the container runs in its unit's cgroup"
        )),
        None => {}
    }
    linux.insert("cgroupsPath".into(), Value::String(cgroup.to_string()));
    Ok(serde_json::to_string_pretty(&config).unwrap_or_else(|_| config_json.to_string()) + "\n")
}

/// `text` as JSON; an error names `file` and the position.
fn parse_config(text: &str, file: &str) -> Result<Value, RenderError> {
    serde_json::from_str(text).map_err(|e| RenderError::InvalidJson {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// The checks atomic made on a config.json before installing it.
fn check_config(text: &str, file: &str) -> Result<(), RenderError> {
    let config = parse_config(text, file)?;
    let invalid = |problem: String| RenderError::InvalidRoot {
        file: file.to_string(),
        problem,
    };
    let root = config
        .get("root")
        .ok_or_else(|| invalid("no \"root\"".to_string()))?;
    match root.get("path") {
        Some(Value::String(p)) if p == "rootfs" => {}
        other => {
            return Err(invalid(format!(
                "root.path is {}, not \"rootfs\"",
                shown(other)
            )))
        }
    }
    match root.get("readonly") {
        Some(Value::Bool(true)) => Ok(()),
        other => Err(invalid(format!(
            "root.readonly is {}, not true",
            shown(other)
        ))),
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "missing".to_string(), Value::to_string)
}

/// Escapes a value for a unit file setting that is not a command line.
fn unit_value(s: &str) -> String {
    s.replace('%', "%%")
}

/// atomic's default unit, run in the foreground. runc exits with 143 when
/// `runc kill` stops the container with SIGTERM: that is a clean stop.
fn default_unit(values: &Values) -> String {
    let get = |k: &str| values.get(k).map_or("", String::as_str);
    let mut unit = format!(
        "[Unit]\nDescription={}\n\n[Service]\n",
        unit_value(get("NAME"))
    );
    for (directive, key) in [
        ("ExecStartPre", "EXEC_STARTPRE"),
        ("ExecStart", "EXEC_START"),
        ("ExecStop", "EXEC_STOP"),
        ("ExecStopPost", "EXEC_STOPPOST"),
    ] {
        if !get(key).is_empty() {
            unit.push_str(&format!("{directive}={}\n", get(key)));
        }
    }
    unit.push_str(&format!(
        "Restart=on-failure\nSuccessExitStatus=143 SIGTERM\nWorkingDirectory={}\n\n[Install]\nWantedBy=multi-user.target\n",
        unit_value(get("DESTDIR"))
    ));
    unit
}

/// `d` lines for the bind-mount sources of `config_json` missing on the host,
/// so that systemd-tmpfiles creates them before the container starts.
/// Sources that the host files will create are left out: atomic listed them
/// too, and a `d` line for a file the image installs would make it a directory.
fn missing_bind_sources_tmpfiles(
    config_json: &str,
    host_root: &Path,
    host_files: &[HostFile],
) -> String {
    let Ok(config) = serde_json::from_str::<Value>(config_json) else {
        return String::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for mount in config["mounts"].as_array().into_iter().flatten() {
        let by_type = mount["type"].as_str().is_some_and(|t| t.contains("bind"));
        let by_option = mount["options"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount["source"].as_str() else {
            continue;
        };
        if !(by_type || by_option) || !source.starts_with('/') || !seen.insert(source) {
            continue;
        }
        let installed = host_files.iter().any(|f| f.dest.starts_with(source));
        let on_host = host_root.join(source.trim_start_matches('/'));
        if !installed && !on_host.exists() {
            out.push_str(&format!(
                "d {} 0700 - - -\n",
                escape::tmpfiles_field(source, true)
            ));
        }
    }
    out
}

/// Whether `path` is absolute with only normal components.
fn is_clean_absolute(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && !path.contains("//")
}

/// atomic's renaming: each leading part of the host path, from the first
/// component on, is replaced when it is a key, so a renamed directory renames
/// everything under it.
fn rename(path: &str, renames: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for part in path.split('/').skip(1) {
        out.push('/');
        out.push_str(part);
        if let Some(to) = renames.get(&out) {
            out = to.clone();
        }
    }
    out
}

fn host_files(exports: &Exports, values: &Values) -> Result<Vec<HostFile>, RenderError> {
    let Some(hostfs) = &exports.hostfs else {
        return Ok(Vec::new());
    };
    let manifest = &exports.manifest;
    let mut renames = BTreeMap::new();
    for (key, to) in &manifest.rename_files {
        let file = format!("manifest.json (renameFiles {key})");
        let dest = template::substitute(to, values, &file)?;
        if !is_clean_absolute(&dest) {
            return Err(RenderError::RenameDestination {
                key: key.clone(),
                dest,
            });
        }
        let key = key.trim_end_matches('/');
        renames.insert(key.to_string(), dest.trim_end_matches('/').to_string());
    }
    let templates: BTreeSet<&str> = manifest
        .installed_files_template
        .iter()
        .map(String::as_str)
        .collect();

    let mut by_dest: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for rel in exports.hostfs_files()? {
        let rel_str = utf8("hostfs file", &rel)?;
        let original = format!("/{rel_str}");
        let dest = rename(&original, &renames);
        let source = hostfs.join(&rel);
        // atomic matched installedFilesTemplate against the renamed path only,
        // so a file renamed with $NAME could never be a template; the path
        // under hostfs is what image authors write, so both match.
        let is_template =
            templates.contains(dest.as_str()) || templates.contains(original.as_str());
        let content = if is_template && source.symlink_metadata().is_ok_and(|m| m.is_file()) {
            let text = std::fs::read_to_string(&source).map_err(|e| RenderError::Read {
                path: source.clone(),
                source: e,
            })?;
            Some(template::substitute(
                &text,
                values,
                &format!("hostfs{original}"),
            )?)
        } else {
            None
        };
        let dest = PathBuf::from(dest);
        if let Some(first) = by_dest.insert(dest.clone(), source.clone()) {
            return Err(RenderError::DuplicateDestination {
                dest,
                first,
                second: source,
            });
        }
        out.push(HostFile {
            source,
            dest,
            content,
        });
    }
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports;
    use crate::runtime::schema_check;
    use serde_json::json;

    const UUID: &str = "0f6c4c9e-5b0a-4b8e-9a51-3f0f2f4f6c11";
    const IMAGE_ID: &str = "5d2c1f0e8b7a6c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

    fn fixture(name: &str) -> Exports {
        let rootfs = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/deploy/fixtures")
            .join(name);
        exports::read(&rootfs).unwrap().unwrap()
    }

    fn host() -> HostFacts {
        HostFacts {
            uid: 0,
            gid: 0,
            atomic: PathBuf::from("/usr/bin/socle"),
            all_capabilities: "\"CAP_CHOWN\",\n\"CAP_KILL\"\n".to_string(),
            new_uuid: UUID.to_string(),
        }
    }

    fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    /// Everything a test may change, owned, with a default for each.
    struct Case {
        name: String,
        destdir: PathBuf,
        runtime: String,
        exports: Option<Exports>,
        image: ImageConfiguration,
        user_set: Values,
        previous: Option<Values>,
        host_root: PathBuf,
        host: HostFacts,
    }

    impl Case {
        fn new(exports: Option<Exports>) -> Case {
            Case {
                name: "greeter".to_string(),
                destdir: PathBuf::from("/var/lib/socle/containers/greeter.0"),
                runtime: "/usr/bin/runc".to_string(),
                exports,
                image: image(
                    json!({"Entrypoint": ["/usr/bin/greeter"], "Cmd": ["--port", "80"],
                                    "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "WorkingDir": "/srv"}),
                ),
                user_set: Values::new(),
                previous: None,
                // Nothing exists there: every bind source is missing.
                host_root: PathBuf::from("/nonexistent-socle-host-root"),
                host: host(),
            }
        }

        fn input(&self) -> RenderInput<'_> {
            RenderInput {
                name: &self.name,
                image_name: "registry.example/greeter:1.0",
                image_id: IMAGE_ID,
                destdir: &self.destdir,
                runtime: &self.runtime,
                exports: self.exports.as_ref(),
                image_config: &self.image,
                user_set: &self.user_set,
                previous: self.previous.as_ref(),
                host_root: &self.host_root,
            }
        }

        fn render(&self) -> Result<Rendered, RenderError> {
            render_on(&self.input(), &self.host)
        }
    }

    fn snapshot(name: &str, value: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(format!("render_{name}"), value));
    }

    /// Runs `systemd-analyze verify` on `unit` and expects it to say nothing.
    fn assert_unit_verifies(name: &str, unit: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(unit_name(name));
        std::fs::write(&path, unit).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("running systemd-analyze (install systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}:\n{stderr}\n{unit}",
            path.display()
        );
    }

    /// A case whose unit systemd-analyze can verify: the runtime and the
    /// working directory must exist.
    fn verifiable(mut case: Case, workdir: &Path) -> Case {
        case.runtime = "/bin/true".to_string();
        case.destdir = workdir.to_path_buf();
        case
    }

    #[test]
    fn greeter_renders_like_atomic() {
        let case = Case::new(Some(fixture("greeter")));
        let r = case.render().unwrap();
        assert_eq!(r.warnings, Vec::<String>::new());
        snapshot("greeter_unit", r.unit.as_deref().unwrap());
        snapshot("greeter_config_json", &r.config_json);
        snapshot("greeter_tmpfiles", &r.tmpfiles);
        snapshot(
            "greeter_values",
            &serde_json::to_string_pretty(&r.values).unwrap(),
        );
        schema_check::assert_valid(&r.config_json);

        let hostfs = case.exports.as_ref().unwrap().hostfs.clone().unwrap();
        assert_eq!(
            r.host_files,
            vec![
                HostFile {
                    source: hostfs.join("etc/hello/hello.conf"),
                    dest: PathBuf::from("/etc/hello/greeter.conf"),
                    content: Some(
                        "# Greeter instance greeter: edit and restart greeter.service.\n\
                         PORT=8081\nRECEIVER=world\n# A literal dollar: $HOME\n"
                            .to_string()
                    ),
                },
                HostFile {
                    source: hostfs.join("usr/local/bin/greet"),
                    dest: PathBuf::from("/usr/local/bin/greet"),
                    content: None,
                },
            ]
        );
    }

    #[test]
    fn greeter_values_follow_precedence() {
        let mut case = Case::new(Some(fixture("greeter")));
        case.user_set = owned(&[
            ("PORT", "9000"),
            ("NAME", "x"),
            ("CONF_DIRECTORY", "/srv/etc"),
        ]);
        let r = case.render().unwrap();
        assert_eq!(r.values["PORT"], "9000");
        assert_eq!(r.values["RECEIVER"], "world");
        assert_eq!(r.values["NAME"], "greeter");
        assert_eq!(r.values["PIDFILE"], "/run/container-greeter.pid");
        assert_eq!(r.values["DESTDIR"], "/var/lib/socle/containers/greeter.0");
        assert_eq!(r.values["IMAGE_ID"], IMAGE_ID);
        assert_eq!(r.values["ATOMIC"], "/usr/bin/socle");
        assert_eq!(r.values["RUNTIME"], "/usr/bin/runc");
        assert_eq!(r.values["EXEC_START"], "/usr/bin/runc run 'greeter'");
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("NAME"));
        assert_eq!(
            r.host_files[0].dest,
            PathBuf::from("/srv/etc/hello/greeter.conf")
        );
        assert!(r.config_json.contains("\"9000\""));
    }

    #[test]
    fn pidfile_follows_a_set_run_directory() {
        let mut case = Case::new(None);
        case.user_set = owned(&[("RUN_DIRECTORY", "/run/user/1000/")]);
        let r = case.render().unwrap();
        assert_eq!(r.values["PIDFILE"], "/run/user/1000/container-greeter.pid");
    }

    #[test]
    fn uuid_is_new_or_kept() {
        let case = Case::new(Some(fixture("greeter")));
        assert_eq!(case.render().unwrap().values["UUID"], UUID);
        let mut case = Case::new(Some(fixture("greeter")));
        case.previous = Some(owned(&[("UUID", "kept-uuid"), ("PORT", "1")]));
        let r = case.render().unwrap();
        assert_eq!(r.values["UUID"], "kept-uuid");
        assert_eq!(
            r.values["PORT"], "8081",
            "only the UUID comes from previous"
        );
    }

    #[test]
    fn current_host_facts() {
        let h = HostFacts::current().unwrap();
        assert_eq!(h.new_uuid.len(), 36);
        assert_ne!(HostFacts::current().unwrap().new_uuid, h.new_uuid);
        assert_eq!(h.uid, rustix::process::geteuid().as_raw());
        assert!(h.all_capabilities.starts_with("\"CAP_CHOWN\",\n"));
    }

    #[test]
    fn greeter_unit_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let case = verifiable(Case::new(Some(fixture("greeter"))), dir.path());
        assert_unit_verifies("greeter", &case.render().unwrap().unit.unwrap());
    }

    #[test]
    fn default_unit_with_special_characters_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let workdir = dir.path().join("slot 100%");
        std::fs::create_dir(&workdir).unwrap();
        let mut case = verifiable(Case::new(None), &workdir);
        case.name = "we'ird%n$ame".to_string();
        let unit = case.render().unwrap().unit.unwrap();
        assert!(unit.contains("run 'we\\'ird%%n$$ame'"), "{unit}");
        assert_unit_verifies("weird", &unit);
    }

    #[test]
    fn image_without_exports_gets_default_config_and_unit() {
        let r = Case::new(None).render().unwrap();
        assert_eq!(
            r.warnings,
            vec!["image has no /exports: using a default config.json and unit"]
        );
        snapshot("no_exports_unit", r.unit.as_deref().unwrap());
        snapshot("no_exports_config_json", &r.config_json);
        assert_eq!(r.tmpfiles, "");
        assert!(r.host_files.is_empty());
        schema_check::assert_valid(&r.config_json);
    }

    #[test]
    fn default_unit_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let case = verifiable(Case::new(None), dir.path());
        assert_unit_verifies("greeter", &case.render().unwrap().unit.unwrap());
    }

    #[test]
    fn no_container_service_has_no_unit() {
        let mut case = Case::new(Some(fixture("files-only")));
        case.name = "motd".to_string();
        let r = case.render().unwrap();
        assert_eq!(r.unit, None);
        assert_eq!(
            r.warnings,
            vec!["image has no /exports/config.json.template: using a default config.json"]
        );
        snapshot("files_only_config_json", &r.config_json);
        snapshot("files_only_tmpfiles", &r.tmpfiles);
        let files: Vec<(String, Option<String>)> = r
            .host_files
            .iter()
            .map(|f| (f.dest.display().to_string(), f.content.clone()))
            .collect();
        assert_eq!(
            files,
            vec![
                (
                    "/etc/motd.d/files-only".to_string(),
                    Some("Welcome from motd (registry.example/greeter:1.0)\n".to_string())
                ),
                ("/usr/local/share/motd/data".to_string(), None),
                (
                    "/usr/local/share/motd/level".to_string(),
                    Some("level=3 enabled=true\n".to_string())
                ),
            ]
        );
    }

    fn with_exports(change: impl FnOnce(&mut Exports)) -> Case {
        let mut e = fixture("greeter");
        change(&mut e);
        Case::new(Some(e))
    }

    #[test]
    fn unknown_variable_in_service_template_is_named() {
        let case = with_exports(|e| {
            e.service_template =
                Some("[Unit]\nDescription=$NAME\n\n[Service]\nExecStart=$EXEC_START $FOO\n".into())
        });
        let msg = case.render().unwrap_err().to_string();
        assert_eq!(msg, "service.template: unknown variable $FOO (line 5)");
    }

    #[test]
    fn unknown_variable_in_hostfs_template_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let hostfs = dir.path().join("exports/hostfs/etc");
        std::fs::create_dir_all(&hostfs).unwrap();
        std::fs::write(hostfs.join("x.conf"), "a=$MISSING\n").unwrap();
        std::fs::write(
            dir.path().join("exports/manifest.json"),
            r#"{"installedFilesTemplate": ["/etc/x.conf"]}"#,
        )
        .unwrap();
        let case = Case::new(exports::read(dir.path()).unwrap());
        let msg = case.render().unwrap_err().to_string();
        assert_eq!(msg, "hostfs/etc/x.conf: unknown variable $MISSING (line 1)");
    }

    #[test]
    fn template_rendering_invalid_json_is_an_error() {
        let case = with_exports(|e| {
            e.config_template = Some("{\n  \"root\": {\"path\": \"rootfs\", \"readonly\": true},\n  \"hostname\": \"$NAME\" \"x\"\n}\n".into())
        });
        let err = case.render().unwrap_err();
        assert!(
            matches!(err, RenderError::InvalidJson { line: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("config.json.template: "),
            "{err}"
        );
        // A value that is not JSON where the template puts it is named.
        let case = with_exports(|e| {
            e.config_template = Some("{\n  \"root\": {\"path\": \"rootfs\", \"readonly\": true},\n  \"hostname\": $NAME\n}\n".into())
        });
        assert_eq!(
            case.render().unwrap_err().to_string(),
            "value of NAME (socle) cannot go into config.json.template (line 3): outside a JSON string it must be one JSON number, true, false, null or \"quoted string\", not \"greeter\""
        );
    }

    #[test]
    fn writable_or_misplaced_root_is_an_error() {
        for (root, needle) in [
            (
                json!({"path": "rootfs", "readonly": false}),
                "root.readonly is false",
            ),
            (json!({"path": "rootfs"}), "root.readonly is missing"),
            (json!({"path": "/", "readonly": true}), "root.path is \"/\""),
        ] {
            let case = with_exports(|e| {
                e.config_template = Some(json!({"ociVersion": "1.0.2", "root": root}).to_string())
            });
            let msg = case.render().unwrap_err().to_string();
            assert!(msg.starts_with("config.json.template: "), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn literal_config_json_is_used_as_is_but_for_the_cgroup() {
        let text =
            "{\"root\": {\"path\": \"rootfs\", \"readonly\": true}, \"x\": \"$NOT_SUBSTITUTED\"}";
        let case = with_exports(|e| e.config_json = Some(text.into()));
        let config: Value = serde_json::from_str(&case.render().unwrap().config_json).unwrap();
        assert_eq!(
            config,
            json!({"root": {"path": "rootfs", "readonly": true}, "x": "$NOT_SUBSTITUTED",
                   "linux": {"cgroupsPath": "/system.slice/greeter.service/container"}})
        );
    }

    #[test]
    fn the_container_runs_in_its_units_cgroup() {
        let slice = "[Service]\nExecStart=$EXEC_START\nSlice=infra.slice\n";
        let case = with_exports(|e| {
            e.service_template = Some(slice.into());
            e.config_template = Some(
                json!({"root": {"path": "rootfs", "readonly": true},
                       "linux": {"cgroupsPath": "/elsewhere", "namespaces": [{"type": "pid"}]}})
                .to_string(),
            );
        });
        let r = case.render().unwrap();
        let config: Value = serde_json::from_str(&r.config_json).unwrap();
        assert_eq!(
            config["linux"]["cgroupsPath"],
            "/infra.slice/greeter.service/container"
        );
        assert_eq!(config["linux"]["namespaces"], json!([{"type": "pid"}]));
        assert!(
            r.warnings.iter().any(|w| w.contains("/elsewhere")),
            "{:?}",
            r.warnings
        );
        let unit = r.unit.unwrap();
        assert!(
            unit.contains("Slice=infra.slice\n# Added by socle"),
            "{unit}"
        );
        assert!(unit.contains("\nDelegate=yes\nKillMode=mixed\n"), "{unit}");
    }

    #[test]
    fn a_kill_mode_that_lets_processes_outlive_the_unit_is_replaced() {
        for (mode, kept) in [
            ("process", "mixed"),
            ("none", "mixed"),
            ("control-group", "control-group"),
            ("mixed", "mixed"),
        ] {
            let case = with_exports(|e| {
                e.service_template = Some(format!(
                    "[Unit]\nDescription=x\n\n[Service]\nExecStart=$EXEC_START\nKillMode={mode}\n\n[Install]\nWantedBy=multi-user.target\n"
                ))
            });
            let r = case.render().unwrap();
            let unit = r.unit.unwrap();
            assert_eq!(
                service_setting(&unit, "KillMode").as_deref(),
                Some(kept),
                "{unit}"
            );
            let warned = r.warnings.iter().any(|w| w.contains("KillMode"));
            assert_eq!(warned, kept != mode, "{mode}: {:?}", r.warnings);
            assert!(
                unit.ends_with("\n[Install]\nWantedBy=multi-user.target\n"),
                "{unit}"
            );
            assert_unit_verifies("greeter", &unit);
        }
    }

    #[test]
    fn all_process_capabilities_fits_a_json_array() {
        let case = with_exports(|e| {
            e.config_template = Some(
                "{\"root\": {\"path\": \"rootfs\", \"readonly\": true},\n\"process\": {\"capabilities\": {\"bounding\": [\n$ALL_PROCESS_CAPABILITIES]}}}".into(),
            )
        });
        let r = case.render().unwrap();
        let v: Value = serde_json::from_str(&r.config_json).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            json!(["CAP_CHOWN", "CAP_KILL"])
        );
    }

    #[test]
    fn generated_tmpfiles_cover_missing_bind_sources_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/exists")).unwrap();
        let config = json!({
            "root": {"path": "rootfs", "readonly": true},
            "mounts": [
                {"destination": "/a", "type": "bind", "source": "/var/lib/exists", "options": ["rbind"]},
                {"destination": "/b", "type": "bind", "source": "/var/lib/$NAME", "options": ["rbind"]},
                {"destination": "/c", "type": "none", "source": "/srv/with space/100%", "options": ["bind"]},
                {"destination": "/d", "type": "rbind", "source": "/var/lib/$NAME"},
                {"destination": "/e", "type": "tmpfs", "source": "/not/a/bind"},
                {"destination": "/f", "type": "bind", "source": "relative"}
            ]
        });
        let mut case = with_exports(|e| {
            e.config_template = Some(config.to_string());
            e.tmpfiles_template = None;
        });
        case.host_root = root.path().to_path_buf();
        assert_eq!(
            case.render().unwrap().tmpfiles,
            "d /var/lib/greeter 0700 - - -\nd /srv/with\\ space/100%% 0700 - - -\n"
        );
    }

    #[test]
    fn generated_tmpfiles_leave_out_what_host_files_create() {
        let case = with_exports(|e| e.tmpfiles_template = None);
        // /etc/hello/greeter.conf, a bind source, is a host file of the image.
        assert_eq!(
            case.render().unwrap().tmpfiles,
            "d /var/lib/greeter 0700 - - -\n"
        );
    }

    #[test]
    fn rename_is_by_leading_components() {
        let renames = owned(&[
            ("/etc/a", "/etc/b"),
            ("/etc/b/c.conf", "/etc/z.conf"),
            ("/usr/x", "/opt/y"),
        ]);
        assert_eq!(rename("/etc/a/c.conf", &renames), "/etc/z.conf");
        assert_eq!(rename("/etc/a/d.conf", &renames), "/etc/b/d.conf");
        assert_eq!(rename("/usr/xy", &renames), "/usr/xy");
        assert_eq!(rename("/usr/x", &renames), "/opt/y");
    }

    #[test]
    fn rename_to_a_relative_or_escaping_path_is_an_error() {
        for bad in ["relative/$NAME", "/etc/../root/x", "/", "/etc//x"] {
            let case = with_exports(|e| {
                e.manifest.rename_files = owned(&[("/etc/hello/hello.conf", bad)]);
            });
            let err = case.render().unwrap_err();
            assert!(
                matches!(err, RenderError::RenameDestination { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn two_files_renamed_to_one_destination_is_an_error() {
        let case = with_exports(|e| {
            e.manifest.rename_files = owned(&[
                ("/etc/hello/hello.conf", "/etc/same"),
                ("/usr/local/bin/greet", "/etc/same"),
            ]);
        });
        assert!(matches!(
            case.render().unwrap_err(),
            RenderError::DuplicateDestination { .. }
        ));
    }

    #[test]
    fn rendering_is_deterministic() {
        let case = Case::new(Some(fixture("greeter")));
        let first = case.render().unwrap();
        for _ in 0..5 {
            assert_eq!(case.render().unwrap(), first);
        }
        let case = Case::new(None);
        assert_eq!(case.render().unwrap(), case.render().unwrap());
    }

    #[test]
    fn unit_name_is_the_service() {
        assert_eq!(unit_name("etcd"), "etcd.service");
    }
}
