//! The use cases of a node: one [`Node`] built from plain configuration,
//! one method per operation a front offers (pull, install, update,
//! rollback, uninstall, list, the image life cycle, fsck). Each takes typed
//! input and returns a typed report; nothing here prints. The policies
//! every front must share live here and nowhere else: the default container
//! name, the state lock, re-pull before update, in-use protection of images,
//! what prune may remove, and verify → repair → pull again.
//!
//! A front (the command line in `src/cli/`, and later the D-Bus daemon and
//! the `atomic` command line) translates its input into these calls and
//! prints or sends the reports.

mod apply;
mod containers;
mod history;
mod images;
mod repair;
mod status;

pub use apply::{Action, ApplyReport, ApplyRequest, Outcome, Step};
pub use containers::{
    InstallRequest, ListReport, UninstallRequest, UpdateAllReport, UpdateAllRow, UpdateRequest,
};
pub use history::LastOperation;
pub use images::{
    DeleteReport, ImageRow, ImagesListReport, ImagesUpdateReport, ImagesUpdateRow, PruneReport,
    TagReport, VerifyOutcome,
};
pub use status::{ContainerReport, Deployed, StatusReport};

// The types a front needs to read the reports, so it imports this module only.
pub use crate::builder::{Output as PackOutput, PackReport, PackSpec};
pub use crate::declaration::{Problem as DeclarationProblem, DEFAULT_DIRS as DECLARATION_DIRS};
pub use crate::deploy::{
    ContainerStatus, ImageDetails, InstallReport, Policy, State as ContainerState, UninstallReport,
    UpdateReport, UpdateStatus,
};
pub use crate::fsck::FsckReport;
pub use crate::limits::Limits;
pub use crate::lint::{Finding as LintFinding, Severity as LintSeverity};
pub use crate::progress::{Progress, Quiet};
pub use crate::pull::PullReport;
pub use crate::reference::{ImageName, ImageRef};
pub use crate::registry::{Credentials, Options as RegistryOptions};
pub use crate::store::{short_id, GcReport, VerifyReport};
pub use crate::systemd::SystemdMode;

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::deploy::Host;
use crate::store::{Held, Store};
use crate::systemd;

/// Where a node keeps and puts things, and whom it asks.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Holds the store (`repo/`) and the deployments (`containers/`).
    pub state_dir: PathBuf,
    /// Where unit files are written.
    pub unit_dir: PathBuf,
    /// Where tmpfiles.d snippets are written.
    pub tmpfiles_dir: PathBuf,
    /// Root under which hostfs files and tmpfiles paths land.
    pub host_root: PathBuf,
    pub systemd: SystemdMode,
    /// The OCI runtime the units run: a name looked up in `PATH`, or a path.
    pub runtime: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            state_dir: "/var/lib/socle".into(),
            unit_dir: "/etc/systemd/system".into(),
            tmpfiles_dir: "/etc/tmpfiles.d".into(),
            host_root: "/".into(),
            systemd: SystemdMode::System,
            runtime: "runc".into(),
        }
    }
}

/// How to reach registries, for every operation that may pull.
#[derive(Debug, Clone, Default)]
pub struct PullSettings {
    pub registry: RegistryOptions,
    /// Layers downloaded at once.
    pub jobs: usize,
    pub limits: Limits,
}

/// One node: its configuration and where progress and notes go.
pub struct Node {
    config: NodeConfig,
    progress: Box<dyn Progress>,
}

/// The state lock, held for as long as this lives.
#[must_use = "the lock is released when this is dropped"]
pub struct StateLock(#[allow(dead_code)] File);

impl Node {
    pub fn new(config: NodeConfig, progress: Box<dyn Progress>) -> Node {
        Node { config, progress }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// Takes the state directory's lock for an operation that changes the
    /// store or deployments, so two socle runs (an operator and cloud-init,
    /// say) never interleave. Waits, saying so, when another run holds it.
    pub fn lock(&self) -> anyhow::Result<StateLock> {
        use rustix::fs::{flock, FlockOperation};
        let state_dir = &self.config.state_dir;
        if let Some(old) = crate::permissions::private_dir(state_dir)? {
            self.progress.info(&format!(
                "{} had mode {old:04o}, which let other users reach the store; restricted it to 0700",
                state_dir.display()
            ));
        }
        let path = state_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            self.progress.status(&format!(
                "Waiting for another socle run to finish (lock: {})…",
                path.display()
            ));
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(StateLock(file))
    }

    /// The state lock if no other socle run holds it (a read-only operation
    /// uses it to recover what a crash left, and otherwise goes on).
    fn try_lock(&self) -> Option<StateLock> {
        use rustix::fs::{flock, FlockOperation};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.config.state_dir.join("lock"))
            .ok()?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
        Some(StateLock(file))
    }

    fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.config.state_dir.join("repo"))?)
    }

    /// The host, with the systemd the configuration names.
    fn host(&self) -> anyhow::Result<Host> {
        Ok(Host {
            systemd: systemd::connect(self.config.systemd)?,
            ..self.host_without_systemd()
        })
    }

    /// A host description for operations that need no systemd.
    fn host_without_systemd(&self) -> Host {
        Host::new(
            self.config.state_dir.clone(),
            self.config.unit_dir.clone(),
            self.config.tmpfiles_dir.clone(),
            self.config.host_root.clone(),
            runtime_path(&self.config.runtime),
            Box::new(systemd::NoSystemd),
        )
    }

    /// Pulls `source` into `store` with this node's progress.
    fn pull_into(
        &self,
        store: &Store,
        source: &ImageRef,
        name: Option<ImageName>,
        settings: &PullSettings,
    ) -> anyhow::Result<PullReport> {
        // A front finds the failure's kind with `downcast_ref::<PullError>()`.
        Ok(crate::pull::pull(
            store,
            source,
            &crate::pull::PullOptions {
                name,
                registry: settings.registry.clone(),
                jobs: settings.jobs.max(1),
                progress: self.progress(),
                limits: settings.limits,
            },
        )?)
    }
}

/// The runtime as units name it: a path, found in `PATH` when given a name.
fn runtime_path(runtime: &str) -> String {
    if runtime.contains('/') {
        return runtime.to_string();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(runtime))
                .find(|p| p.is_file())
        })
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_else(|| runtime.to_string())
}

/// The image commits the current and rollback deployments use: garbage
/// collection keeps them even when no name points at them any more.
fn held_by_deployments(host: &Host) -> anyhow::Result<Vec<Held>> {
    Ok(host
        .deployments()?
        .into_iter()
        .map(|d| Held {
            by: d.describe(),
            commit: d.store_commit,
        })
        .collect())
}

/// `n thing` or `n things`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// An error chain as one line: causes joined by ": ", each only once (a
/// cause's text is often already part of its parent's message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Checks an image definition's `exports/` as an install would render it.
pub fn lint(dir: &Path) -> anyhow::Result<Vec<LintFinding>> {
    crate::lint::lint(dir)
}

/// Writes directories as the layers of an OCI image, reproducibly.
pub fn pack(spec: &PackSpec, output: &str) -> anyhow::Result<PackReport> {
    let output = match output.parse::<ImageRef>() {
        Ok(ImageRef::OciArchive { path, reference }) => PackOutput::Archive {
            path,
            reference: reference.unwrap_or_else(|| "latest".into()),
        },
        Ok(ImageRef::OciDir { path, reference }) => PackOutput::Dir {
            path,
            reference: reference.unwrap_or_else(|| "latest".into()),
        },
        _ => anyhow::bail!("output {output:?}: expected oci-archive:FILE[:REF] or oci:DIR[:REF]"),
    };
    crate::builder::pack(spec, &output)
}
