//! Repair: a damaged image's objects are forgotten and its layers pulled
//! again from its recorded source. Shared by `images verify --repair` and
//! `fsck --repair`.

use anyhow::Context;

use super::{one_line, Node, PullSettings};
use crate::fsck::FsckReport;
use crate::pull::PullReport;
use crate::reference::ImageRef;
use crate::store::{Store, StoredImage, VerifyReport};

/// What a repair did.
#[derive(Debug)]
pub struct Repaired {
    pub source: String,
    /// The layers pulled again.
    pub layers: Vec<String>,
    pub pulled: PullReport,
    /// A verify of the image after the repair.
    pub after: VerifyReport,
}

impl Node {
    /// Forgets the damaged objects `report` found in `stored` and pulls its
    /// layers again from `source`.
    pub(super) fn repair_image(
        &self,
        store: &Store,
        stored: &StoredImage,
        source: &str,
        report: &VerifyReport,
        settings: &PullSettings,
    ) -> anyhow::Result<Repaired> {
        let parsed: ImageRef = source.parse()?;
        let layers = store.forget_damaged(report)?;
        let pulled = self
            .pull_into(store, &parsed, Some(stored.name.clone()), settings)
            .with_context(|| {
                format!(
                    "repairing {}: the damaged layers were removed but pulling them again failed; run `socle pull {parsed} --name {}` when it is reachable",
                    stored.name, stored.name
                )
            })?;
        let after = store.verify(&pulled.image)?;
        Ok(Repaired {
            source: source.to_string(),
            layers,
            pulled,
            after,
        })
    }

    /// Checks the store and the deployments; with `repair`, repairs them,
    /// pulling damaged images again from their sources.
    pub fn fsck(&self, repair: bool, settings: &PullSettings) -> anyhow::Result<FsckReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host()?;
        let mut report = crate::fsck::check(&host, &store, repair)?;
        if !repair {
            return Ok(report);
        }
        let damaged = std::mem::take(&mut report.damaged);
        for (image, verify) in &damaged {
            let name = image.name.to_string();
            let outcome = match image.source.as_deref() {
                None => Err(anyhow::anyhow!(
                    "no source is recorded: delete it (`socle images delete --force {name}`) and pull it again"
                )),
                Some(source) => self
                    .repair_image(&store, image, source, verify, settings)
                    .and_then(|r| match r.after.damaged.len() {
                        0 => Ok(()),
                        n => Err(anyhow::anyhow!(
                            "{n} objects still damaged after pulling again"
                        )),
                    }),
            };
            for f in report
                .findings
                .iter_mut()
                .filter(|f| f.kind == "image" && f.subject == name)
            {
                match &outcome {
                    Ok(()) => f.repaired = true,
                    Err(e) => f.fix = format!("{}; repair failed: {}", f.fix, one_line(e)),
                }
            }
        }
        Ok(report)
    }
}

impl FsckReport {
    /// The error a front ends with when problems are left.
    pub fn failure(&self, repair: bool) -> Option<String> {
        if self.clean() {
            return None;
        }
        let unrepaired = self.findings.iter().filter(|f| !f.repaired).count();
        Some(if repair {
            format!("{unrepaired} problems could not be repaired (see above)")
        } else {
            format!("{unrepaired} problems found; `socle fsck --repair` repairs them")
        })
    }
}
