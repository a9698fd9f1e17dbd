//! `status`: the node on one screen. Every container, declared or
//! installed, with its current and rollback deployments, its state, the
//! last operation and how it ended, and how it drifts from its declaration.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::history::{self, LastOperation};
use super::Node;
use crate::declaration::{self, Declaration};
use crate::deploy;

/// One deployment of a container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    pub slot: u32,
    pub image: String,
    pub image_id: String,
}

/// A row of `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerReport {
    pub name: String,
    /// The declaration file, when there is one.
    pub declared_in: Option<PathBuf>,
    /// Installed by `apply` (it may update and remove it).
    pub applied: bool,
    pub current: Option<Deployed>,
    pub rollback: Option<Deployed>,
    /// running, inactive, failed, no service, unknown; `not installed`.
    pub state: String,
    pub last: Option<LastOperation>,
    /// How the node differs from the declaration.
    pub drift: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub containers: Vec<ContainerReport>,
    /// Declarations that could not be read or checked.
    pub problems: Vec<declaration::Problem>,
}

impl StatusReport {
    pub fn drifted(&self) -> bool {
        !self.problems.is_empty() || self.containers.iter().any(|c| !c.drift.is_empty())
    }
}

impl Node {
    /// The node's containers, declared or not: see the module documentation.
    pub fn status(&self, dirs: &[PathBuf]) -> anyhow::Result<StatusReport> {
        let host = self.host()?;
        let declared = declaration::read(dirs);
        let listed = deploy::list(&host)?;
        let deployments = host.deployments()?;
        let applied: BTreeSet<String> = host.applied_names().into_iter().collect();
        let mut names: BTreeSet<String> = listed.iter().map(|c| c.name.clone()).collect();
        names.extend(declared.containers.iter().map(|d| d.name.clone()));
        names.extend(applied.iter().cloned());
        let mut containers = Vec::new();
        for name in names {
            let declaration = declared.containers.iter().find(|d| d.name == name);
            let listing = listed.iter().find(|c| c.name == name);
            let slot = |current: bool| {
                deployments
                    .iter()
                    .find(|d| d.container == name && d.current == current)
                    .map(|d| Deployed {
                        slot: d.slot,
                        image: d.image.clone(),
                        image_id: d.image_id.clone(),
                    })
            };
            let mut row = ContainerReport {
                name: name.clone(),
                declared_in: declaration.map(|d| d.file.clone()),
                applied: applied.contains(&name),
                current: slot(true),
                rollback: slot(false),
                state: listing.map_or("not installed".into(), |c| c.state.to_string()),
                last: history::last(&host, &name),
                drift: Vec::new(),
            };
            row.drift = match declared.problems.iter().find(|p| p.name == name) {
                Some(p) => vec![format!("its declaration is left out: {p}")],
                None => drift(&host, &row, declaration),
            };
            containers.push(row);
        }
        Ok(StatusReport {
            containers,
            problems: declared.problems,
        })
    }
}

fn drift(host: &deploy::Host, row: &ContainerReport, d: Option<&Declaration>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(d) = d else {
        if row.applied {
            out.push(
                "installed by apply but no longer declared: `socle apply` uninstalls it".into(),
            );
        }
        return out;
    };
    let Some(current) = &row.current else {
        out.push(format!(
            "declared in {} but not installed: `socle apply` installs it",
            d.file.display()
        ));
        return out;
    };
    if !row.applied {
        out.push(format!(
            "declared in {}, but installed by hand: apply leaves it alone",
            d.file.display()
        ));
    }
    if let Ok(name) = super::apply::store_name(&d.image) {
        let declared = name.to_string();
        if declared != current.image {
            out.push(format!(
                "image: declared {declared}, deployed {}",
                current.image
            ));
        }
    }
    if let Ok(info) = host.read_info(&row.name, current.slot) {
        for (k, v) in &d.values {
            match info.values.get(k) {
                Some(deployed) if deployed == v => {}
                Some(deployed) => {
                    out.push(format!("values.{k}: declared {v}, deployed {deployed}"))
                }
                None => out.push(format!("values.{k}: declared {v}, not deployed")),
            }
        }
    }
    let wants_running = d.state == declaration::Wanted::Running;
    if wants_running
        && row.state != "running"
        && row.state != "unknown"
        && row.state != "no service"
    {
        out.push(format!("state: declared running, is {}", row.state));
    }
    out
}
