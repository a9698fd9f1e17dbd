//! Update and rollback: deploy into the other slot, swap the pointer, and
//! come back to the previous slot when the new one does not stay healthy.
//!
//! Order matters for a node that must never be left without a working
//! deployment: the new slot is written completely before the service is
//! stopped, the pointer moves by rename(2), and the service is restarted
//! only if it was running.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{
    fsops, parse_sets, publish, unit_file_name, validate_name, write_deployment, Host, Info,
};
use crate::store::Store;

pub struct UpdateOptions<'a> {
    pub name: &'a str,
    pub set: &'a [String],
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
    /// `updated`, `up to date`, `rolled back`
    pub status: String,
    pub messages: Vec<String>,
}

/// How long a restarted unit must stay active to count as healthy.
const SETTLE: Duration = Duration::from_secs(3);

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
    let messages = publish(host, name, &host.slot_dir(name, slot), info, Some(from))?;
    fsops::swap_symlink(Path::new(&format!("{name}.{slot}")), &host.pointer(name))?;
    host.systemd.reload()?;
    if info.has_container_service {
        host.systemd.enable(&unit_file_name(name))?;
    }
    host.run_tmpfiles("--create", &host.tmpfiles_path(name))?;
    Ok(messages)
}

fn is_running(host: &Host, name: &str) -> anyhow::Result<bool> {
    Ok(host.systemd.active_state(&unit_file_name(name))?.as_deref() == Some("active"))
}

/// The unit's last log lines, for the error that explains a rollback.
fn last_log_lines(name: &str) -> String {
    Command::new("journalctl")
        .args(["--no-pager", "-o", "cat", "-n", "8", "-u"])
        .arg(unit_file_name(name))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// Starts the unit and waits until it has been active for `SETTLE` without
/// interruption, within `timeout`. Returns why it is not healthy.
fn start_healthy(host: &Host, name: &str, timeout: Duration) -> Result<(), String> {
    let unit = unit_file_name(name);
    host.systemd.start(&unit).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut active_since: Option<Instant> = None;
    loop {
        let state = match host.systemd.active_state(&unit) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()), // no systemd to ask: nothing to gate on
            Err(e) => return Err(e.to_string()),
        };
        match state.as_str() {
            "active" => {
                let since = *active_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    return Ok(());
                }
            }
            "failed" | "inactive" => return Err(format!("{unit} is {state}")),
            // activating again after being active: it died and is restarting.
            other if active_since.is_some() => {
                return Err(format!("{unit} left the active state ({other})"))
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{unit} did not stay active for {} s within {} s (state: {state})",
                SETTLE.as_secs(),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deploys `name` again into its other slot, from the same image with new
/// values or from another image, and switches to it.
pub fn update(host: &Host, store: &Store, opts: &UpdateOptions) -> anyhow::Result<UpdateReport> {
    let name = opts.name;
    validate_name(name)?;
    let Some(slot) = host.current_slot(name) else {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    };
    let info = host.read_info(name, slot)?;
    let mut user_values = info.user_values.clone();
    user_values.extend(parse_sets(opts.set)?);
    let image = store.image(opts.rebase.unwrap_or(&info.image))?;
    let mut report = UpdateReport {
        name: name.into(),
        image_before: info.image.clone(),
        id_before: info.image_id.clone(),
        image_after: image.name.to_string(),
        id_after: image.id.clone(),
        slot,
        status: "up to date".into(),
        messages: Vec::new(),
    };
    if image.id == info.image_id && user_values == info.user_values {
        return Ok(report);
    }

    // A reused slot is rebuilt from scratch: nothing of an older image lingers.
    let new_slot = other(slot);
    let new_dir = host.slot_dir(name, new_slot);
    let staging = host
        .containers_dir()
        .join(format!(".{name}.{new_slot}.staging"));
    fsops::remove_any(&staging)?;
    let (new_info, warnings) = match write_deployment(
        host,
        store,
        &image,
        name,
        new_slot,
        &user_values,
        Some(&info.values),
        &staging,
    ) {
        Ok(r) => r,
        Err(e) => {
            let _ = fsops::remove_any(&staging);
            return Err(e.context(format!(
                "updating {name}; the current deployment is unchanged"
            )));
        }
    };
    report.messages.extend(warnings);
    fsops::remove_any(&new_dir)?;
    fs::rename(&staging, &new_dir)
        .with_context(|| format!("renaming {} to {}", staging.display(), new_dir.display()))?;
    fsops::sync_dir(&host.containers_dir())?;

    let was_running = info.has_container_service && is_running(host, name)?;
    if was_running {
        host.systemd.stop(&unit_file_name(name))?;
    }
    report
        .messages
        .extend(switch_to(host, name, new_slot, &new_info, &info)?);
    report.slot = new_slot;
    report.status = "updated".into();
    if !(was_running && new_info.has_container_service) {
        return Ok(report);
    }
    if let Err(why) = start_healthy(host, name, opts.timeout) {
        let log = last_log_lines(name);
        if opts.no_rollback {
            bail!("{name}: the new deployment is not healthy: {why}; left in place (--no-rollback). Last log lines: {log}");
        }
        let _ = host.systemd.stop(&unit_file_name(name));
        switch_to(host, name, slot, &info, &new_info)?;
        host.systemd.start(&unit_file_name(name))?;
        bail!(
            "{name}: the new deployment ({}) is not healthy: {why}; rolled back to {} (slot {slot}). Last log lines: {log}",
            new_info.image,
            info.image
        );
    }
    Ok(report)
}

/// Switches `name` to its other slot, with that slot's own files and values.
/// A second rollback goes forward again.
pub fn rollback(host: &Host, name: &str) -> anyhow::Result<UpdateReport> {
    validate_name(name)?;
    let Some(slot) = host.current_slot(name) else {
        bail!("no container {name:?} is installed (see `socle list --all`)");
    };
    let info = host.read_info(name, slot)?;
    let target = other(slot);
    let target_info = host
        .read_info(name, target)
        .map_err(|_| anyhow::anyhow!("{name} has no other deployment to roll back to"))?;
    let was_running = info.has_container_service && is_running(host, name)?;
    if was_running {
        host.systemd.stop(&unit_file_name(name))?;
    }
    let messages = switch_to(host, name, target, &target_info, &info)?;
    if was_running && target_info.has_container_service {
        host.systemd.start(&unit_file_name(name))?;
    }
    Ok(UpdateReport {
        name: name.into(),
        image_before: info.image,
        id_before: info.image_id,
        image_after: target_info.image,
        id_after: target_info.image_id,
        slot: target,
        status: "rolled back".into(),
        messages,
    })
}
