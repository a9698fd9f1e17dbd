//! Deployments: an image checked out into a slot (`NAME.0`, `NAME.1`), its
//! rendered files, and the host files that point at it.
//!
//! Layout under `<state-dir>/containers/`:
//!
//! ```text
//! NAME -> NAME.0        the pointer, swapped by rename(2)
//! NAME.0/rootfs/        hardlinks into the store, mounted read-only by runc
//! NAME.0/config.json    rendered OCI runtime config (the bundle)
//! NAME.0/info           JSON state: image, values, host files
//! NAME.0/NAME.service   the unit as rendered for this slot
//! NAME.0/tmpfiles.conf  the tmpfiles.d lines as rendered for this slot
//! ```
//!
//! Everything a slot needs is written before anything on the host changes,
//! so a bad input fails with the host untouched.

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
pub(crate) mod fakes;
pub mod fsck;
pub mod fsops;
pub mod health;
mod inventory;
mod layout;
mod recovery;
pub mod render;
pub mod seams;
mod switch;
mod update;

pub use inventory::SlotUse;
pub use recovery::recover_all;
pub use render::unit_name;

pub use update::{rollback, update, UpdateOptions, UpdateReport, UpdateStatus};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::exports;
use crate::failpoint::failpoint;
use crate::store::{Store, StoredImage};
use crate::systemd::Systemd;
use crate::template::{self, Values};
use seams::{Clock, Journal, Runtime, Tmpfiles};

/// The host socle deploys onto: where things go and whom to ask.
pub struct Host {
    pub state_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub tmpfiles_dir: PathBuf,
    pub host_root: PathBuf,
    /// The runtime's path, as units are rendered with it.
    pub runtime: String,
    pub systemd: Box<dyn Systemd>,
    /// The runtime at `runtime`, as deploy runs it itself.
    pub runc: Box<dyn Runtime>,
    pub tmpfiles: Box<dyn Tmpfiles>,
    pub journal: Box<dyn Journal>,
    pub clock: Box<dyn Clock>,
}

/// A host file a deployment installed, with the checksum it had then.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstalledFile {
    /// Absolute path on the host (not prefixed by `--host-root`).
    pub path: PathBuf,
    pub sha256: String,
}

/// The `info` file of a slot: everything needed to list, update, roll back
/// or remove the deployment without the image.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Info {
    /// Unique per deployment written, so a crashed update can tell the
    /// slot it wrote from an older one.
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub store_commit: String,
    pub slot: u32,
    pub created: String,
    pub runtime: String,
    pub has_container_service: bool,
    /// Every value the templates were rendered with.
    pub values: Values,
    /// The values the user set with `--set`, kept across updates.
    pub user_values: Values,
    pub installed_files: Vec<InstalledFile>,
    /// The image's probe, rendered with `values`, run by the update gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<health::Probe>,
}

pub struct InstallOptions<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub set: &'a [String],
    pub policy: Policy,
}

/// How install and update treat what an image or the values ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// A `--set` of a variable the image does not have is a warning, not an error.
    pub force: bool,
    /// What [`crate::danger`] finds is an error, not a warning.
    pub deny_dangerous: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct InstallReport {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub deployment: PathBuf,
    pub unit: Option<PathBuf>,
    pub tmpfiles: PathBuf,
    pub host_files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// A row of `socle list`.
#[derive(Debug, serde::Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub runtime: String,
    pub slot: u32,
    pub deployment: PathBuf,
}

/// What `socle list` says a container's service is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// systemd's `active`.
    Running,
    Inactive,
    Failed,
    /// The image has no container service.
    NoService,
    /// No systemd was asked (`--systemd none`).
    Unknown,
    /// Any other ActiveState (`activating`, `deactivating`, `reloading`, …),
    /// shown as systemd says it.
    Other(String),
}

impl State {
    /// From the unit's ActiveState (`None`: no systemd asked).
    fn of_unit(active_state: Option<String>) -> State {
        match active_state.as_deref() {
            None => State::Unknown,
            Some("active") => State::Running,
            Some("inactive") => State::Inactive,
            Some("failed") => State::Failed,
            Some(_) => State::Other(active_state.unwrap_or_default()),
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Inactive => "inactive",
            State::Failed => "failed",
            State::NoService => "no service",
            State::Unknown => "unknown",
            State::Other(s) => s,
        })
    }
}

impl serde::Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a new container's name may be, for error messages.
const NAME_RULE: &str = "a container name is letters, digits, '-', '_' and '.', starts with a letter or digit, does not end in '.' and digits, and has at most 128 characters";

/// Checks the name of a new container before anything is written. It
/// becomes a directory beside its slots (`NAME.0`, `NAME.1`), a unit
/// (`NAME.service`) and a runc id, so nothing another reader would take
/// apart is allowed: `@` (systemd's template instances), a leading `-` (an
/// option to runc and systemctl), a leading `.` (socle's own staging and
/// transition files), and a `.N` ending (another container's slot: `x.0`
/// installed beside `x` would overwrite x's live deployment).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let bad_char = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)));
    let slot_like = name
        .rsplit_once('.')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let problem = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > 128 {
        "is longer than 128 characters".to_string()
    } else if let Some(c) = bad_char {
        let why = match c {
            '@' => " (systemd reads NAME@X as an instance of a template unit)",
            '/' => " (it would be a path)",
            _ => "",
        };
        format!("contains {c:?}{why}")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        format!("starts with {:?}", name.chars().next().unwrap_or_default())
    } else if slot_like {
        "ends in '.' and digits, the way socle names a container's deployments (NAME.0, NAME.1)"
            .to_string()
    } else {
        return Ok(());
    };
    bail!("invalid container name {name:?}: it {problem}; {NAME_RULE}")
}

/// Checks the name given for an installed container (update, rollback,
/// uninstall): only that it cannot reach outside the containers directory,
/// so a container installed under an older, looser rule can still be
/// managed and removed.
pub fn check_installed_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    }
    Ok(())
}

impl Host {
    /// A host whose runtime, tmpfiles, journal and clock are the real ones.
    pub fn new(
        state_dir: PathBuf,
        unit_dir: PathBuf,
        tmpfiles_dir: PathBuf,
        host_root: PathBuf,
        runtime: String,
        systemd: Box<dyn Systemd>,
    ) -> Host {
        Host {
            state_dir,
            unit_dir,
            tmpfiles_dir,
            host_root,
            runc: Box::new(seams::RuntimeCli {
                path: runtime.clone(),
            }),
            runtime,
            systemd,
            tmpfiles: Box::new(seams::SystemdTmpfiles),
            journal: Box::new(seams::Journalctl),
            clock: Box::new(seams::SystemClock),
        }
    }

    pub fn read_info(&self, name: &str, slot: u32) -> anyhow::Result<Info> {
        let path = layout::slot_info(&self.slot_dir(name, slot));
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Names of installed containers (every pointer in the containers dir).
    pub fn installed(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.containers_dir();
        let mut names = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.file_type()?.is_symlink() && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Stops the container's unit and makes sure nothing of the container
    /// is left: the stop job is followed to its end (systemd escalates to
    /// SIGKILL after the unit's `TimeoutStopSec`), then no process may be
    /// left in the unit's cgroup, which holds the container (SIGKILL again,
    /// bounded), and no runc state (a unit written by an older socle ran the
    /// container in a scope of its own). Returns what had to be forced, for
    /// the user; an error when a process survives, so that a new deployment
    /// never starts beside the old one.
    pub fn stop_container(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let unit = unit_name(name);
        let mut messages = Vec::new();
        let stopped = self.systemd.stop(&unit)?;
        if let Some(after) = stopped.killed_after {
            messages.push(format!(
                "{unit} did not stop on SIGTERM within {} s (its TimeoutStopSec): systemd killed it with SIGKILL",
                after.as_secs()
            ));
        }
        if self.systemd.active_state(&unit)?.is_none() {
            return Ok(messages); // --systemd none: nothing was started by us
        }
        let left = self.systemd.unit_processes(&unit)?;
        if !left.is_empty() {
            self.systemd
                .kill(&unit, rustix::process::Signal::KILL.as_raw())?;
            let deadline = self.clock.now() + KILL_WAIT;
            let mut now_left = left.clone();
            while !now_left.is_empty() && self.clock.now() < deadline {
                self.clock.sleep(std::time::Duration::from_millis(50));
                now_left = self.systemd.unit_processes(&unit)?;
            }
            if !now_left.is_empty() {
                bail!(
                    "{unit} is stopped but {} of its processes survive SIGKILL ({}); not going on while they live",
                    now_left.len(),
                    describe_processes(&now_left)
                );
            }
            messages.push(format!(
                "{unit}: {} processes were left after the stop and were killed ({})",
                left.len(),
                describe_processes(&left)
            ));
        }
        if self.runc.has(name) {
            if self.runc.delete_force(name) {
                messages.push(format!(
                    "removed the runc container {name} that outlived {unit}"
                ));
            } else {
                bail!("{unit} is stopped but `{} delete --force {name}` failed: the old container may still run", self.runtime);
            }
        }
        Ok(messages)
    }

    /// Runs systemd-tmpfiles for one file, inside `--host-root`.
    fn run_tmpfiles(&self, action: &str, file: &Path) -> anyhow::Result<()> {
        self.tmpfiles.run(action, &self.host_root, file)
    }
}

/// How long processes left after a stop get to die of SIGKILL.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `pid command` of the first few processes, for messages.
fn describe_processes(list: &[(u32, String)]) -> String {
    let mut shown: Vec<String> = list
        .iter()
        .take(5)
        .map(|(pid, cmd)| format!("{pid} {cmd}"))
        .collect();
    if list.len() > 5 {
        shown.push(format!("and {} more", list.len() - 5));
    }
    shown.join(", ")
}

/// Host files written so far, removed again if the install fails midway.
#[derive(Default)]
struct Undo {
    paths: Vec<PathBuf>,
    /// Directories this install created, removed if still empty.
    empty_dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        for p in self.paths.iter().rev() {
            let _ = fsops::remove_any(p);
        }
        for d in self.empty_dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Installs `image` as container `name` into slot 0 and enables its unit.
pub fn install(host: &Host, store: &Store, opts: &InstallOptions) -> anyhow::Result<InstallReport> {
    let name = opts.name;
    validate_name(name)?;
    let user_values = parse_sets(opts.set)?;
    // An operation a crash interrupted is finished or undone first.
    let recovered = update::recover(host, name)?;
    if let Some(slot) = host.current_slot(name) {
        let info = host.read_info(name, slot);
        // The install a crash interrupted, asked for again: it is done now.
        if let (Some((t, message)), Ok(info)) = (&recovered, &info) {
            let same_image = store.image(opts.image).is_ok_and(|i| i.id == info.image_id);
            if t.op == update::Op::Install && same_image && info.user_values == user_values {
                return Ok(install_report(host, info, vec![message.clone()]));
            }
        }
        let image = info.map(|i| i.image).unwrap_or_else(|_| "?".into());
        bail!(
            "container {name:?} is already installed (image {image}); use `socle uninstall {name}` first, or pick another --name"
        );
    }
    let unit_path = host.unit_path(name);
    if unit_path.exists() {
        bail!(
            "{} already exists and was not installed by socle; choose another --name",
            unit_path.display()
        );
    }
    let image = store.image(opts.image)?;
    let mut undo = Undo::default();
    if !host.containers_dir().exists() {
        crate::permissions::private_dir(&host.containers_dir())?;
        undo.empty_dirs.push(host.containers_dir());
    }

    // The journal comes first and goes last: a crash in between is undone
    // (before the pointer exists) or finished (after) by the next command.
    let slot = 0;
    let id = new_deployment_id();
    undo.paths.push(host.transition_path(name));
    let journal = update::Transition {
        op: update::Op::Install,
        phase: update::Phase::Staging,
        from: slot,
        to: slot,
        was_running: false,
        new_id: id.clone(),
    };
    if let Err(e) = update::write_transition(host, name, &journal) {
        undo.run();
        return Err(e);
    }
    failpoint("install:after-journal");

    // A slot left by an install that crashed before the pointer existed is
    // garbage: nobody points at it.
    let slot_dir = host.slot_dir(name, slot);
    let staging = host.staging_dir(name, slot);
    let cleared = fsops::remove_any(&staging).and_then(|_| fsops::remove_any(&slot_dir));
    if let Err(e) = cleared {
        undo.run();
        return Err(e.into());
    }

    undo.paths.push(staging.clone());
    let (info, mut warnings) = match write_deployment(
        host,
        store,
        &image,
        name,
        slot,
        &user_values,
        None,
        (&user_values, opts.policy),
        &id,
        &staging,
    ) {
        Ok(r) => r,
        Err(e) => {
            undo.run();
            return Err(e);
        }
    };
    failpoint("install:after-staging");
    // Refuse to overwrite host files socle did not write.
    for f in &info.installed_files {
        let on_host = host.on_host(&f.path);
        if fs::symlink_metadata(&on_host).is_ok() {
            undo.run();
            bail!(
                "host file {} already exists; remove it or choose another --name",
                on_host.display()
            );
        }
    }
    let finish = || -> anyhow::Result<()> {
        fs::rename(&staging, &slot_dir)
            .with_context(|| format!("renaming {} to {}", staging.display(), slot_dir.display()))?;
        fsops::sync_dir(&host.containers_dir())?;
        failpoint("install:after-rename");
        switch::make_current(
            host,
            name,
            slot,
            &info,
            None,
            switch::Pointer::Swap {
                after_publish: &|| failpoint("install:after-publish"),
                after_swap: &|| failpoint("install:after-pointer"),
            },
        )?;
        failpoint("install:after-enable");
        fsops::remove_any(&host.transition_path(name))?;
        fsops::sync_dir(&host.containers_dir())?;
        Ok(())
    };
    if let Err(e) = finish() {
        undo.paths.extend([
            slot_dir.clone(),
            host.pointer(name),
            host.unit_path(name),
            host.tmpfiles_path(name),
        ]);
        undo.paths
            .extend(info.installed_files.iter().map(|f| host.on_host(&f.path)));
        undo.run();
        let _ = host.systemd.reload();
        return Err(e.context(format!("installing {name}; nothing was left behind")));
    }
    if let Some((_, message)) = recovered {
        warnings.insert(0, message);
    }
    Ok(install_report(host, &info, warnings))
}

/// What `install` reports about the deployment in `info`.
fn install_report(host: &Host, info: &Info, warnings: Vec<String>) -> InstallReport {
    InstallReport {
        name: info.name.clone(),
        image: info.image.clone(),
        image_id: info.image_id.clone(),
        deployment: host.slot_dir(&info.name, info.slot),
        unit: info
            .has_container_service
            .then(|| host.unit_path(&info.name)),
        tmpfiles: host.tmpfiles_path(&info.name),
        host_files: info
            .installed_files
            .iter()
            .map(|f| f.path.clone())
            .collect(),
        warnings,
    }
}

fn parse_sets(sets: &[String]) -> anyhow::Result<Values> {
    let mut values = Values::new();
    for s in sets {
        let (k, v) = template::parse_set(s)?;
        values.insert(k, v);
    }
    Ok(values)
}

/// Writes a complete slot into `dir`: the checkout, the rendered config,
/// unit and tmpfiles, the rendered host files (under `hostfiles/`, copied
/// onto the host later by `publish`) and the info file. Touches nothing
/// outside `dir`.
#[allow(clippy::too_many_arguments)]
fn write_deployment(
    host: &Host,
    store: &Store,
    image: &StoredImage,
    name: &str,
    slot: u32,
    user_values: &Values,
    previous: Option<&Values>,
    (new_sets, policy): (&Values, Policy),
    id: &str,
    dir: &Path,
) -> anyhow::Result<(Info, Vec<String>)> {
    let rootfs = dir.join("rootfs");
    store.checkout(image, &rootfs)?;
    let exports = exports::read(&rootfs)?;
    let mut warnings = render::check_set_names(
        exports.as_ref(),
        &image.name.to_string(),
        new_sets,
        policy.force,
    )?;
    let image_config = image.config()?;
    let destdir = host.slot_dir(name, slot);
    let input = render::RenderInput {
        name,
        image_name: &image.name.to_string(),
        image_id: &image.id,
        destdir: &destdir,
        runtime: &host.runtime,
        exports: exports.as_ref(),
        image_config: &image_config,
        user_set: user_values,
        previous,
        host_root: &host.host_root,
    };
    let rendered = render::render(&input)?;
    let dangers = crate::danger::find(&rendered);
    if policy.deny_dangerous && !dangers.is_empty() {
        let list: Vec<String> = dangers
            .iter()
            .map(|d| format!("{}: {}", d.file, d.message))
            .collect();
        bail!(
            "{} is refused by --deny-dangerous (SOCLE_DENY_DANGEROUS): {}",
            image.name,
            list.join("; ")
        );
    }
    warnings.extend(dangers.iter().map(ToString::to_string));
    let probe = match exports
        .as_ref()
        .and_then(|e| e.manifest.health_check.as_ref())
    {
        Some(spec) => Some(health::render_probe(spec, &rendered.values)?),
        None => None,
    };

    fsops::write_atomic(
        &dir.join("config.json"),
        rendered.config_json.as_bytes(),
        0o644,
    )?;
    if let Some(unit) = &rendered.unit {
        fsops::write_atomic(&layout::slot_unit(dir, name), unit.as_bytes(), 0o644)?;
    }
    fsops::write_atomic(
        &layout::slot_tmpfiles(dir),
        rendered.tmpfiles.as_bytes(),
        0o644,
    )?;

    warnings.extend(rendered.warnings.iter().cloned());
    let mut installed = Vec::new();
    for f in &rendered.host_files {
        let data = match &f.content {
            Some(text) => text.clone().into_bytes(),
            None => {
                fs::read(&f.source).with_context(|| format!("reading {}", f.source.display()))?
            }
        };
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(&f.source)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644)
        };
        let (mode, dropped) = crate::permissions::host_file_mode(&f.dest, mode);
        warnings.extend(dropped);
        fsops::write_atomic(&layout::slot_host_file(dir, &f.dest), &data, mode)?;
        installed.push(InstalledFile {
            path: f.dest.clone(),
            sha256: fsops::sha256_bytes(&data),
        });
    }

    let info = Info {
        id: id.to_string(),
        name: name.into(),
        image: image.name.to_string(),
        image_id: image.id.clone(),
        store_commit: image.commit.clone(),
        slot,
        created: rfc3339(host.clock.unix_secs()),
        runtime: host.runtime.clone(),
        has_container_service: rendered.unit.is_some(),
        values: rendered.values.clone(),
        user_values: user_values
            .iter()
            .filter(|(k, _)| !template::FORCED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        installed_files: installed,
        probe,
    };
    let info_json = serde_json::to_string_pretty(&info)? + "\n";
    fsops::write_atomic(&layout::slot_info(dir), info_json.as_bytes(), 0o644)?;
    Ok((info, warnings))
}

/// Makes the host match a slot: its unit, tmpfiles and host files. Host
/// files of `previous` that the user edited are never overwritten (the new
/// version goes beside them as `FILE.socle-new`) nor removed. Returns
/// messages for the user.
fn publish(
    host: &Host,
    name: &str,
    slot_dir: &Path,
    info: &Info,
    previous: Option<&Info>,
) -> anyhow::Result<Vec<String>> {
    let mut messages = Vec::new();
    if info.has_container_service {
        let unit = fs::read(layout::slot_unit(slot_dir, name))?;
        fsops::write_atomic(&host.unit_path(name), &unit, 0o644)?;
    } else {
        fsops::remove_any(&host.unit_path(name))?;
    }
    let tmpfiles = fs::read(layout::slot_tmpfiles(slot_dir))?;
    fsops::write_atomic(&host.tmpfiles_path(name), &tmpfiles, 0o644)?;

    let recorded =
        |path: &Path| previous.and_then(|p| p.installed_files.iter().find(|f| f.path == path));
    for f in &info.installed_files {
        let on_host = host.on_host(&f.path);
        let source = layout::slot_host_file(slot_dir, &f.path);
        let data = fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        // A slot written before modes were checked may still carry them.
        let (mode, _) = crate::permissions::host_file_mode(&f.path, {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(&source)?.permissions().mode()
        });
        let current = fsops::sha256_file(&on_host).ok();
        match (current, recorded(&f.path)) {
            (None, _) => fsops::write_atomic(&on_host, &data, mode)?,
            (Some(sum), Some(old)) if sum == old.sha256 => {
                fsops::write_atomic(&on_host, &data, mode)?
            }
            (Some(sum), _) if sum == f.sha256 => {}
            (Some(_), _) => {
                let beside = PathBuf::from(format!("{}.socle-new", on_host.display()));
                fsops::write_atomic(&beside, &data, mode)?;
                messages.push(format!(
                    "{} was edited; the new version is in {}",
                    on_host.display(),
                    beside.display()
                ));
            }
        }
    }
    if let Some(prev) = previous {
        for old in &prev.installed_files {
            if info.installed_files.iter().any(|f| f.path == old.path) {
                continue;
            }
            let on_host = host.on_host(&old.path);
            match fsops::sha256_file(&on_host) {
                Ok(sum) if sum == old.sha256 => fsops::remove_any(&on_host)?,
                Ok(_) => messages.push(format!("kept {}: it was edited", on_host.display())),
                Err(_) => {}
            }
        }
    }
    Ok(messages)
}

/// An id no other deployment on this host has: time in ns and the pid.
fn new_deployment_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

/// Now, for records outside a deployment (a deployment's `created` comes
/// from its host's clock).
pub(crate) fn now_rfc3339() -> String {
    rfc3339(seams::SystemClock.unix_secs())
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), with
/// the days-to-civil-date conversion of Howard Hinnant's algorithm.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[derive(Debug, Default, serde::Serialize)]
pub struct UninstallReport {
    pub name: String,
    pub removed: Vec<PathBuf>,
    /// Host files edited since install, left in place.
    pub kept: Vec<PathBuf>,
    /// What the stop had to force (see [`Host::stop_container`]).
    pub messages: Vec<String>,
}

/// Stops and removes a container: unit, tmpfiles, unchanged host files,
/// pointer and slots. Data directories made by tmpfiles `d`/`Z` lines stay.
/// Every step can be repeated, so an uninstall a crash interrupted (its
/// journal names the slot) is finished by the next command.
pub fn uninstall(host: &Host, name: &str) -> anyhow::Result<UninstallReport> {
    check_installed_name(name)?;
    let mut report = UninstallReport {
        name: name.into(),
        ..Default::default()
    };
    let pending = update::read_transition(host, name)?;
    let slot = match &pending {
        Some(t) if t.op == update::Op::Uninstall => Some(t.from),
        Some(t) if t.op == update::Op::Install => {
            // Finished or undone; an undone install leaves nothing to remove.
            if let Some((_, message)) = update::recover(host, name)? {
                report.messages.push(message);
            }
            match host.current_slot(name) {
                Some(slot) => Some(slot),
                None => return Ok(report),
            }
        }
        // An interrupted update or rollback: both slots go anyway.
        _ => host.current_slot(name),
    };
    let Some(slot) = slot else {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    };
    remove_container(host, name, slot, &mut report)?;
    Ok(report)
}

/// The steps of an uninstall of `name`, whose pointer designates (or
/// designated, when finishing an interrupted uninstall) `slot`.
fn remove_container(
    host: &Host,
    name: &str,
    slot: u32,
    report: &mut UninstallReport,
) -> anyhow::Result<()> {
    // Read before anything goes: the slots record what socle put on the host.
    let info = host.read_info(name, slot).ok();
    let other_info = host.read_info(name, 1 - slot.min(1)).ok();
    update::write_transition(
        host,
        name,
        &update::Transition {
            op: update::Op::Uninstall,
            phase: update::Phase::Switching,
            from: slot,
            to: slot,
            was_running: false,
            new_id: String::new(),
        },
    )?;
    failpoint("uninstall:after-journal");
    let unit = unit_name(name);
    let unit_path = host.unit_path(name);
    if info.as_ref().is_some_and(|i| i.has_container_service) && unit_path.exists() {
        if host.systemd.active_state(&unit)?.as_deref() != Some("inactive") {
            report.messages = host.stop_container(name)?;
        }
        host.systemd.disable(&unit)?;
        fsops::remove_any(&unit_path)?;
        report.removed.push(unit_path);
        host.systemd.reload()?;
    }
    failpoint("uninstall:after-unit");
    let tmpfiles = host.tmpfiles_path(name);
    if tmpfiles.exists() {
        host.run_tmpfiles("--remove", &tmpfiles)?;
        fsops::remove_any(&tmpfiles)?;
        report.removed.push(tmpfiles);
    }
    failpoint("uninstall:after-tmpfiles");
    // A file either slot wrote is socle's (an interrupted update may have
    // published the other slot's version); any other content is the user's.
    let records: Vec<&InstalledFile> = [&info, &other_info]
        .into_iter()
        .flatten()
        .flat_map(|i| &i.installed_files)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for f in &records {
        if !seen.insert(&f.path) {
            continue;
        }
        let on_host = host.on_host(&f.path);
        match fsops::sha256_file(&on_host) {
            Ok(sum) if records.iter().any(|r| r.path == f.path && r.sha256 == sum) => {
                fsops::remove_any(&on_host)?;
                report.removed.push(f.path.clone());
            }
            Ok(_) => report.kept.push(f.path.clone()),
            Err(_) => {} // already gone
        }
    }
    failpoint("uninstall:after-host-files");
    fsops::remove_any(&host.pointer(name))?;
    fsops::sync_dir(&host.containers_dir())?;
    failpoint("uninstall:after-pointer");
    for s in [0, 1] {
        fsops::remove_any(&host.staging_dir(name, s))?;
        let d = host.slot_dir(name, s);
        if d.exists() {
            fsops::remove_any(&d)?;
            report.removed.push(d);
        }
    }
    failpoint("uninstall:after-slots");
    fsops::remove_any(&host.transition_path(name))?;
    fsops::sync_dir(&host.containers_dir())?;
    Ok(())
}

/// State of every installed container. A container being installed or
/// uninstalled (its journal says so) is not listed: it is not installed
/// until the install ends, and no longer once the uninstall began.
pub fn list(host: &Host) -> anyhow::Result<Vec<ContainerStatus>> {
    let mut rows = Vec::new();
    for name in host.installed()? {
        let changing = update::read_transition(host, &name)
            .ok()
            .flatten()
            .is_some_and(|t| matches!(t.op, update::Op::Install | update::Op::Uninstall));
        let Some(slot) = host.current_slot(&name) else {
            continue;
        };
        if changing {
            continue;
        }
        let info = match host.read_info(&name, slot) {
            Ok(i) => i,
            // Uninstalled by another socle run while this one read.
            Err(_) if host.current_slot(&name).is_none() => continue,
            Err(e) => return Err(e),
        };
        let state = if !info.has_container_service {
            State::NoService
        } else {
            State::of_unit(host.systemd.active_state(&unit_name(&name))?)
        };
        rows.push(ContainerStatus {
            name: name.clone(),
            image: info.image,
            image_id: info.image_id,
            state,
            runtime: info.runtime,
            slot,
            deployment: host.slot_dir(&name, slot),
        });
    }
    Ok(rows)
}

/// What `socle images info` shows about an image's /exports.
#[derive(Debug, serde::Serialize)]
pub struct ImageDetails {
    pub name: String,
    pub id: String,
    pub created: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub has_exports: bool,
    /// Variables with the image's default values.
    pub defaults: Values,
    /// Variables the templates use that nothing provides: `--set` them.
    pub required: Vec<String>,
}

/// Reads an image's labels and variables (from a throwaway checkout).
pub fn details_of(host: &Host, store: &Store, image: &StoredImage) -> anyhow::Result<ImageDetails> {
    let tmp = tempfile::Builder::new()
        .prefix(".inspect-")
        .tempdir_in(&host.state_dir)
        .with_context(|| format!("creating a scratch dir in {}", host.state_dir.display()))?;
    let rootfs = tmp.path().join("rootfs");
    store.checkout(image, &rootfs)?;
    let exports = exports::read(&rootfs)?;
    let config = image.config()?;
    let labels = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default();
    let (defaults, required) = match &exports {
        None => (Values::new(), Vec::new()),
        Some(e) => {
            let required = render::required_variables(e).into_iter().collect();
            (e.manifest.default_values.clone(), required)
        }
    };
    Ok(ImageDetails {
        name: image.name.to_string(),
        id: image.id.clone(),
        created: image.created.clone(),
        labels,
        has_exports: exports.is_some(),
        defaults,
        required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_708_799), "2026-11-26T15:59:59Z");
    }

    #[test]
    fn names_are_checked() {
        for good in ["etcd", "etcd-1", "node_a.x", "etcd.v2", "x.0a", "3"] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        for (bad, why) in [
            ("", "is empty"),
            (".x", "starts with '.'"),
            ("-x", "starts with '-'"),
            ("_x", "starts with '_'"),
            ("a/b", "contains '/'"),
            ("a b", "contains ' '"),
            ("a\nb", "contains '\\n'"),
            ("a@b", "template unit"),
            ("foo@", "template unit"),
            ("x.0", "NAME.0, NAME.1"),
            ("x.12", "NAME.0, NAME.1"),
            ("x:y", "contains ':'"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("letters, digits"), "{bad:?}: {e}");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
        assert!(check_installed_name("legacy@one").is_ok());
        for bad in ["", ".x.transition", "../x", "a/b"] {
            assert!(check_installed_name(bad).is_err(), "{bad:?}");
        }
    }
}
