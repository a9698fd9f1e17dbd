//! Recovery of an install or uninstall a crash interrupted (their journal is
//! the `.NAME.transition` file updates use; `update::recover` sends the two
//! kinds here). The pointer decides, as for a switch: an install whose
//! pointer exists is finished, one without is undone; an uninstall is always
//! finished.

use std::path::Path;

use super::layout::{self, Entry};
use super::update::{self, Op, Transition};
use super::{fsops, remove_container, switch, Host, UninstallReport};

/// Finishes or undoes the install or uninstall journaled in `t`. Returns
/// the journal and what was done, for the user.
pub(super) fn recover_lifecycle(
    host: &Host,
    name: &str,
    t: Transition,
) -> anyhow::Result<Option<(Transition, String)>> {
    let message = match t.op {
        Op::Uninstall => {
            let mut report = UninstallReport::default();
            remove_container(host, name, t.from, &mut report)?;
            let mut m = format!("finished the interrupted uninstall of {name}");
            if !report.kept.is_empty() {
                let kept: Vec<String> = report
                    .kept
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                m.push_str(&format!(" (kept edited {})", kept.join(", ")));
            }
            m
        }
        Op::Install if host.current_slot(name) == Some(t.to) => finish_install(host, name, &t)?,
        Op::Install => undo_install(host, name, &t)?,
        Op::Update | Op::Rollback => unreachable!("update::recover handles switches"),
    };
    Ok(Some((t, message)))
}

/// The pointer exists: the slot is complete and current; what may be
/// missing is on the host (unit, tmpfiles, host files) and in systemd.
fn finish_install(host: &Host, name: &str, t: &Transition) -> anyhow::Result<String> {
    fsops::remove_any(&host.staging_dir(name, t.to))?;
    let info = host.read_info(name, t.to)?;
    switch::make_current(host, name, t.to, &info, None, switch::Pointer::Kept)?;
    fsops::remove_any(&host.transition_path(name))?;
    fsops::sync_dir(&host.containers_dir())?;
    Ok(format!(
        "finished the interrupted install of {name} ({})",
        info.image
    ))
}

/// No pointer: the install never completed. What it published is removed,
/// but only files whose content is still the slot's own (the user may have
/// put something there since).
fn undo_install(host: &Host, name: &str, t: &Transition) -> anyhow::Result<String> {
    fsops::remove_any(&host.staging_dir(name, t.to))?;
    let slot_dir = host.slot_dir(name, t.to);
    let mut removed_slot = false;
    if let Ok(info) = host.read_info(name, t.to) {
        if info.id == t.new_id {
            remove_if_same(&host.unit_path(name), &layout::slot_unit(&slot_dir, name))?;
            remove_if_same(&host.tmpfiles_path(name), &layout::slot_tmpfiles(&slot_dir))?;
            for f in &info.installed_files {
                let on_host = host.on_host(&f.path);
                if fsops::sha256_file(&on_host).is_ok_and(|sum| sum == f.sha256) {
                    fsops::remove_any(&on_host)?;
                }
            }
            host.systemd.reload()?;
            fsops::remove_any(&slot_dir)?;
            removed_slot = true;
        }
    }
    fsops::remove_any(&host.transition_path(name))?;
    fsops::sync_dir(&host.containers_dir())?;
    Ok(if removed_slot {
        format!("undid the interrupted install of {name}: it had not finished")
    } else {
        format!("discarded the interrupted install of {name} (it had not started)")
    })
}

/// Removes `path` if it holds exactly what `copy` holds.
fn remove_if_same(path: &Path, copy: &Path) -> anyhow::Result<()> {
    if let (Ok(a), Ok(b)) = (std::fs::read(path), std::fs::read(copy)) {
        if a == b {
            fsops::remove_any(path)?;
        }
    }
    Ok(())
}

/// Names with a journal in the containers directory (`.NAME.transition`).
pub(super) fn journaled(host: &Host) -> anyhow::Result<Vec<String>> {
    let dir = host.containers_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| match layout::parse(&e.file_name().to_string_lossy()) {
            Some(Entry::Transition { name }) => Some(name.to_string()),
            _ => None,
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Finishes or undoes every operation a crash interrupted. Returns what was
/// done, one message per container. Call with the state lock held.
pub fn recover_all(host: &Host) -> anyhow::Result<Vec<String>> {
    let mut messages = Vec::new();
    for name in journaled(host)? {
        if let Some((_, m)) = update::recover(host, &name)? {
            messages.push(m);
        }
    }
    Ok(messages)
}
