//! The images of a node's store: pull, list, info, tag, delete (never one a
//! deployment uses, unless forced), prune and update.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;

use super::{held_by_deployments, one_line, Node, PullSettings};
use crate::deploy::{self, ImageDetails};
use crate::failpoint::failpoint;
use crate::pull::PullReport;
use crate::reference::{ImageName, ImageRef};
use crate::store::{short_id, DiskUsage, GcReport, Store, StoredImage};

/// A row of `images list`.
#[derive(Debug, serde::Serialize)]
pub struct ImageRow {
    pub name: String,
    pub repository: String,
    pub tag: String,
    pub id: String,
    pub created: Option<String>,
    pub size: u64,
    pub own_size: u64,
    pub shared_size: u64,
    pub layers: Vec<String>,
}

/// `images list`: every image with what it shares, and the store's layers.
#[derive(Debug)]
pub struct ImagesListReport {
    pub images: Vec<ImageRow>,
    pub usage: DiskUsage,
}

/// `images tag`.
#[derive(Debug)]
pub struct TagReport {
    pub image: StoredImage,
    pub tagged: StoredImage,
    /// The name already named this image.
    pub unchanged: bool,
    /// The image the name named before, if another.
    pub replaced: Option<StoredImage>,
}

/// `images delete`.
#[derive(Debug)]
pub struct DeleteReport {
    pub deleted: Vec<StoredImage>,
    /// (image name, deployment) of a forced delete of an image in use.
    pub still_used_by: Vec<(String, deploy::SlotUse)>,
    pub gc: GcReport,
}

/// `images prune`.
#[derive(Debug)]
pub struct PruneReport {
    pub gc: GcReport,
    pub slots_removed: Vec<PathBuf>,
}

/// A row of `images update`.
#[derive(Debug, serde::Serialize)]
pub struct ImagesUpdateRow {
    pub name: String,
    pub source: Option<String>,
    pub id_before: String,
    pub id_after: String,
    pub status: String,
}

#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct ImagesUpdateReport {
    pub rows: Vec<ImagesUpdateRow>,
    #[serde(skip)]
    pub failed: usize,
}

impl ImagesUpdateReport {
    pub fn updated(&self) -> bool {
        self.rows.iter().any(|r| r.status == "updated")
    }

    /// The error a front ends with when an image failed to update.
    pub fn failure(&self) -> Option<String> {
        (self.failed > 0).then(|| {
            format!(
                "{} of {} images failed to update",
                self.failed,
                self.rows.len()
            )
        })
    }
}

/// `images verify [--repair]`.
#[derive(Debug)]
pub struct VerifyOutcome {
    pub image: StoredImage,
    pub report: crate::store::VerifyReport,
    /// Deployments of the image (they share its files).
    pub users: Vec<String>,
    pub repair: Option<super::repair::Repaired>,
}

impl VerifyOutcome {
    /// The error a front ends with: damage not repaired, or still there.
    pub fn failure(&self) -> Option<String> {
        let image = &self.image;
        match &self.repair {
            _ if self.report.damaged.is_empty() => None,
            None => {
                let in_use = if self.users.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} use it and share the changed files (hardlinks): deploy them again after the repair",
                        self.users.join(", ")
                    )
                };
                Some(format!(
                    "{}: {} changed in the store{in_use}; repair with `socle images verify --repair {}` (pulls the damaged layers again from {})",
                    image.name,
                    super::plural(self.report.damaged.len(), "object", "objects"),
                    image.name,
                    image.source.as_deref().unwrap_or("its source: none is recorded, so `socle pull SOURCE --name NAME` after the repair")
                ))
            }
            Some(r) if !r.after.damaged.is_empty() => {
                Some(format!("{}: still damaged after the repair", image.name))
            }
            Some(_) => None,
        }
    }
}

impl Node {
    /// Pulls an image from a registry, or imports a local one, into the store.
    pub fn pull(
        &self,
        source: &ImageRef,
        name: Option<ImageName>,
        settings: &PullSettings,
    ) -> anyhow::Result<PullReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        self.pull_into(&store, source, name, settings)
    }

    /// An image's labels and variables.
    pub fn image_info(&self, image: &str) -> anyhow::Result<ImageDetails> {
        let store = self.store()?;
        let stored = store.image(image)?;
        deploy::details_of(&self.host_without_systemd(), &store, &stored)
    }

    /// The images in the store, with what their layers share.
    pub fn images_list(&self) -> anyhow::Result<ImagesListReport> {
        let store = self.store()?;
        let usage = store.disk_usage(&held_by_deployments(&self.host_without_systemd())?)?;
        let images = usage
            .images
            .iter()
            .map(|u| ImageRow {
                name: u.image.name.to_string(),
                repository: u.image.name.repository.clone(),
                tag: u.image.name.tag.clone(),
                id: u.image.id.clone(),
                created: u.image.created.clone(),
                size: u.size,
                own_size: u.own_size(),
                shared_size: u.shared_size,
                layers: u.image.layers.clone(),
            })
            .collect();
        Ok(ImagesListReport { images, usage })
    }

    /// Gives an image another name; a name that named another image now
    /// names this one.
    pub fn images_tag(&self, src: &str, dst: &str) -> anyhow::Result<TagReport> {
        let dst_name = ImageName::parse(dst).with_context(|| {
            format!("invalid new name {dst:?}: give NAME[:TAG], such as hello:stable")
        })?;
        let _lock = self.lock()?;
        let store = self.store()?;
        let image = store.image(src)?;
        let before = store.image_by_name(&dst_name)?;
        let unchanged = before.as_ref().is_some_and(|b| b.id == image.id);
        let (tagged, replaced) = store.tag(&image, &dst_name)?;
        Ok(TagReport {
            image,
            tagged,
            unchanged,
            replaced,
        })
    }

    /// Deletes image names and the layers nothing uses any more. An image a
    /// deployment uses is refused unless `force`.
    pub fn images_delete(&self, args: &[String], force: bool) -> anyhow::Result<DeleteReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host_without_systemd();
        let mut doomed: Vec<StoredImage> = Vec::new();
        for arg in args {
            for image in names_to_delete(&store, arg, force)? {
                if !doomed.iter().any(|d| d.name == image.name) {
                    doomed.push(image);
                }
            }
        }
        let doomed_names: Vec<String> = doomed.iter().map(|d| d.name.to_string()).collect();
        // Ids still named after the delete stay usable by deployments.
        let remaining_ids: BTreeSet<String> = store
            .images()?
            .into_iter()
            .filter(|i| !doomed_names.contains(&i.name.to_string()))
            .map(|i| i.id)
            .collect();
        let users: Vec<(String, deploy::SlotUse)> = host
            .deployments()?
            .into_iter()
            .filter_map(|d| {
                let by_name = doomed.iter().find(|i| i.name.to_string() == d.image);
                let by_id = doomed
                    .iter()
                    .find(|i| i.id == d.image_id && !remaining_ids.contains(&i.id));
                by_name.or(by_id).map(|i| (i.name.to_string(), d))
            })
            .collect();
        if !users.is_empty() && !force {
            let (image, d) = &users[0];
            let others = if users.len() > 1 {
                format!(" (and {} more deployments)", users.len() - 1)
            } else {
                String::new()
            };
            anyhow::bail!(
                "{image} is used by {}{others}: uninstall {} or update it to another image first, or pass --force to delete the name anyway (the container keeps its files, and the store keeps the image's layers while it uses them); nothing was deleted",
                d.describe(),
                d.container
            );
        }
        for image in &doomed {
            store.remove_name(&image.name)?;
        }
        let their_layers: Vec<String> = doomed.iter().flat_map(|i| i.layers.clone()).collect();
        let gc = store.collect_garbage(&held_by_deployments(&host)?, Some(&their_layers))?;
        Ok(DeleteReport {
            deleted: doomed,
            still_used_by: users,
            gc,
        })
    }

    /// Removes the layers and objects nothing uses and the slot directories
    /// no installed container owns; never what a current or rollback
    /// deployment, or an interrupted update, still needs.
    pub fn images_prune(&self) -> anyhow::Result<PruneReport> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host_without_systemd();
        let mut slots_removed = Vec::new();
        for dir in host.orphan_slots()? {
            deploy::fsops::remove_any(&dir)
                .with_context(|| format!("removing {}", dir.display()))?;
            slots_removed.push(dir);
        }
        if !slots_removed.is_empty() {
            deploy::fsops::sync_dir(&host.containers_dir())?;
        }
        failpoint("prune:after-slots");
        let gc = store.collect_garbage(&held_by_deployments(&host)?, None)?;
        Ok(PruneReport { gc, slots_removed })
    }

    /// Checks every object of an image; with `repair`, forgets the damaged
    /// ones and pulls their layers again from the image's recorded source.
    pub fn images_verify(
        &self,
        image: &str,
        repair: bool,
        settings: &PullSettings,
    ) -> anyhow::Result<VerifyOutcome> {
        let _lock = self.lock()?;
        let store = self.store()?;
        let host = self.host_without_systemd();
        let stored = store.image(image)?;
        let report = store.verify(&stored)?;
        let users: Vec<String> = host
            .deployments()?
            .into_iter()
            .filter(|d| d.image_id == stored.id)
            .map(|d| d.describe())
            .collect();
        let mut outcome = VerifyOutcome {
            image: stored,
            report,
            users,
            repair: None,
        };
        if outcome.report.damaged.is_empty() || !repair {
            return Ok(outcome);
        }
        let Some(source) = outcome.image.source.clone() else {
            anyhow::bail!(
                "{}: {} changed, and the image records no source to pull it again from; delete it (`socle images delete --force {}`) and pull it again",
                outcome.image.name,
                super::plural(outcome.report.damaged.len(), "object", "objects"),
                outcome.image.name
            );
        };
        outcome.repair =
            Some(self.repair_image(&store, &outcome.image, &source, &outcome.report, settings)?);
        Ok(outcome)
    }

    /// Pulls images again from the source each was pulled from. An image
    /// that fails is reported and the others go on.
    pub fn images_update(
        &self,
        names: &[String],
        all: bool,
        settings: &PullSettings,
    ) -> anyhow::Result<ImagesUpdateReport> {
        // Parse every name before changing anything.
        let wanted: Vec<ImageName> = names
            .iter()
            .map(|n| {
                ImageName::parse(n).with_context(|| {
                    format!(
                        "invalid image name {n:?}: give NAME[:TAG] as `socle images list` shows it"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let _lock = self.lock()?;
        let store = self.store()?;
        let images: Vec<StoredImage> = if all {
            store.images()?
        } else {
            let mut v = Vec::new();
            for n in &wanted {
                v.push(store.image_by_name(n)?.with_context(|| {
                    format!(
                        "no image {n} in the store (see `socle images list`); nothing was pulled"
                    )
                })?);
            }
            v
        };
        let mut report = ImagesUpdateReport {
            rows: Vec::new(),
            failed: 0,
        };
        for image in images {
            let mut row = ImagesUpdateRow {
                name: image.name.to_string(),
                source: image.source.clone(),
                id_before: image.id.clone(),
                id_after: String::new(),
                status: String::new(),
            };
            let outcome = (|| -> anyhow::Result<String> {
                let source = image.source.as_deref().with_context(|| {
                    format!(
                        "no recorded source; pull it with `socle pull SOURCE --name {}`",
                        image.name
                    )
                })?;
                let pulled =
                    self.pull_into(&store, &source.parse()?, Some(image.name.clone()), settings)?;
                Ok(pulled.image.id)
            })();
            match outcome {
                Ok(id) => {
                    row.status = if id == image.id {
                        "up to date"
                    } else {
                        "updated"
                    }
                    .into();
                    row.id_after = id;
                }
                Err(e) => {
                    report.failed += 1;
                    row.status = format!("failed: {}", one_line(&e));
                }
            }
            report.rows.push(row);
        }
        Ok(report)
    }
}

/// The images `arg` designates for `images delete`: an exact name, else
/// the names of the one image whose id starts with `arg`.
fn names_to_delete(store: &Store, arg: &str, force: bool) -> anyhow::Result<Vec<StoredImage>> {
    if let Ok(name) = ImageName::parse(arg) {
        if let Some(image) = store.image_by_name(&name)? {
            return Ok(vec![image]);
        }
    }
    let hex = arg.strip_prefix("sha256:").unwrap_or(arg);
    let matches = if hex.len() >= 4 {
        store.images_with_id_prefix(arg)?
    } else {
        Vec::new()
    };
    let mut by_id: BTreeMap<String, Vec<String>> = Default::default();
    for i in &matches {
        by_id
            .entry(i.id.clone())
            .or_default()
            .push(i.name.to_string());
    }
    match by_id.len() {
        0 => anyhow::bail!(
            "no image {arg:?} in the store: give a name (NAME[:TAG]) or at least 4 digits of an id (see `socle images list`)"
        ),
        1 => {}
        n => anyhow::bail!(
            "{arg:?} is ambiguous: it starts {n} image ids: {}; give more digits or a name; nothing was deleted",
            by_id
                .iter()
                .map(|(id, names)| format!("{} ({})", short_id(id), names.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    if matches.len() > 1 && !force {
        anyhow::bail!(
            "{arg:?} is image {} under {} names ({}); delete one name, or pass --force to delete them all; nothing was deleted",
            short_id(&matches[0].id),
            matches.len(),
            matches
                .iter()
                .map(|i| i.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(matches)
}
