//! The containers of a node: install, update (one or all, with re-pull or
//! rebase), rollback, uninstall and list.

use std::time::Duration;

use anyhow::Context;

use super::{one_line, Node, PullSettings};
use crate::deploy::{self, Host, InstallReport, Policy, UpdateReport};
use crate::reference::ImageRef;
use crate::store::Store;

/// `install`: an image of the store as a new system container.
#[derive(Debug, Clone, Default)]
pub struct InstallRequest {
    /// A stored image: NAME[:TAG] or the start of its id.
    pub image: String,
    /// The container's name; default: the image's repository name.
    pub name: Option<String>,
    /// `VAR=VALUE` template values.
    pub set: Vec<String>,
    pub policy: Policy,
}

/// `update`: one container into its other slot.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub name: String,
    pub set: Vec<String>,
    pub policy: Policy,
    /// Another image: a stored name, or a source (pulled first).
    pub rebase: Option<String>,
    /// Pull the image again from its recorded source first.
    pub pull: bool,
    pub no_rollback: bool,
    /// How long the new deployment may take to become healthy.
    pub timeout: Duration,
}

impl UpdateRequest {
    pub fn new(name: &str) -> UpdateRequest {
        UpdateRequest {
            name: name.to_string(),
            set: Vec::new(),
            policy: Policy::default(),
            rebase: None,
            pull: false,
            no_rollback: false,
            timeout: Duration::from_secs(90),
        }
    }
}

/// A row of `update --all`.
#[derive(Debug, serde::Serialize)]
pub struct UpdateAllRow {
    pub name: String,
    pub id_before: String,
    pub id_after: String,
    pub status: String,
}

#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct UpdateAllReport {
    pub rows: Vec<UpdateAllRow>,
    #[serde(skip)]
    pub failed: usize,
}

impl UpdateAllReport {
    /// The error a front ends with when a container failed to update.
    pub fn failure(&self) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "{} of {} containers failed to update",
                self.failed,
                self.rows.len()
            )
        })
    }
}

/// `uninstall`.
#[derive(Debug, Clone)]
pub struct UninstallRequest {
    pub name: String,
}

/// `list`: the containers, and what a crash had left that was finished first.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct ListReport {
    pub containers: Vec<deploy::ContainerStatus>,
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Node {
    /// Installs a stored image as a system container with an enabled unit.
    pub fn install(&self, req: &InstallRequest) -> anyhow::Result<InstallReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host()?;
        let stored = store.image(&req.image)?;
        let name = req.name.clone().unwrap_or_else(|| {
            stored
                .name
                .repository
                .rsplit('/')
                .next()
                .unwrap_or("container")
                .to_string()
        });
        let install = || {
            deploy::install(
                &host,
                &store,
                &deploy::InstallOptions {
                    name: &name,
                    image: &req.image,
                    set: &req.set,
                    policy: req.policy,
                },
            )
        };
        self.tracked(&name, "install", install, |r| {
            format!("installed {}", r.image)
        })
    }

    /// Deploys a container again into its other slot and switches to it,
    /// health-gated; a rebase onto a source pulls it first, `pull` pulls
    /// the current image again from where it came from.
    pub fn update(&self, req: &UpdateRequest, pull: &PullSettings) -> anyhow::Result<UpdateReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host()?;
        let rebase = match &req.rebase {
            Some(r) if ImageRef::looks_like_source(r) => Some(
                self.pull_into(&store, &r.parse()?, None, pull)?
                    .image
                    .name
                    .to_string(),
            ),
            Some(r) => Some(r.clone()),
            None => None,
        };
        if req.pull && rebase.is_none() {
            self.repull(&host, &store, &req.name, pull)?;
        }
        let update = || {
            deploy::update(
                &host,
                &store,
                &deploy::UpdateOptions {
                    name: &req.name,
                    set: &req.set,
                    policy: req.policy,
                    rebase: rebase.as_deref(),
                    no_rollback: req.no_rollback,
                    timeout: req.timeout,
                },
            )
        };
        self.tracked(&req.name, "update", update, switched)
    }

    /// Updates every container whose image has a newer id in the store
    /// (after pulling each again, with `pull`). A container that fails is
    /// reported and the others go on.
    pub fn update_all(
        &self,
        repull: Option<&PullSettings>,
        no_rollback: bool,
        timeout: Duration,
        policy: Policy,
    ) -> anyhow::Result<UpdateAllReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host()?;
        let mut report = UpdateAllReport {
            rows: Vec::new(),
            failed: 0,
        };
        for name in host.installed()? {
            let outcome = (|| {
                if let Some(settings) = repull {
                    self.repull(&host, &store, &name, settings)?;
                }
                // With no new values, update changes only what has a newer image id.
                let update = || {
                    deploy::update(
                        &host,
                        &store,
                        &deploy::UpdateOptions {
                            name: &name,
                            set: &[],
                            policy,
                            rebase: None,
                            no_rollback,
                            timeout,
                        },
                    )
                };
                self.tracked(&name, "update", update, switched)
            })();
            report.rows.push(match outcome {
                Ok(r) => UpdateAllRow {
                    name,
                    id_before: r.id_before,
                    id_after: r.id_after,
                    status: r.status.to_string(),
                },
                Err(e) => {
                    report.failed += 1;
                    UpdateAllRow {
                        name,
                        id_before: String::new(),
                        id_after: String::new(),
                        status: format!("failed: {}", one_line(&e)),
                    }
                }
            });
        }
        Ok(report)
    }

    /// Pulls a container's image again from the source it was pulled from.
    fn repull(
        &self,
        host: &Host,
        store: &Store,
        name: &str,
        settings: &PullSettings,
    ) -> anyhow::Result<()> {
        let slot = host
            .current_slot(name)
            .with_context(|| format!("no container {name:?} is installed"))?;
        let image = store.image(&host.read_info(name, slot)?.image)?;
        let source = image.source.as_deref().with_context(|| {
            format!(
                "{} records no source to pull from; use --rebase SOURCE",
                image.name
            )
        })?;
        self.pull_into(store, &source.parse()?, Some(image.name.clone()), settings)?;
        Ok(())
    }

    /// Switches a container back to its previous deployment.
    pub fn rollback(&self, name: &str) -> anyhow::Result<UpdateReport> {
        let _lock = self.lock()?;
        let host = self.host()?;
        self.tracked(name, "rollback", || deploy::rollback(&host, name), switched)
    }

    /// Stops and removes a system container (its data directories stay).
    pub fn uninstall(&self, req: &UninstallRequest) -> anyhow::Result<deploy::UninstallReport> {
        let _lock = self.lock()?;
        let host = self.host()?;
        let uninstall = || deploy::uninstall(&host, &req.name);
        self.tracked(&req.name, "uninstall", uninstall, |_| "uninstalled".into())
    }

    /// The installed containers: running ones, or all. Operations a crash
    /// interrupted are finished first, unless another socle run is busy
    /// (then it may be one in progress).
    pub fn list(&self, all: bool) -> anyhow::Result<ListReport> {
        let host = self.host()?;
        let mut notes = Vec::new();
        if let Some(_lock) = self.try_lock() {
            notes = deploy::recover_all(&host)?;
        }
        let containers = deploy::list(&host)?
            .into_iter()
            .filter(|r| all || matches!(r.state, deploy::State::Running | deploy::State::Unknown))
            .collect();
        Ok(ListReport { containers, notes })
    }
}

/// The last-operation message of an update or rollback.
fn switched(r: &UpdateReport) -> String {
    format!("{} ({})", r.status, r.image_after)
}
