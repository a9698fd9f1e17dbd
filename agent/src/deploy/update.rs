//! Update and rollback: deploy into the other slot, swap the pointer, and
//! come back to the previous slot when the new one does not stay healthy.
//!
//! Order matters for a node that must never be left without a working
//! deployment: the new slot is written completely before the service is
//! stopped, the pointer moves by rename(2), and the service is restarted
//! only if it was running.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context};

use super::health::{self, UnitState};
use super::{
    check_installed_name, fsops, new_deployment_id, parse_sets, switch, unit_name,
    write_deployment, Host, Info,
};
use crate::failpoint::failpoint;
use crate::store::Store;
use crate::systemd::JobResult;

pub struct UpdateOptions<'a> {
    pub name: &'a str,
    pub set: &'a [String],
    pub policy: super::Policy,
    /// Switch to another image of the store.
    pub rebase: Option<&'a str>,
    /// Leave a deployment that fails its health check in place.
    pub no_rollback: bool,
    /// How long the new deployment may take to become healthy.
    pub timeout: Duration,
}

#[derive(Debug, serde::Serialize)]
pub struct UpdateReport {
    pub name: String,
    pub image_before: String,
    pub id_before: String,
    pub image_after: String,
    pub id_after: String,
    pub slot: u32,
    pub status: UpdateStatus,
    pub messages: Vec<String>,
}

/// What an update or rollback did, as reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum UpdateStatus {
    #[serde(rename = "updated")]
    Updated,
    #[serde(rename = "up to date")]
    UpToDate,
    #[serde(rename = "rolled back")]
    RolledBack,
}

impl std::fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateStatus::Updated => "updated",
            UpdateStatus::UpToDate => "up to date",
            UpdateStatus::RolledBack => "rolled back",
        })
    }
}

/// How long a restarted unit must stay active to count as healthy.
const SETTLE: Duration = Duration::from_secs(3);

/// How long a start outside the health gate (rollback, recovery) is followed.
const START_WAIT: Duration = Duration::from_secs(90);

fn other(slot: u32) -> u32 {
    1 - slot.min(1)
}

/// Points the host at `slot` of `name`: host files, pointer, systemd.
fn switch_to(
    host: &Host,
    name: &str,
    slot: u32,
    info: &Info,
    from: &Info,
) -> anyhow::Result<Vec<String>> {
    // `D` directories are emptied on a switch, as systemd-tmpfiles does at
    // boot; `d` and `Z` data directories are left alone.
    let tmpfiles = host.tmpfiles_path(name);
    if tmpfiles.exists() {
        host.run_tmpfiles("--remove", &tmpfiles)?;
    }
    switch::make_current(
        host,
        name,
        slot,
        info,
        Some(from),
        switch::Pointer::Swap {
            after_publish: &|| failpoint("switch:after-publish"),
            after_swap: &|| failpoint("switch:after-swap"),
        },
    )
}

fn is_running(host: &Host, name: &str) -> anyhow::Result<bool> {
    Ok(host.systemd.active_state(&unit_name(name))?.as_deref() == Some("active"))
}

/// Whether a rollback should leave the service running: it is, or it is
/// failing (crashed or in its restart loop), which is what a rollback repairs.
/// Only a service the user stopped stays stopped.
fn should_run_after_rollback(host: &Host, name: &str) -> anyhow::Result<bool> {
    let state = host.systemd.active_state(&unit_name(name))?;
    Ok(matches!(
        state.as_deref(),
        Some("active" | "activating" | "reloading" | "failed")
    ))
}

/// The unit's last log lines, for the error that explains a rollback.
fn last_log_lines(host: &Host, name: &str) -> String {
    host.journal.last_lines(&unit_name(name))
}

struct SystemdUnit<'a> {
    host: &'a Host,
    unit: String,
}

impl UnitState for SystemdUnit<'_> {
    fn active_state(&self) -> Result<Option<String>, String> {
        self.host
            .systemd
            .active_state(&self.unit)
            .map_err(|e| e.to_string())
    }
}

/// Why a start job did not end with `done`, in the service's own terms.
fn start_failure(host: &Host, unit: &str, job: Option<JobResult>, waited: Duration) -> String {
    match job {
        None => format!(
            "{unit} was still starting after {} s (a Type=notify unit must send READY=1)",
            waited.as_secs()
        ),
        Some(job) => {
            let why = host
                .systemd
                .service_result(unit)
                .ok()
                .flatten()
                .filter(|r| r != "success")
                .map(|r| format!(", service result {r:?}"))
                .unwrap_or_default();
            format!("{unit} did not start (start job {job}{why})")
        }
    }
}

/// Starts the unit, follows the start job to its end and then runs the
/// health gate on the started unit.
fn start_healthy(host: &Host, name: &str, info: &Info, timeout: Duration) -> Result<(), String> {
    let unit = unit_name(name);
    let deadline = host.clock.now() + timeout;
    host.systemd
        .reset_failed(&unit)
        .map_err(|e| e.to_string())?;
    match host
        .systemd
        .start(&unit, timeout)
        .map_err(|e| e.to_string())?
    {
        Some(JobResult::Done) => {}
        job => return Err(start_failure(host, &unit, job, timeout)),
    }
    let state = SystemdUnit {
        host,
        unit: unit.clone(),
    };
    let probe = info.probe.as_ref().map(|p| (p, host.runc.as_ref(), name));
    // The settle period is part of the gate even when the start used up
    // most of the user's timeout.
    let left = deadline
        .saturating_duration_since(host.clock.now())
        .max(SETTLE + Duration::from_secs(2));
    health::wait_healthy(&unit, &state, probe, SETTLE, left, host.clock.as_ref())
}

/// Starts the unit outside the gate (rollback, recovery): follows the
/// start job and says how it ended when it was not `done`.
fn start_unit(host: &Host, name: &str) -> anyhow::Result<Option<String>> {
    let unit = unit_name(name);
    host.systemd.reset_failed(&unit)?;
    Ok(match host.systemd.start(&unit, START_WAIT)? {
        Some(JobResult::Done) => None,
        job => Some(start_failure(host, &unit, job, START_WAIT)),
    })
}

/// Recorded while the host is between two states of a container (an
/// install, an uninstall, a switch between slots), so that a run after a
/// crash can make the host consistent again.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Transition {
    pub(super) op: Op,
    #[serde(default = "staging_phase")]
    pub(super) phase: Phase,
    pub(super) from: u32,
    pub(super) to: u32,
    #[serde(default)]
    pub(super) was_running: bool,
    /// Info id of the deployment an update or install writes into `to`.
    #[serde(default)]
    pub(super) new_id: String,
}

fn staging_phase() -> Phase {
    Phase::Staging
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Op {
    Update,
    Rollback,
    /// An install into slot `to`: finished if the pointer exists, else undone.
    Install,
    /// An uninstall of the deployment in slot `from`: always finished.
    Uninstall,
}

#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    /// The new slot is being written; the host is untouched.
    Staging,
    /// The host is being moved from `from` to `to`.
    Switching,
}

pub(super) fn write_transition(host: &Host, name: &str, t: &Transition) -> anyhow::Result<()> {
    fsops::write_atomic(&host.transition_path(name), &serde_json::to_vec(t)?, 0o644)?;
    Ok(())
}

/// The journal of an unfinished operation on `name`, if there is one.
pub(super) fn read_transition(host: &Host, name: &str) -> anyhow::Result<Option<Transition>> {
    let path = host.transition_path(name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let t = serde_json::from_str(&text).with_context(|| {
        format!(
            "reading {}: not a socle journal; move it away and run `socle fsck`",
            path.display()
        )
    })?;
    Ok(Some(t))
}

/// Finishes what a crashed update or rollback left: the pointer (moved by
/// one rename, so always valid) says which slot is current; its unit,
/// tmpfiles and host files are published again and the service is started
/// if it was running. A slot an interrupted update wrote but never made
/// current is discarded. Returns what was interrupted and a message, when
/// there was something to do.
pub(super) fn recover(host: &Host, name: &str) -> anyhow::Result<Option<(Transition, String)>> {
    let path = host.transition_path(name);
    let Some(t) = read_transition(host, name)? else {
        return Ok(None);
    };
    if matches!(t.op, Op::Install | Op::Uninstall) {
        return super::recovery::recover_lifecycle(host, name, t);
    }
    fsops::remove_any(&host.staging_dir(name, t.to))?;
    let Some(slot) = host.current_slot(name) else {
        fsops::remove_any(&path)?;
        return Ok(None);
    };
    // An update that never got the pointer leaves a slot that was never
    // current: it must not become a rollback target.
    let other_info = host.read_info(name, other(slot)).ok();
    let written_by_update = other_info
        .as_ref()
        .is_some_and(|i| !t.new_id.is_empty() && i.id == t.new_id);
    let discard_new = t.op == Op::Update && slot == t.from && written_by_update;
    if t.phase == Phase::Staging {
        // The host was never touched.
        if discard_new {
            fsops::remove_any(&host.slot_dir(name, t.to))?;
        }
        fsops::remove_any(&path)?;
        let message = format!("discarded an interrupted update of {name} (it had not started)");
        return Ok(Some((t, message)));
    }
    let info = host.read_info(name, slot)?;
    switch::make_current(
        host,
        name,
        slot,
        &info,
        other_info.as_ref(),
        switch::Pointer::Kept,
    )?;
    let mut start_problem = None;
    if t.was_running && info.has_container_service {
        start_problem = start_unit(host, name)?;
    }
    // Only now: publishing needed its record of the host files it wrote.
    if discard_new {
        fsops::remove_any(&host.slot_dir(name, t.to))?;
    }
    fsops::remove_any(&path)?;
    fsops::sync_dir(&host.containers_dir())?;
    let mut message = format!(
        "recovered an interrupted switch from slot {} to slot {}: {name} is on slot {slot} ({})",
        t.from, t.to, info.image
    );
    if let Some(problem) = start_problem {
        message.push_str(&format!("; but {problem}"));
    }
    Ok(Some((t, message)))
}

/// Deploys `name` again into its other slot, from the same image with new
/// values or from another image, and switches to it.
pub fn update(host: &Host, store: &Store, opts: &UpdateOptions) -> anyhow::Result<UpdateReport> {
    let name = opts.name;
    check_installed_name(name)?;
    let recovered = recover(host, name)?;
    let Some(slot) = host.current_slot(name) else {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    };
    let info = host.read_info(name, slot)?;
    let mut user_values = info.user_values.clone();
    let new_sets = parse_sets(opts.set)?;
    user_values.extend(new_sets.clone());
    let image = store.image(opts.rebase.unwrap_or(&info.image))?;
    let mut report = UpdateReport {
        name: name.into(),
        image_before: info.image.clone(),
        id_before: info.image_id.clone(),
        image_after: image.name.to_string(),
        id_after: image.id.clone(),
        slot,
        status: UpdateStatus::UpToDate,
        messages: recovered.into_iter().map(|(_, m)| m).collect(),
    };
    if image.id == info.image_id && user_values == info.user_values {
        return Ok(report);
    }

    // A reused slot is rebuilt from scratch: nothing of an older image lingers.
    let new_slot = other(slot);
    let new_dir = host.slot_dir(name, new_slot);
    let staging = host.staging_dir(name, new_slot);
    let was_running = info.has_container_service && is_running(host, name)?;
    let mut transition = Transition {
        op: Op::Update,
        phase: Phase::Staging,
        from: slot,
        to: new_slot,
        was_running,
        new_id: new_deployment_id(),
    };
    write_transition(host, name, &transition)?;
    fsops::remove_any(&staging)?;
    let (new_info, warnings) = match write_deployment(
        host,
        store,
        &image,
        name,
        new_slot,
        &user_values,
        Some(&info.values),
        (&new_sets, opts.policy),
        &transition.new_id,
        &staging,
    ) {
        Ok(r) => r,
        Err(e) => {
            let _ = fsops::remove_any(&staging);
            let _ = fsops::remove_any(&host.transition_path(name));
            return Err(e.context(format!(
                "updating {name}; the current deployment is unchanged"
            )));
        }
    };
    report.messages.extend(warnings);
    failpoint("update:after-staging");
    fsops::remove_any(&new_dir)?;
    fs::rename(&staging, &new_dir)
        .with_context(|| format!("renaming {} to {}", staging.display(), new_dir.display()))?;
    fsops::sync_dir(&host.containers_dir())?;
    failpoint("update:after-rename");
    transition.phase = Phase::Switching;
    write_transition(host, name, &transition)?;
    failpoint("update:after-journal");
    let switched = (|| {
        let mut messages = Vec::new();
        if was_running {
            messages.extend(host.stop_container(name)?);
        }
        failpoint("update:after-stop");
        messages.extend(switch_to(host, name, new_slot, &new_info, &info)?);
        anyhow::Ok(messages)
    })();
    match switched {
        Ok(messages) => report.messages.extend(messages),
        // The journal says where the host was going: recovery finishes it
        // now (the pointer decides which slot) and starts the service if it
        // was running, so an error here never leaves it stopped.
        Err(e) => {
            let after = match recover(host, name) {
                Ok(Some((_, message))) => format!("; {message}"),
                Ok(None) => String::new(),
                Err(r) => format!(
                    "; and recovering failed too: {r:#} (`socle update {name}` again finishes it)"
                ),
            };
            return Err(e.context(format!("updating {name}{after}")));
        }
    }
    report.slot = new_slot;
    report.status = UpdateStatus::Updated;
    if !(was_running && new_info.has_container_service) {
        fsops::remove_any(&host.transition_path(name))?;
        return Ok(report);
    }
    let gate = start_healthy(host, name, &new_info, opts.timeout);
    failpoint("update:after-start");
    if let Err(why) = gate {
        let log = last_log_lines(host, name);
        if opts.no_rollback {
            fsops::remove_any(&host.transition_path(name))?;
            bail!("{name}: the new deployment is not healthy: {why}; left in place (--no-rollback). Last log lines: {log}");
        }
        // The failed deployment must be gone before the old one starts again.
        host.stop_container(name).with_context(|| {
            format!("{name}: the new deployment is not healthy ({why}) and could not be stopped; nothing was rolled back")
        })?;
        switch_to(host, name, slot, &info, &new_info)?;
        let restarted = match start_unit(host, name)? {
            Some(problem) => format!("; and the old deployment did not start again: {problem}"),
            None => String::new(),
        };
        fsops::remove_any(&host.transition_path(name))?;
        bail!(
            "{name}: the new deployment ({}) is not healthy: {why}; rolled back to {} (slot {slot}){restarted}. Last log lines: {log}",
            new_info.image,
            info.image
        );
    }
    fsops::remove_any(&host.transition_path(name))?;
    Ok(report)
}

/// Switches `name` to its other slot, with that slot's own files and values.
/// A second rollback goes forward again.
pub fn rollback(host: &Host, name: &str) -> anyhow::Result<UpdateReport> {
    check_installed_name(name)?;
    // A crashed update or rollback is finished first; its slot is then the
    // one a rollback leaves.
    let recovered = recover(host, name)?;
    let Some(slot) = host.current_slot(name) else {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    };
    let info = host.read_info(name, slot)?;
    if let Some((t, message)) = &recovered {
        // An interrupted update that recovery undid, or an interrupted
        // rollback that had already moved the pointer: either way the
        // rollback the user asked for is what the host now shows.
        let undone_update = t.op == Op::Update && t.from == slot;
        let finished_rollback = t.op == Op::Rollback && t.to == slot;
        if undone_update || finished_rollback {
            return Ok(UpdateReport {
                name: name.into(),
                image_before: info.image.clone(),
                id_before: info.image_id.clone(),
                image_after: info.image,
                id_after: info.image_id,
                slot,
                status: UpdateStatus::RolledBack,
                messages: vec![message.clone()],
            });
        }
    }
    let target = other(slot);
    let target_info = host
        .read_info(name, target)
        .map_err(|_| anyhow::anyhow!("{name} has no other deployment to roll back to"))?;
    let was_running = info.has_container_service && should_run_after_rollback(host, name)?;
    write_transition(
        host,
        name,
        &Transition {
            op: Op::Rollback,
            phase: Phase::Switching,
            from: slot,
            to: target,
            was_running,
            new_id: String::new(),
        },
    )?;
    let mut messages: Vec<String> = recovered.into_iter().map(|(_, m)| m).collect();
    if was_running {
        messages.extend(host.stop_container(name)?);
    }
    failpoint("rollback:after-stop");
    messages.extend(switch_to(host, name, target, &target_info, &info)?);
    let mut start_problem = None;
    if was_running && target_info.has_container_service {
        start_problem = start_unit(host, name)?;
    }
    fsops::remove_any(&host.transition_path(name))?;
    if let Some(problem) = start_problem {
        bail!(
            "{name}: rolled back to {} (slot {target}), but {problem}. Last log lines: {}",
            target_info.image,
            last_log_lines(host, name)
        );
    }
    Ok(UpdateReport {
        name: name.into(),
        image_before: info.image,
        id_before: info.image_id,
        image_after: target_info.image,
        id_after: target_info.image_id,
        slot: target,
        status: UpdateStatus::RolledBack,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::fakes::Fake;
    use std::path::Path;

    fn host(fake: &Fake) -> Host {
        fake.host(Path::new("/nonexistent"))
    }

    fn info() -> Info {
        serde_json::from_value(serde_json::json!({
            "name": "web", "image": "hello:1", "image-id": "sha256:1", "store-commit": "c",
            "slot": 0, "created": "", "runtime": "runc", "has-container-service": true,
            "values": {}, "user-values": {}, "installed-files": []
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_start_job_fails_the_gate_with_the_services_reason() {
        let fake = Fake::new();
        fake.0.start.borrow_mut().push_back(Some(JobResult::Failed));
        fake.0.result.set(Some("exit-code"));
        let e = start_healthy(&host(&fake), "web", &info(), Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e,
            "web.service did not start (start job failed, service result \"exit-code\")"
        );
    }

    #[test]
    fn a_start_job_still_running_at_the_deadline_fails_the_gate() {
        let fake = Fake::new();
        fake.0.start.borrow_mut().push_back(None);
        let e = start_healthy(&host(&fake), "web", &info(), Duration::from_secs(7)).unwrap_err();
        assert!(e.contains("still starting after 7 s"), "{e}");
        assert!(e.contains("READY=1"), "{e}");
    }

    #[test]
    fn a_started_unit_that_stays_active_passes_the_gate() {
        let fake = Fake::new();
        start_healthy(&host(&fake), "web", &info(), Duration::from_secs(10)).unwrap();
        assert!(fake.0.slept.get() >= SETTLE, "{:?}", fake.0.slept.get());
    }

    #[test]
    fn a_started_unit_that_dies_during_the_settle_period_fails_the_gate() {
        let fake = Fake::new();
        fake.0
            .states
            .borrow_mut()
            .extend(["active", "active", "activating"]);
        let e = start_healthy(&host(&fake), "web", &info(), Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("left the active state (activating)"), "{e}");
    }

    #[test]
    fn a_stop_reports_the_sigkill_and_kills_what_is_left() {
        let fake = Fake::new();
        fake.0.killed_after.set(Some(Duration::from_secs(30)));
        fake.0
            .processes
            .borrow_mut()
            .extend([vec![(42, "/usr/bin/etcd".to_string())], vec![]]);
        let messages = host(&fake).stop_container("web").unwrap();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("within 30 s"), "{messages:?}");
        assert!(messages[0].contains("SIGKILL"), "{messages:?}");
        assert!(messages[1].contains("42 /usr/bin/etcd"), "{messages:?}");
        assert_eq!(
            fake.take_calls(),
            ["stop web.service", "kill web.service 9", "runc state web"]
        );
    }

    #[test]
    fn a_process_that_survives_sigkill_stops_everything() {
        let fake = Fake::new();
        let survivor = vec![(7, "stuck".to_string())];
        *fake.0.processes.borrow_mut() = std::iter::repeat_n(survivor, 1000).collect();
        let e = host(&fake).stop_container("web").unwrap_err().to_string();
        assert!(e.contains("survive SIGKILL (7 stuck)"), "{e}");
        assert!(fake.0.slept.get() >= Duration::from_secs(10));
    }

    #[test]
    fn a_runc_container_that_outlives_its_unit_is_deleted() {
        let fake = Fake::new();
        fake.0.runc_has.set(true);
        let messages = host(&fake).stop_container("web").unwrap();
        assert_eq!(
            messages,
            ["removed the runc container web that outlived web.service"]
        );
        assert_eq!(
            fake.take_calls(),
            [
                "stop web.service",
                "runc state web",
                "runc delete --force web"
            ]
        );
    }
}
