//! What the deployments hold, for the store's life cycle: the images their
//! current and rollback slots use (never deleted or pruned without
//! `--force`), and the slot directories no container owns any more (left
//! by a crash or by hand), which `socle images prune` removes.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;

use super::layout::{self, Entry};
use super::Host;

/// A deployment an installed container can run: its current slot, or the
/// other one (the rollback target) when it holds a deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotUse {
    pub container: String,
    pub slot: u32,
    /// The slot the pointer designates; otherwise the rollback slot.
    pub current: bool,
    pub image: String,
    pub image_id: String,
    /// The store commit of the image it was deployed from.
    pub store_commit: String,
}

impl SlotUse {
    /// `container web (slot 1, rollback)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "container {} ({} slot {})",
            self.container,
            if self.current { "current" } else { "rollback" },
            self.slot
        )
    }
}

impl Host {
    fn transition_pending(&self, name: &str) -> bool {
        self.transition_path(name).exists()
    }

    /// The current and rollback deployments of every installed container.
    pub fn deployments(&self) -> anyhow::Result<Vec<SlotUse>> {
        let mut out = Vec::new();
        for name in self.installed()? {
            let Some(current) = self.current_slot(&name) else {
                continue;
            };
            for slot in [current, 1 - current.min(1)] {
                if slot != current && !self.slot_dir(&name, slot).exists() {
                    continue;
                }
                let info = match self.read_info(&name, slot) {
                    Ok(i) => i,
                    // A rollback slot without a readable info can't be
                    // rolled back to; a current one is reported.
                    Err(_) if slot != current => continue,
                    Err(e) => return Err(e),
                };
                out.push(SlotUse {
                    container: name.clone(),
                    slot,
                    current: slot == current,
                    image: info.image,
                    image_id: info.image_id,
                    store_commit: info.store_commit,
                });
            }
        }
        Ok(out)
    }

    /// Slot directories (`NAME.0`, `NAME.1`) that are neither the current
    /// nor the rollback slot of an installed container, and staging
    /// directories (`.NAME.N.staging`) left by a crash. A container with an
    /// unfinished switch (`.NAME.transition`) is left alone: `socle update`
    /// and `socle rollback` recover it first. Call with the state lock held.
    pub fn orphan_slots(&self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self.containers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let installed = self.installed()?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue; // pointers, journals, the lock
            }
            let file_name = entry.file_name().to_string_lossy().to_string();
            let (name, slot, staging) = match layout::parse(&file_name) {
                Some(Entry::Staging { name, slot }) => (name, slot, true),
                Some(Entry::Slot { name, slot }) => (name, slot, false),
                _ => continue,
            };
            if slot > 1 || name.is_empty() || self.transition_pending(name) {
                continue;
            }
            let orphan = if staging {
                // Staging directories only live while socle runs, under the lock.
                entry.path() == self.staging_dir(name, slot)
            } else {
                !installed.iter().any(|n| n == name)
            };
            if orphan {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }
}
