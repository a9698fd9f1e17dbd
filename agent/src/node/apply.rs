//! `apply`: make the node what its `containers.d` declarations say. Every
//! declaration is read and checked first; then each container is
//! installed, updated (health-gated, rolled back on failure), left alone or
//! uninstalled, in dependency order. Only containers apply created are
//! ever updated or removed: a record of each (`STATE/applied/NAME.json`,
//! the declaration as applied) says which. A container installed by hand
//! is never touched.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{one_line, Node, PullSettings};
use crate::declaration::{self, Declaration, Problem, Wanted};
use crate::deploy::{self, fsops, Host, Policy};
use crate::reference::{ImageName, ImageRef};
use crate::store::{Store, StoredImage};
use crate::template::Values;

/// How many times apply goes over the declarations when they keep changing
/// while it runs.
const ROUNDS: usize = 3;

/// `apply`.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// `containers.d` directories, most important first.
    pub dirs: Vec<PathBuf>,
    /// Only print the plan.
    pub dry_run: bool,
    /// Never pull from a registry: the store and seed archives only.
    pub offline: bool,
    /// How long an updated deployment may take to become healthy.
    pub timeout: Duration,
}

impl Default for ApplyRequest {
    fn default() -> Self {
        ApplyRequest {
            dirs: declaration::DEFAULT_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            dry_run: false,
            offline: false,
            timeout: Duration::from_secs(90),
        }
    }
}

/// What apply does to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Install,
    Update,
    Uninstall,
    Unchanged,
}

impl Action {
    /// `install`, `update`, `uninstall`, `unchanged`.
    pub fn word(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::Update => "update",
            Action::Uninstall => "uninstall",
            Action::Unchanged => "unchanged",
        }
    }

    /// The plan's mark: `+`, `~`, `-`, `=`.
    pub fn mark(self) -> char {
        match self {
            Action::Install => '+',
            Action::Update => '~',
            Action::Uninstall => '-',
            Action::Unchanged => '=',
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "reason")]
pub enum Outcome {
    /// `--dry-run`: not carried out.
    Planned,
    Done,
    /// Not tried: a container it needs failed.
    Skipped(String),
    Failed(String),
}

/// One line of the plan and what became of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub image: String,
    /// What differs, for an update: `image id 3f2a → 9c1e`, `values.PORT: 1 → 2`.
    pub changes: Vec<String>,
    /// What install or update warned about (dangerous requests, notes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, serde::Serialize)]
pub struct ApplyReport {
    pub dry_run: bool,
    pub steps: Vec<Step>,
    /// Declarations left out, with their file, line and key.
    pub problems: Vec<Problem>,
    pub masked: Vec<String>,
}

impl ApplyReport {
    /// Nothing was (or would be) changed.
    pub fn unchanged(&self) -> bool {
        self.steps.iter().all(|s| s.action == Action::Unchanged)
    }

    /// The error a front ends with: declarations left out, steps failed.
    pub fn failure(&self) -> Option<String> {
        let failed = self
            .steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_) | Outcome::Skipped(_)))
            .count();
        let bad = self.problems.len();
        match (bad, failed) {
            (0, 0) => None,
            _ => Some(format!(
                "{} declarations could not be read or checked, {} containers were not applied (see above)",
                bad, failed
            )),
        }
    }
}

/// The declaration a container was last applied with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    image: String,
    state: String,
    after: Vec<String>,
    values: Values,
}

impl Record {
    fn of(d: &Declaration) -> Record {
        Record {
            image: d.image.clone(),
            state: match d.state {
                Wanted::Running => "running".into(),
                Wanted::Stopped => "stopped".into(),
            },
            after: d.after.clone(),
            values: d.values.clone(),
        }
    }
}

/// An update apply tried and that failed: not tried again while the
/// declaration and the image stay the same.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Attempt {
    declaration: Record,
    image_id: String,
    reason: String,
}

impl Attempt {
    fn same_as(&self, other: &Attempt) -> bool {
        self.image_id == other.image_id
            && serde_json::to_value(&self.declaration).ok()
                == serde_json::to_value(&other.declaration).ok()
    }
}

fn read_failure(host: &Host, name: &str) -> Option<Attempt> {
    let text = std::fs::read_to_string(host.applied_failure(name)).ok()?;
    serde_json::from_str(&text).ok()
}

fn read_record(host: &Host, name: &str) -> Option<Record> {
    let text = std::fs::read_to_string(host.applied_record(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The name an image declared as `image` is stored under.
pub(super) fn store_name(image: &str) -> anyhow::Result<ImageName> {
    match image.parse::<ImageRef>()? {
        ImageRef::Docker(r) => Ok(r.image_name()),
        _ => anyhow::bail!(
            "{image:?} is a local source: declare the image's name in `image` and the source in `seed`"
        ),
    }
}

fn order_text(d: &Declaration) -> String {
    let units: Vec<String> = d.after.iter().map(|a| deploy::unit_name(a)).collect();
    format!(
        "# Written by `socle apply` from {}: start after the containers it needs.\n[Unit]\nAfter={}\nWants={}\n",
        d.file.display(),
        units.join(" "),
        units.join(" ")
    )
}

impl Node {
    /// Applies the declarations: see the module's documentation.
    ///
    /// A declaration that changes while apply runs is applied too: apply
    /// reads them again when it is done and goes round once more if they
    /// differ (a path unit does not start a service again for a change
    /// made while it runs). At most [`ROUNDS`] rounds.
    pub fn apply(&self, req: &ApplyRequest, pull: &PullSettings) -> anyhow::Result<ApplyReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = if req.dry_run {
            self.host_without_systemd()
        } else {
            self.host()?
        };
        let mut declared = declaration::read(&req.dirs);
        let mut earlier: Vec<Step> = Vec::new();
        for _ in 1..ROUNDS {
            let mut report = self.apply_round(&host, &store, declared.clone(), req, pull)?;
            let now = declaration::read(&req.dirs);
            if req.dry_run || now == declared {
                earlier.append(&mut report.steps);
                report.steps = earlier;
                return Ok(report);
            }
            earlier.extend(
                report
                    .steps
                    .into_iter()
                    .filter(|s| s.action != Action::Unchanged),
            );
            declared = now;
        }
        let mut report = self.apply_round(&host, &store, declared, req, pull)?;
        earlier.append(&mut report.steps);
        report.steps = earlier;
        Ok(report)
    }

    /// One pass over the declarations `declared`.
    fn apply_round(
        &self,
        host: &Host,
        store: &Store,
        declared: declaration::Declared,
        req: &ApplyRequest,
        pull: &PullSettings,
    ) -> anyhow::Result<ApplyReport> {
        let mut report = ApplyReport {
            dry_run: req.dry_run,
            steps: Vec::new(),
            problems: declared.problems,
            masked: declared.masked,
        };
        let installed = host.installed()?;
        let named_by_a_file: Vec<&str> = report
            .problems
            .iter()
            .map(|p| p.name.as_str())
            .chain(declared.containers.iter().map(|d| d.name.as_str()))
            .collect();

        // Containers apply created whose declaration is gone (or masked),
        // most dependent first. A declaration with a problem keeps its
        // container: a typo must not remove a running service.
        let mut gone: Vec<String> = host
            .applied_names()
            .into_iter()
            .filter(|n| !named_by_a_file.contains(&n.as_str()))
            .collect();
        gone.reverse();
        for name in gone {
            let image = read_record(host, &name)
                .map(|r| r.image)
                .unwrap_or_default();
            let outcome = if req.dry_run {
                Outcome::Planned
            } else {
                let uninstall = || self.apply_uninstall(host, &name, installed.contains(&name));
                match self.tracked(&name, "apply: uninstall", uninstall, |_| {
                    "uninstalled".into()
                }) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(one_line(&e)),
                }
            };
            report.steps.push(Step {
                name,
                action: Action::Uninstall,
                image,
                changes: Vec::new(),
                warnings: Vec::new(),
                outcome,
            });
        }

        let mut not_applied: Vec<String> = Vec::new();
        for d in &declared.containers {
            if let Some(dep) = d.after.iter().find(|a| not_applied.contains(a)) {
                not_applied.push(d.name.clone());
                report.steps.push(Step {
                    name: d.name.clone(),
                    action: Action::Unchanged,
                    image: d.image.clone(),
                    changes: Vec::new(),
                    warnings: Vec::new(),
                    outcome: Outcome::Skipped(format!("{dep} was not applied")),
                });
                continue;
            }
            let step = self.apply_one(host, store, d, &installed, req, pull);
            let step = match step {
                Ok(step) => step,
                Err(e) => Step {
                    name: d.name.clone(),
                    action: Action::Unchanged,
                    image: d.image.clone(),
                    changes: Vec::new(),
                    warnings: Vec::new(),
                    outcome: Outcome::Failed(one_line(&e)),
                },
            };
            if matches!(step.outcome, Outcome::Failed(_)) {
                not_applied.push(d.name.clone());
            }
            report.steps.push(step);
        }
        Ok(report)
    }

    /// Plans and (unless a dry run) carries out one declaration. An `Err`
    /// is a failure found before anything changed.
    fn apply_one(
        &self,
        host: &Host,
        store: &Store,
        d: &Declaration,
        installed: &[String],
        req: &ApplyRequest,
        pull: &PullSettings,
    ) -> anyhow::Result<Step> {
        let record = read_record(host, &d.name);
        let is_installed = installed.contains(&d.name);
        if is_installed && record.is_none() {
            anyhow::bail!(
                "a container {} was installed by hand, and apply leaves it alone: uninstall it (`socle uninstall {}`) to let {} manage it, or rename the declaration",
                d.name,
                d.name,
                d.file.display()
            );
        }
        let name = store_name(&d.image).with_context(|| format!("{}: image", d.file.display()))?;
        let stored = store.image_by_name(&name)?;
        let mut step = Step {
            name: d.name.clone(),
            action: Action::Unchanged,
            image: d.image.clone(),
            changes: Vec::new(),
            warnings: Vec::new(),
            outcome: Outcome::Planned,
        };
        let image = match (stored, req.dry_run) {
            (Some(image), _) => Some(image),
            (None, true) => {
                step.changes.push(where_from(d, req.offline));
                None
            }
            (None, false) => Some(self.fetch(store, d, &name, req.offline, pull)?),
        };
        let record = record.filter(|_| is_installed);
        match &record {
            None => step.action = Action::Install,
            Some(r) => {
                let slot = host
                    .current_slot(&d.name)
                    .with_context(|| format!("{} has no current deployment", d.name))?;
                let info = host.read_info(&d.name, slot)?;
                if let Some(image) = &image {
                    if image.name.to_string() != info.image {
                        step.changes
                            .push(format!("image {} → {}", info.image, image.name));
                    } else if image.id != info.image_id {
                        step.changes.push(format!(
                            "image id {} → {}",
                            crate::store::short_id(&info.image_id),
                            crate::store::short_id(&image.id)
                        ));
                    }
                }
                for (k, v) in &d.values {
                    match info.user_values.get(k) {
                        Some(old) if old == v => {}
                        Some(old) => step.changes.push(format!("values.{k}: {old} → {v}")),
                        None => step.changes.push(format!("values.{k}: (default) → {v}")),
                    }
                }
                let was = Record::of(d);
                if r.state != was.state {
                    step.changes
                        .push(format!("state {} → {}", r.state, was.state));
                }
                if r.after != was.after {
                    step.changes.push(format!(
                        "after [{}] → [{}]",
                        r.after.join(", "),
                        was.after.join(", ")
                    ));
                }
                if !step.changes.is_empty() {
                    step.action = Action::Update;
                }
            }
        }
        if req.dry_run {
            return Ok(step);
        }
        let image = image.expect("fetched when not a dry run");
        let action = step.action;
        // An update that failed (rolled back) is not tried again for the
        // same declaration and image: each try stops the service, and a
        // path unit or a boot would try it again and again.
        let attempt = Attempt {
            declaration: Record::of(d),
            image_id: image.id.clone(),
            reason: String::new(),
        };
        let failed_before = read_failure(host, &d.name).filter(|f| f.same_as(&attempt));
        if let (Action::Update, Some(f)) = (action, &failed_before) {
            step.outcome = Outcome::Failed(format!(
                "not tried again: this declaration with image {} failed before ({}); change the declaration, or run `socle update {}` to try it by hand",
                crate::store::short_id(&image.id),
                f.reason,
                d.name
            ));
            return Ok(step);
        }
        let carry_out = || self.carry_out(host, store, d, &image, action, req);
        let result = if action == Action::Unchanged {
            carry_out()
        } else {
            let operation = format!("apply: {}", action.word());
            self.tracked(&d.name, &operation, carry_out, |_| {
                format!("{} {}", action.word(), image.name)
            })
        };
        let failure = host.applied_failure(&d.name);
        match &result {
            Err(e) if action == Action::Update => {
                let attempt = Attempt {
                    reason: one_line(e),
                    ..attempt
                };
                if let Ok(json) = serde_json::to_vec_pretty(&attempt) {
                    let _ = fsops::write_atomic(&failure, &json, 0o600);
                }
            }
            Ok(_) => {
                let _ = fsops::remove_any(&failure);
            }
            Err(_) => {}
        }
        step.outcome = match result {
            Ok(warnings) => {
                step.warnings = warnings;
                Outcome::Done
            }
            Err(e) => Outcome::Failed(one_line(&e)),
        };
        Ok(step)
    }

    /// The image of a declaration that is not in the store: its seed, else
    /// its registry.
    fn fetch(
        &self,
        store: &Store,
        d: &Declaration,
        name: &ImageName,
        offline: bool,
        pull: &PullSettings,
    ) -> anyhow::Result<StoredImage> {
        let source: ImageRef = match (&d.seed, offline) {
            (Some(seed), _) => seed.parse()?,
            (None, false) => d.image.parse()?,
            (None, true) => anyhow::bail!(
                "{} is not in the store and {} gives no seed; --offline never pulls: add `seed = \"oci-archive:FILE\"` or apply without --offline",
                d.image,
                d.file.display()
            ),
        };
        let pulled = self
            .pull_into(store, &source, Some(name.clone()), pull)
            .with_context(|| format!("getting the image of {}", d.file.display()))?;
        Ok(pulled.image)
    }

    fn carry_out(
        &self,
        host: &Host,
        store: &Store,
        d: &Declaration,
        image: &StoredImage,
        action: Action,
        req: &ApplyRequest,
    ) -> anyhow::Result<Vec<String>> {
        let sets: Vec<String> = d.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let unit = deploy::unit_name(&d.name);
        let image_name = image.name.to_string();
        let warnings = match action {
            Action::Install => {
                deploy::install(
                    host,
                    store,
                    &deploy::InstallOptions {
                        name: &d.name,
                        image: &image_name,
                        set: &sets,
                        policy: Policy::default(),
                    },
                )?
                .warnings
            }
            Action::Update => {
                deploy::update(
                    host,
                    store,
                    &deploy::UpdateOptions {
                        name: &d.name,
                        set: &sets,
                        policy: Policy::default(),
                        rebase: Some(&image_name),
                        no_rollback: false,
                        timeout: req.timeout,
                    },
                )?
                .messages
            }
            Action::Unchanged | Action::Uninstall => Vec::new(),
        };
        let drop_in = host.order_drop_in(&d.name);
        let order_changed = if d.after.is_empty() {
            let existed = drop_in.exists();
            fsops::remove_any(&drop_in)?;
            existed
        } else {
            let text = order_text(d);
            let changed = std::fs::read_to_string(&drop_in).ok().as_deref() != Some(&text);
            if changed {
                std::fs::create_dir_all(drop_in.parent().expect("a drop-in has a directory"))?;
                fsops::write_atomic(&drop_in, text.as_bytes(), 0o644)?;
            }
            changed
        };
        if order_changed {
            host.systemd.reload()?;
        }
        let has_unit = host.unit_path(&d.name).exists();
        if has_unit {
            match d.state {
                Wanted::Running => {
                    host.systemd.enable(&unit)?;
                    if host.systemd.active_state(&unit)?.as_deref() != Some("active") {
                        if let Some(job) = host.systemd.start(&unit, req.timeout)? {
                            if job != crate::systemd::JobResult::Done {
                                anyhow::bail!("{unit} did not start (start job {job})");
                            }
                        }
                    }
                }
                Wanted::Stopped => {
                    host.systemd.disable(&unit)?;
                    if host.systemd.active_state(&unit)?.as_deref() == Some("active") {
                        host.stop_container(&d.name)?;
                    }
                }
            }
        }
        let record = host.applied_record(&d.name);
        std::fs::create_dir_all(record.parent().expect("a record has a directory"))?;
        fsops::write_atomic(&record, &serde_json::to_vec_pretty(&Record::of(d))?, 0o600)?;
        Ok(warnings)
    }

    fn apply_uninstall(&self, host: &Host, name: &str, installed: bool) -> anyhow::Result<()> {
        if installed {
            deploy::uninstall(host, name)?;
        }
        let drop_in = host.order_drop_in(name);
        if drop_in.exists() {
            fsops::remove_any(&drop_in)?;
            let _ = std::fs::remove_dir(drop_in.parent().expect("a drop-in has a directory"));
            host.systemd.reload()?;
        }
        fsops::remove_any(&host.applied_failure(name))?;
        fsops::remove_any(&host.applied_record(name))?;
        Ok(())
    }
}

/// Where a dry run would take an image that is not in the store from.
fn where_from(d: &Declaration, offline: bool) -> String {
    match (&d.seed, offline) {
        (Some(seed), _) => format!("image from the seed {seed}"),
        (None, false) => format!("image pulled from {}", d.image),
        (None, true) => "image missing: not in the store, no seed, --offline".into(),
    }
}
