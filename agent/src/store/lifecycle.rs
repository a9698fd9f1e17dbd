//! The store's life cycle: disk accounting, tag, delete, garbage
//! collection, verify and repair.
//!
//! Layers are shared between images (one ref per layer), so what an image
//! costs depends on what else is stored. Nothing here knows about
//! deployments: the caller says which image commits deployments still hold
//! ([`Held`]), and garbage collection keeps them and their layers, pinned by
//! a ref of their own (`socle/held/<commit>`) so that ostree's prune never
//! takes them even when no image name points at them any more (re-pulled
//! under the same name, or deleted with `--force`).

use std::collections::{BTreeMap, BTreeSet};

use super::{cancel, image_ref, is_layer_ref, Result, Store, StoredImage, REF_PREFIX};
use crate::reference::ImageName;

/// Refs that keep an image commit a deployment uses (and so its layers).
pub(super) const HELD_PREFIX: &str = "socle/held/";

/// An image as `images list` accounts for it.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub image: StoredImage,
    /// Unpacked size of all its layers.
    pub size: u64,
    /// The part of `size` in layers an image of another id also uses.
    pub shared_size: u64,
}

impl ImageUsage {
    /// What only this image (and other names of the same id) costs.
    pub fn own_size(&self) -> u64 {
        self.size - self.shared_size
    }
}

/// A layer of the store and who uses it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerUsage {
    pub digest: String,
    /// Unpacked size (the layer's tar contents).
    pub size: u64,
    /// Image names using it; deployments holding an image no name points
    /// at any more appear as what the caller called them (`container web`).
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    pub layers: Vec<LayerUsage>,
    /// Every layer counted once: what the store holds.
    pub store_size: u64,
    /// Image sizes added up, each image id once: what the images would take
    /// without sharing.
    pub images_size: u64,
}

/// An image commit a deployment uses: garbage collection keeps it.
#[derive(Debug, Clone)]
pub struct Held {
    pub commit: String,
    /// Who holds it, for messages (`container web (slot 1)`).
    pub by: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RemovedLayer {
    pub digest: String,
    pub size: u64,
}

/// What a garbage collection did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    /// Layer refs removed (no image and no deployment uses them).
    pub layers_removed: Vec<RemovedLayer>,
    /// Objects in the store before the prune.
    pub objects_total: u64,
    pub objects_removed: u64,
    /// Bytes ostree reports freed (object files deleted; a file a deployment
    /// still links to keeps its data until the deployment goes).
    pub bytes_freed: u64,
    /// Images no name points at that deployments keep in the store.
    pub held: Vec<String>,
    pub warnings: Vec<String>,
}

/// A file (or tree object) of an image whose store object does not match
/// its checksum.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damage {
    /// The layer digest (`sha256:…`).
    pub layer: String,
    /// Path inside the layer, without a leading `/` (empty: the layer root).
    pub path: String,
    /// The object's checksum (its name in the store).
    pub object: String,
    /// `content changed`, `missing from the store`, …
    pub problem: String,
    /// ostree's own words, for the curious.
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub image: String,
    pub id: String,
    pub layers: usize,
    /// File objects checked (each distinct object once).
    pub objects_checked: u64,
    pub damaged: Vec<Damage>,
}

fn digest_of_layer_ref(r: &str) -> String {
    format!("sha256:{}", r.strip_prefix(REF_PREFIX).unwrap_or(r))
}

impl Store {
    /// Refs under `prefix` (`ociimage/`), with their full names.
    fn refs_under(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let refs = self
            .repo
            .list_refs(Some(prefix.trim_end_matches('/')), cancel())
            .map_err(self.repo_err("list refs"))?;
        let mut out: Vec<(String, String)> = refs
            .into_iter()
            .map(|(r, c)| {
                let full = if r.starts_with(prefix) {
                    r
                } else {
                    format!("{prefix}{r}")
                };
                (full, c)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Digests of every layer in the store, whether an image uses it or not.
    pub fn layer_digests(&self) -> Result<Vec<String>> {
        Ok(self
            .refs_under(REF_PREFIX)?
            .into_iter()
            .filter(|(r, _)| is_layer_ref(r))
            .map(|(r, _)| digest_of_layer_ref(&r))
            .collect())
    }

    /// Sizes of every image and layer, with what is shared. Layers of an
    /// image only a deployment still holds list the holder as a user.
    pub fn disk_usage(&self, held: &[Held]) -> Result<DiskUsage> {
        let images = self.images()?;
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for d in self.layer_digests()? {
            let size = self.layer(&d)?.unpacked_size;
            sizes.insert(d, size);
        }
        // Layer -> names using it, and -> distinct image ids using it.
        let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for i in &images {
            for l in &i.layers {
                names.entry(l).or_default().push(i.name.to_string());
                ids.entry(l).or_default().insert(&i.id);
            }
        }
        let named: BTreeSet<&str> = images.iter().map(|i| i.commit.as_str()).collect();
        let held_images: Vec<(String, StoredImage)> = held
            .iter()
            .filter(|h| !named.contains(h.commit.as_str()))
            .filter_map(|h| Some((h.by.clone(), self.image_from_commit(&h.commit).ok()?)))
            .collect();
        for (by, image) in &held_images {
            for l in &image.layers {
                names.entry(l).or_default().push(by.clone());
            }
        }
        let size_of = |l: &str| sizes.get(l).copied().unwrap_or(0);
        let mut usage = Vec::new();
        let mut seen_ids = BTreeSet::new();
        let mut images_size = 0;
        for i in &images {
            // A layer listed twice in one image is stored once.
            let distinct: BTreeSet<&str> = i.layers.iter().map(String::as_str).collect();
            let size: u64 = distinct.iter().map(|l| size_of(l)).sum();
            let shared_size = distinct
                .iter()
                .filter(|l| ids.get(*l).is_some_and(|s| s.len() > 1))
                .map(|l| size_of(l))
                .sum();
            if seen_ids.insert(i.id.as_str()) {
                images_size += size;
            }
            usage.push(ImageUsage {
                image: i.clone(),
                size,
                shared_size,
            });
        }
        let layers = sizes
            .iter()
            .map(|(d, size)| LayerUsage {
                digest: d.clone(),
                size: *size,
                used_by: names.get(d.as_str()).cloned().unwrap_or_default(),
            })
            .collect();
        Ok(DiskUsage {
            store_size: sizes.values().sum(),
            images: usage,
            layers,
            images_size,
        })
    }

    /// Names `src` also `dst` (same manifest, config, layers and source).
    /// Returns the new image and the one `dst` named before, if another.
    pub fn tag(
        &self,
        src: &StoredImage,
        dst: &ImageName,
    ) -> Result<(StoredImage, Option<StoredImage>)> {
        let before = self.image_by_name(dst)?;
        if before.as_ref().is_some_and(|b| b.id == src.id) {
            return Ok((before.expect("checked"), None));
        }
        let new = self.commit_image(
            dst,
            &src.id,
            &src.manifest,
            &src.config,
            &src.layers,
            src.source.as_deref().unwrap_or(""),
        )?;
        Ok((new, before))
    }

    /// The image stored under exactly this name (no id prefix lookup).
    pub fn image_by_name(&self, name: &ImageName) -> Result<Option<StoredImage>> {
        match self
            .repo
            .resolve_rev(&image_ref(name), true)
            .map_err(self.repo_err("resolve image ref"))?
        {
            Some(commit) => Ok(Some(self.image_from_commit(&commit)?)),
            None => Ok(None),
        }
    }

    /// Every image whose id starts with `prefix` (hex digits, with or
    /// without `sha256:`); empty when `prefix` is not one.
    pub fn images_with_id_prefix(&self, prefix: &str) -> Result<Vec<StoredImage>> {
        let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let hex = hex.to_ascii_lowercase();
        Ok(self
            .images()?
            .into_iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(&hex))
            .collect())
    }

    /// Removes an image name. Its layers stay until [`Store::collect_garbage`].
    pub fn remove_name(&self, name: &ImageName) -> Result<()> {
        self.repo
            .set_ref_immediate(None, &image_ref(name), None, cancel())
            .map_err(self.repo_err("remove image ref"))?;
        Ok(())
    }

    /// Removes the layers no image and no held deployment uses (only those
    /// in `among`, when given: `delete` frees what the deleted images used
    /// and leaves, say, the layers of an interrupted pull to `prune`), then
    /// every object no ref reaches any more. Pins held image commits first,
    /// so a crash midway never loses what a deployment uses.
    pub fn collect_garbage(&self, held: &[Held], among: Option<&[String]>) -> Result<GcReport> {
        let mut report = GcReport::default();
        let images = self.images()?;
        let named_commits: BTreeSet<&str> = images.iter().map(|i| i.commit.as_str()).collect();
        let mut keep: BTreeSet<String> = images.iter().flat_map(|i| i.layers.clone()).collect();

        let mut pins: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in held {
            if named_commits.contains(h.commit.as_str()) {
                continue;
            }
            match self.image_from_commit(&h.commit) {
                Ok(image) => {
                    keep.extend(image.layers.iter().cloned());
                    pins.entry(h.commit.clone())
                        .or_default()
                        .push(format!("{} ({})", h.by, image.name));
                }
                Err(_) => report.warnings.push(format!(
                    "{} uses image commit {} which is no longer in the store; its deployment \
                     keeps its files (hardlinks), but its layers can't be told from unused ones",
                    h.by, h.commit
                )),
            }
        }
        for (commit, by) in &pins {
            self.repo
                .set_ref_immediate(
                    None,
                    &format!("{HELD_PREFIX}{commit}"),
                    Some(commit),
                    cancel(),
                )
                .map_err(self.repo_err("pin a held image"))?;
            report.held.extend(by.iter().cloned());
        }
        crate::failpoint::failpoint("gc:after-pins");
        for (r, commit) in self.refs_under(HELD_PREFIX)? {
            if !pins.contains_key(&commit) {
                self.repo
                    .set_ref_immediate(None, &r, None, cancel())
                    .map_err(self.repo_err("remove a stale pin"))?;
            }
        }

        for digest in self.layer_digests()? {
            if keep.contains(&digest) || among.is_some_and(|a| !a.contains(&digest)) {
                continue;
            }
            let size = self.layer(&digest).map(|l| l.unpacked_size).unwrap_or(0);
            self.repo
                .set_ref_immediate(None, &super::layer_ref(&digest), None, cancel())
                .map_err(self.repo_err("remove layer ref"))?;
            report.layers_removed.push(RemovedLayer { digest, size });
        }
        crate::failpoint::failpoint("gc:after-layer-refs");

        let (total, pruned, bytes) = self
            .repo
            .prune(ostree::RepoPruneFlags::REFS_ONLY, -1, cancel())
            .map_err(self.repo_err("prune"))?;
        report.objects_total = total.max(0) as u64;
        report.objects_removed = pruned.max(0) as u64;
        report.bytes_freed = bytes;
        crate::failpoint::failpoint("gc:after-prune");
        self.remove_empty_object_dirs();
        self.sync()?;
        Ok(report)
    }

    /// Re-checksums every object of every layer of `image` (commit, trees,
    /// directory metadata and files) and reports the ones that changed.
    pub fn verify(&self, image: &StoredImage) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            image: image.name.to_string(),
            id: image.id.clone(),
            layers: image.layers.len(),
            objects_checked: 0,
            damaged: Vec::new(),
        };
        // Objects already checked (a file may be in several layers or paths).
        let mut checked: BTreeMap<(String, String), Option<(String, String)>> = BTreeMap::new();
        for digest in &image.layers {
            let layer = match self.layer(digest) {
                Ok(l) => l,
                Err(e) => {
                    report.damaged.push(Damage {
                        layer: digest.clone(),
                        path: String::new(),
                        object: String::new(),
                        problem: "layer missing from the store".into(),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            let mut walk = Walk {
                store: self,
                layer: digest,
                checked: &mut checked,
                report: &mut report,
                only_new: false,
            };
            walk.commit(&layer.commit);
        }
        // The image's own commit and its merged tree. Its files and most of
        // its directories are the layers' own objects, checked above; what
        // only it holds (the directories upper layers change) is written
        // again when the image is committed again, so damage there counts
        // as the top layer's: pulling that layer again rebuilds it.
        if let Some(top) = image.layers.last() {
            let mut walk = Walk {
                store: self,
                layer: top,
                checked: &mut checked,
                report: &mut report,
                only_new: true,
            };
            walk.commit(&image.commit);
        }
        report.objects_checked = checked.len() as u64;
        Ok(report)
    }

    /// Removes the damaged objects a verify found and the refs of the layers
    /// holding them, so that pulling the image again writes them anew (the
    /// store skips objects it already has, damaged or not). Returns the
    /// layers to pull again.
    pub fn forget_damaged(&self, report: &VerifyReport) -> Result<Vec<String>> {
        let mut layers = BTreeSet::new();
        for d in &report.damaged {
            if !d.object.is_empty() {
                for t in [
                    ostree::ObjectType::File,
                    ostree::ObjectType::DirTree,
                    ostree::ObjectType::DirMeta,
                    ostree::ObjectType::Commit,
                ] {
                    if self
                        .repo
                        .has_object(t, &d.object, cancel())
                        .map_err(self.repo_err("look up object"))?
                    {
                        self.repo
                            .delete_object(t, &d.object, cancel())
                            .map_err(self.repo_err("delete damaged object"))?;
                    }
                }
            }
            layers.insert(d.layer.clone());
        }
        for l in &layers {
            self.repo
                .set_ref_immediate(None, &super::layer_ref(l), None, cancel())
                .map_err(self.repo_err("remove layer ref"))?;
        }
        self.sync()?;
        Ok(layers.into_iter().collect())
    }

    /// Where the store keeps an object (for messages and tests).
    pub fn object_path(&self, checksum: &str, kind: &str) -> std::path::PathBuf {
        self.path
            .join("objects")
            .join(&checksum[..2.min(checksum.len())])
            .join(format!("{}.{kind}", checksum.get(2..).unwrap_or("")))
    }
}

/// A walk over one layer's tree for [`Store::verify`].
struct Walk<'a> {
    store: &'a Store,
    layer: &'a str,
    checked: &'a mut BTreeMap<(String, String), Option<(String, String)>>,
    report: &'a mut VerifyReport,
    /// Skip objects an earlier walk checked (and what is below them), not
    /// reporting their damage a second time.
    only_new: bool,
}

impl Walk<'_> {
    /// Checks a commit object and everything its tree reaches.
    fn commit(&mut self, commit: &str) {
        let root = self.object(ostree::ObjectType::Commit, commit, "", |v| {
            (
                ostree::checksum_from_bytes_v(&v.child_value(6)).to_string(),
                ostree::checksum_from_bytes_v(&v.child_value(7)).to_string(),
            )
        });
        if let Some((tree, meta)) = root {
            self.tree("", &tree, &meta);
        }
    }

    /// Checks one object (once per verify) and records damage at `path`.
    /// For metadata objects that are intact, returns `read(variant)`.
    fn object<T>(
        &mut self,
        kind: ostree::ObjectType,
        checksum: &str,
        path: &str,
        read: impl FnOnce(&ostree::glib::Variant) -> T,
    ) -> Option<T> {
        let repo = &self.store.repo;
        let key = (format!("{kind:?}"), checksum.to_string());
        if self.only_new && self.checked.contains_key(&key) {
            return None;
        }
        let outcome = self.checked.entry(key).or_insert_with(|| {
            match repo.has_object(kind, checksum, cancel()) {
                Ok(false) => Some(("missing from the store".into(), String::new())),
                Err(e) => Some(("unreadable".into(), e.to_string())),
                Ok(true) => match repo.fsck_object(kind, checksum, cancel()) {
                    Ok(()) => None,
                    Err(e) => Some((
                        if kind == ostree::ObjectType::File {
                            "content changed".into()
                        } else {
                            "tree metadata changed".into()
                        },
                        e.to_string(),
                    )),
                },
            }
        });
        if let Some((problem, detail)) = outcome.clone() {
            self.report.damaged.push(Damage {
                layer: self.layer.to_string(),
                path: path.to_string(),
                object: checksum.to_string(),
                problem,
                detail,
            });
            return None;
        }
        if kind == ostree::ObjectType::File {
            return None;
        }
        let v = repo.load_variant(kind, checksum).ok()?;
        Some(read(&v))
    }

    fn tree(&mut self, path: &str, tree: &str, meta: &str) {
        let join = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}/{name}")
            }
        };
        self.object(ostree::ObjectType::DirMeta, meta, path, |_| ());
        let Some((files, dirs)) = self.object(ostree::ObjectType::DirTree, tree, path, |v| {
            let files: Vec<(String, String)> = v
                .child_value(0)
                .iter()
                .map(|f| {
                    (
                        f.child_value(0).str().unwrap_or_default().to_string(),
                        ostree::checksum_from_bytes_v(&f.child_value(1)).to_string(),
                    )
                })
                .collect();
            let dirs: Vec<(String, String, String)> = v
                .child_value(1)
                .iter()
                .map(|d| {
                    (
                        d.child_value(0).str().unwrap_or_default().to_string(),
                        ostree::checksum_from_bytes_v(&d.child_value(1)).to_string(),
                        ostree::checksum_from_bytes_v(&d.child_value(2)).to_string(),
                    )
                })
                .collect();
            (files, dirs)
        }) else {
            return;
        };
        for (name, checksum) in files {
            self.object(ostree::ObjectType::File, &checksum, &join(&name), |_| ());
        }
        for (name, tree, meta) in dirs {
            self.tree(&join(&name), &tree, &meta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Compression;
    use ostree::prelude::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        crate::store::tests::tar_with(entries, None)
    }

    fn import(store: &Store, tar: &[u8]) -> String {
        let d = crate::oci::sha256_digest(tar);
        store.import_layer(&d, &d, Compression::None, tar).unwrap();
        d
    }

    fn image(store: &Store, name: &str, id: &str, layers: &[String]) -> StoredImage {
        store
            .commit_image(
                &ImageName::parse(name).unwrap(),
                id,
                b"{}",
                b"{}",
                layers,
                "test",
            )
            .unwrap()
    }

    #[test]
    fn shared_layers_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let base = import(&store, &tar_of(&[("base", &[0u8; 3000])]));
        let a = import(&store, &tar_of(&[("a", b"a")]));
        let b = import(&store, &tar_of(&[("b", b"b")]));
        image(&store, "x:1", "sha256:aa", &[base.clone(), a.clone()]);
        image(&store, "x:2", "sha256:bb", &[base.clone(), b.clone()]);
        image(&store, "x:alias", "sha256:bb", &[base.clone(), b.clone()]);
        let u = store.disk_usage(&[]).unwrap();
        let size = |d: &str| store.layer(d).unwrap().unpacked_size;
        let x1 = u.images.iter().find(|i| i.image.name.tag == "1").unwrap();
        assert_eq!(x1.size, size(&base) + size(&a));
        assert_eq!(x1.shared_size, size(&base));
        assert_eq!(x1.own_size(), size(&a));
        assert_eq!(u.store_size, size(&base) + size(&a) + size(&b));
        // Two names of one id count once.
        assert_eq!(u.images_size, 2 * size(&base) + size(&a) + size(&b));
        let l = u.layers.iter().find(|l| l.digest == base).unwrap();
        assert_eq!(l.used_by, ["x:1", "x:2", "x:alias"]);
    }

    #[test]
    fn garbage_collection_keeps_named_and_held_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let base = import(&store, &tar_of(&[("base", b"base")]));
        let a = import(&store, &tar_of(&[("a", &[1u8; 5000])]));
        let b = import(&store, &tar_of(&[("b", &[2u8; 5000])]));
        let stray = import(&store, &tar_of(&[("stray", &[3u8; 5000])]));
        let x1 = image(&store, "x:1", "sha256:aa", &[base.clone(), a.clone()]);
        image(&store, "x:2", "sha256:bb", &[base.clone(), b.clone()]);
        // x:1 now names another image; a deployment still uses the old one.
        image(&store, "x:1", "sha256:bb", &[base.clone(), b.clone()]);
        let held = [Held {
            commit: x1.commit.clone(),
            by: "container web".into(),
        }];
        // Limited to some layers, it leaves the others alone.
        let r = store
            .collect_garbage(&held, Some(std::slice::from_ref(&base)))
            .unwrap();
        assert!(r.layers_removed.is_empty(), "{r:?}");
        assert!(store.has_layer(&stray).unwrap());
        let r = store.collect_garbage(&held, None).unwrap();
        let removed: Vec<_> = r.layers_removed.iter().map(|l| &l.digest).collect();
        assert_eq!(removed, [&stray]);
        assert!(r.bytes_freed > 0, "{r:?}");
        assert!(store.has_layer(&a).unwrap());
        assert_eq!(r.held, ["container web (x:1)"]);
        // Once nothing holds it, its own layer goes.
        let r = store.collect_garbage(&[], None).unwrap();
        let removed: Vec<_> = r.layers_removed.iter().map(|l| &l.digest).collect();
        assert_eq!(removed, [&a]);
        assert!(store.has_layer(&base).unwrap() && store.has_layer(&b).unwrap());
        assert!(store.refs_under(HELD_PREFIX).unwrap().is_empty());
    }

    #[test]
    fn verify_checks_the_directories_only_the_merged_tree_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let l1 = import(&store, &tar_of(&[("etc/a", b"a")]));
        let l2_tar = tar_of(&[("etc/b", b"b")]);
        let l2 = import(&store, &l2_tar);
        let layers = [l1.clone(), l2.clone()];
        let img = image(&store, "x:1", "sha256:aa", &layers);
        assert!(store.verify(&img).unwrap().damaged.is_empty());

        // `etc` holding both a and b exists in no layer, only in the image.
        let (root, _) = store.repo.read_commit(&img.commit, cancel()).unwrap();
        let etc = root.resolve_relative_path("etc");
        let etc = etc.downcast::<ostree::RepoFile>().unwrap();
        etc.ensure_resolved().unwrap();
        let tree = etc.tree_get_contents_checksum().unwrap().to_string();
        let obj = store.object_path(&tree, "dirtree");
        flip_first_byte(&obj);

        let bad = store.verify(&img).unwrap();
        assert_eq!(bad.damaged.len(), 1, "{bad:?}");
        assert_eq!(bad.damaged[0].path, "etc");
        assert_eq!(bad.damaged[0].layer, l2);
        // Forgetting it and storing the top layer and the image again, as a
        // repair does, writes it anew.
        assert_eq!(
            store.forget_damaged(&bad).unwrap(),
            std::slice::from_ref(&l2)
        );
        import(&store, &l2_tar);
        let img = image(&store, "x:1", "sha256:aa", &layers);
        assert!(store.verify(&img).unwrap().damaged.is_empty());
        let out = dir.path().join("co");
        store.checkout(&img, &out).unwrap();
        assert_eq!(std::fs::read(out.join("etc/a")).unwrap(), b"a");
        assert_eq!(std::fs::read(out.join("etc/b")).unwrap(), b"b");
    }

    /// Damages a store object in place: same size, inode and mode.
    fn flip_first_byte(obj: &std::path::Path) {
        let mut data = std::fs::read(obj).unwrap();
        data[0] ^= 0xff;
        let mode = std::fs::metadata(obj).unwrap().permissions();
        let mut writable = mode.clone();
        std::os::unix::fs::PermissionsExt::set_mode(&mut writable, 0o600);
        std::fs::set_permissions(obj, writable).unwrap();
        std::fs::write(obj, &data).unwrap();
        std::fs::set_permissions(obj, mode).unwrap();
    }

    #[test]
    fn verify_finds_a_changed_file_and_forget_lets_it_be_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let tar = tar_of(&[("etc/a", b"hello"), ("etc/b", b"world")]);
        let l = import(&store, &tar);
        let img = image(&store, "x:1", "sha256:aa", std::slice::from_ref(&l));
        let clean = store.verify(&img).unwrap();
        assert!(clean.damaged.is_empty(), "{clean:?}");
        assert!(clean.objects_checked >= 4, "{clean:?}");

        let commit = store.layer(&l).unwrap().commit;
        let (root, _) = store.repo.read_commit(&commit, cancel()).unwrap();
        let f = root.resolve_relative_path("etc/a");
        let f = f.downcast::<ostree::RepoFile>().unwrap();
        f.ensure_resolved().unwrap();
        let checksum = f.checksum().to_string();
        let obj = store.object_path(&checksum, "file");
        flip_first_byte(&obj);

        let bad = store.verify(&img).unwrap();
        assert_eq!(bad.damaged.len(), 1, "{bad:?}");
        assert_eq!(bad.damaged[0].path, "etc/a");
        assert_eq!(bad.damaged[0].layer, l);
        assert_eq!(bad.damaged[0].problem, "content changed");

        let layers = store.forget_damaged(&bad).unwrap();
        assert_eq!(layers, std::slice::from_ref(&l));
        assert!(!store.has_layer(&l).unwrap());
        import(&store, &tar);
        assert!(store.verify(&img).unwrap().damaged.is_empty());
    }
}
