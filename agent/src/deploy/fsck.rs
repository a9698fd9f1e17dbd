//! The deployments half of `socle fsck`: journals of interrupted
//! operations, pointers, slots, and what socle put on the host for each
//! container (unit, tmpfiles snippet, host files). A file in the unit or
//! tmpfiles directory is socle's only when a container's slot holds the
//! same content under that container's name; anything else is never
//! touched.

use std::fs;
use std::path::{Path, PathBuf};

use super::layout::{self, Entry};
use super::{fsops, switch, unit_name, update, Host, Info};

/// One problem found, and what `--repair` did about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// `journal`, `pointer`, `slot`, `unit`, `tmpfiles`, `host-file`, `layer`, `image`
    pub kind: &'static str,
    /// The container, image or path concerned.
    pub subject: String,
    pub problem: String,
    /// What `--repair` does (or did), or what the user has to do.
    pub fix: String,
    pub repaired: bool,
}

impl Finding {
    fn new(kind: &'static str, subject: impl Into<String>, problem: String, fix: String) -> Self {
        Finding {
            kind,
            subject: subject.into(),
            problem,
            fix,
            repaired: false,
        }
    }
}

/// What the deployments check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct DeploymentsCheck {
    pub containers_checked: usize,
    pub findings: Vec<Finding>,
    /// What is as the user left it and stays so (edited host files, a unit
    /// changed by hand): not a problem.
    pub notes: Vec<String>,
}

/// Checks the containers directory against the host, and repairs what it
/// can when `repair` is set. Call with the state lock held.
pub fn check_deployments(host: &Host, repair: bool) -> anyhow::Result<DeploymentsCheck> {
    let mut out = DeploymentsCheck::default();
    check_journals(host, repair, &mut out)?;
    check_orphans(host, repair, &mut out)?;
    for name in host.installed()? {
        out.containers_checked += 1;
        check_container(host, &name, repair, &mut out)?;
    }
    Ok(out)
}

fn check_journals(host: &Host, repair: bool, out: &mut DeploymentsCheck) -> anyhow::Result<()> {
    for name in super::recovery::journaled(host)? {
        let path = host.transition_path(&name);
        let what = match update::read_transition(host, &name) {
            Ok(Some(t)) => format!("{:?}", t.op).to_lowercase(),
            Ok(None) => continue,
            Err(e) => {
                out.findings.push(Finding::new(
                    "journal",
                    path.display().to_string(),
                    format!("{e:#}"),
                    "move it away and run `socle fsck --repair` again".into(),
                ));
                continue;
            }
        };
        let mut f = Finding::new(
            "journal",
            name.clone(),
            format!("an interrupted {what} of {name} ({})", path.display()),
            "finish it (an install without its pointer is undone)".into(),
        );
        if repair {
            if let Some((_, message)) = update::recover(host, &name)? {
                f.fix = message;
            }
            f.repaired = true;
        }
        out.findings.push(f);
    }
    Ok(())
}

/// Slots no installed container owns and staging directories, with the
/// unit, tmpfiles and host files a removed container's slot left on the
/// host (recognized by their content: the slot's own copies).
fn check_orphans(host: &Host, repair: bool, out: &mut DeploymentsCheck) -> anyhow::Result<()> {
    for dir in host.orphan_slots()? {
        let file_name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let info = fs::read_to_string(layout::slot_info(&dir))
            .ok()
            .and_then(|t| serde_json::from_str::<Info>(&t).ok());
        let staging = matches!(layout::parse(&file_name), Some(Entry::Staging { .. }));
        if let Some(info) = info
            .as_ref()
            .filter(|i| !staging && !is_installed(host, &i.name))
        {
            let name = &info.name;
            let left = leftovers(host, name, &dir, info);
            for (kind, path) in &left {
                let mut f = Finding::new(
                    kind,
                    path.display().to_string(),
                    format!(
                        "left by {name}, which is not installed (same content as {})",
                        dir.display()
                    ),
                    "remove it".into(),
                );
                if repair {
                    if *kind == "unit" {
                        host.systemd.disable(&unit_name(name))?;
                    }
                    if *kind == "tmpfiles" {
                        host.run_tmpfiles("--remove", path)?;
                    }
                    fsops::remove_any(path)?;
                    f.repaired = true;
                }
                out.findings.push(f);
            }
            if repair && left.iter().any(|(k, _)| *k == "unit") {
                host.systemd.reload()?;
            }
        }
        let problem = if staging {
            "a staging directory left by an interrupted run".to_string()
        } else {
            "a slot no installed container uses".to_string()
        };
        let mut f = Finding::new(
            "slot",
            dir.display().to_string(),
            problem,
            "remove it".into(),
        );
        if repair {
            fsops::remove_any(&dir)?;
            fsops::sync_dir(&host.containers_dir())?;
            f.repaired = true;
        }
        out.findings.push(f);
    }
    Ok(())
}

fn is_installed(host: &Host, name: &str) -> bool {
    fs::symlink_metadata(host.pointer(name)).is_ok()
}

/// The unit, tmpfiles snippet and host files on the host that hold exactly
/// what the slot `dir` of `name` rendered.
fn leftovers(host: &Host, name: &str, dir: &Path, info: &Info) -> Vec<(&'static str, PathBuf)> {
    let same = |a: &Path, b: &Path| matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y);
    let mut left = Vec::new();
    if same(&host.unit_path(name), &layout::slot_unit(dir, name)) {
        left.push(("unit", host.unit_path(name)));
    }
    if same(&host.tmpfiles_path(name), &layout::slot_tmpfiles(dir)) {
        left.push(("tmpfiles", host.tmpfiles_path(name)));
    }
    for f in &info.installed_files {
        let on_host = host.on_host(&f.path);
        if fsops::sha256_file(&on_host).is_ok_and(|s| s == f.sha256) {
            left.push(("host-file", on_host));
        }
    }
    left
}

fn check_container(
    host: &Host,
    name: &str,
    repair: bool,
    out: &mut DeploymentsCheck,
) -> anyhow::Result<()> {
    let current = host.current_slot(name);
    let info = current.and_then(|s| host.read_info(name, s).ok());
    let (Some(slot), Some(info)) = (current, info) else {
        return check_broken_pointer(host, name, repair, out);
    };
    let other = host.read_info(name, 1 - slot.min(1)).ok();
    let slot_dir = host.slot_dir(name, slot);
    let other_dir = host.slot_dir(name, 1 - slot.min(1));
    let mut found = Vec::new();
    // (kind, on the host, this slot's copy, the other slot's copy)
    let mut files = vec![(
        "tmpfiles",
        host.tmpfiles_path(name),
        layout::slot_tmpfiles(&slot_dir),
        layout::slot_tmpfiles(&other_dir),
    )];
    if info.has_container_service {
        files.push((
            "unit",
            host.unit_path(name),
            layout::slot_unit(&slot_dir, name),
            layout::slot_unit(&other_dir, name),
        ));
    }
    for (kind, path, copy, other_copy) in files {
        match (fs::read(&path), fs::read(&copy)) {
            (Err(_), _) => found.push((kind, path, "missing".to_string())),
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), _) if other.is_some() && fs::read(&other_copy).is_ok_and(|c| c == a) => {
                found.push((kind, path, "is the other slot's version".into()))
            }
            (Ok(_), _) => out
                .notes
                .push(format!("{} differs from what socle wrote for {name} (changed by hand?); `socle update` writes it again", path.display())),
        }
    }
    for f in &info.installed_files {
        let on_host = host.on_host(&f.path);
        match fsops::sha256_file(&on_host) {
            Err(_) => found.push(("host-file", on_host, "missing".into())),
            Ok(sum) if sum == f.sha256 => {}
            Ok(sum)
                if other.as_ref().is_some_and(|o| {
                    o.installed_files
                        .iter()
                        .any(|r| r.path == f.path && r.sha256 == sum)
                }) =>
            {
                found.push(("host-file", on_host, "is the other slot's version".into()))
            }
            Ok(_) => out.notes.push(format!(
                "{} was edited since {name} installed it; it is kept",
                on_host.display()
            )),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let fix = format!("write it again from {name}'s current slot {slot}");
    if repair {
        switch::make_current(
            host,
            name,
            slot,
            &info,
            other.as_ref(),
            switch::Pointer::Kept,
        )?;
    }
    for (kind, path, problem) in found {
        let mut f = Finding::new(
            kind,
            path.display().to_string(),
            format!("{problem} ({name}, slot {slot})"),
            fix.clone(),
        );
        f.repaired = repair;
        out.findings.push(f);
    }
    Ok(())
}

/// A pointer that names no complete slot: switch to the other slot if it
/// is complete; otherwise the container can only be removed.
fn check_broken_pointer(
    host: &Host,
    name: &str,
    repair: bool,
    out: &mut DeploymentsCheck,
) -> anyhow::Result<()> {
    let pointer = host.pointer(name);
    let target = fs::read_link(&pointer).unwrap_or_default();
    let usable = [0, 1]
        .into_iter()
        .find(|&s| host.read_info(name, s).is_ok_and(|i| i.slot == s));
    let problem = format!(
        "the pointer {} -> {} names no complete slot",
        pointer.display(),
        target.display()
    );
    let mut f = match usable {
        Some(s) => Finding::new(
            "pointer",
            name,
            problem,
            format!("point it at slot {s}, which is complete, and publish that slot"),
        ),
        None => Finding::new(
            "pointer",
            name,
            problem,
            format!(
                "no slot of {name} is complete: `socle uninstall {name}`, then install it again"
            ),
        ),
    };
    if let (true, Some(s)) = (repair, usable) {
        host.point_at(name, s)?;
        let info = host.read_info(name, s)?;
        switch::make_current(host, name, s, &info, None, switch::Pointer::Kept)?;
        f.repaired = true;
    }
    out.findings.push(f);
    Ok(())
}
