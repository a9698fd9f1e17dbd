//! The content store: an ostree repository holding one commit per layer and
//! one per image.
//!
//! Layers are imported straight from their tar stream into ostree objects:
//! one decompression, the blob digest and the diff_id checked while the bytes
//! flow, nothing extracted to a temporary directory. OCI whiteouts are not
//! stored as files; they are recorded in the layer's commit metadata.
//!
//! An image's layers are composed as trees inside the store, never on disk:
//! [`Store::commit_image`] merges them (whiteouts, opaque directories, then
//! the upper layer's entries, with OCI semantics) into one ostree tree, the
//! root of the image's commit. A checkout writes that single tree into a
//! directory that does not exist yet, so no path of an image is ever opened
//! through a symlink another layer (or the host) put there.
//!
//! Refs follow atomic's layout so its users find their way: `ociimage/<hex>`
//! for a layer, `ociimage/<encoded name>` for an image.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ostree::gio;
use ostree::glib;
use ostree::prelude::*;
use sha2::{Digest, Sha256};

use crate::limits::{self, ImageBudget, Limits};
use crate::oci::{self, Compression};
use crate::reference::ImageName;

mod lifecycle;

pub use lifecycle::{
    Damage, DiskUsage, GcReport, Held, ImageUsage, LayerUsage, RemovedLayer, VerifyReport,
};

const REF_PREFIX: &str = "ociimage/";
const MD_DIGEST: &str = "socle.digest";
const MD_DIFF_ID: &str = "socle.diff-id";
const MD_WHITEOUTS: &str = "socle.whiteouts";
const MD_OPAQUE: &str = "socle.opaque-dirs";
/// Directories a layer's tar did not describe (created as parents of its
/// entries): they keep the metadata of the layer below.
const MD_IMPLICIT: &str = "socle.implicit-dirs";
/// Set on image commits whose root is the merged tree of their layers;
/// images stored before that have an empty root.
const MD_MERGED: &str = "socle.merged-tree";
const MD_UNPACKED: &str = "socle.unpacked-size";
const MD_NAME: &str = "socle.name";
const MD_SOURCE: &str = "socle.source";
const MD_MANIFEST: &str = "socle.manifest";
const MD_MANIFEST_DIGEST: &str = "socle.manifest-digest";
const MD_CONFIG: &str = "socle.config";
const MD_LAYERS: &str = "socle.layers";
/// atomic kept the manifest under this key; keep it so its tools can read ours.
const MD_ATOMIC_MANIFEST: &str = "docker.manifest";

/// Files up to this size are written in one call instead of streamed.
const INLINE_MAX: u64 = 64 * 1024;
/// The longest file name Linux file systems take (NAME_MAX).
const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Repo { path: PathBuf, message: String },
    #[error("layer {digest}: {message}")]
    Layer { digest: String, message: String },
    /// The layer describes something socle will not apply (a path leaving
    /// the root, a whiteout that names no file, …): the image is refused.
    #[error("layer {digest}: {message}")]
    Refused { digest: String, message: String },
    /// A limit the layer hit: refused like `Refused`, saying which limit.
    #[error("layer {digest}: {exceeded}{note}")]
    OverLimit {
        digest: String,
        exceeded: Box<limits::Exceeded>,
        /// Said after the limit's message, e.g. that nothing was downloaded.
        note: &'static str,
    },
    /// The file system of the store is full; the error as the failing
    /// operation worded it, kept whole.
    #[error(transparent)]
    NoSpace(Box<StoreError>),
    #[error(
        "layer {digest}: {what} digest mismatch: the data hashes to {actual} (nothing was stored)"
    )]
    DigestMismatch {
        digest: String,
        what: &'static str,
        actual: String,
    },
    #[error("no image {0:?} in the store (see `socle images list`)")]
    NoSuchImage(String),
    #[error("image {0:?} is ambiguous: it matches {1}")]
    Ambiguous(String, String),
    #[error("checkout of {image} into {dest}: {message}")]
    Checkout {
        image: String,
        dest: PathBuf,
        message: String,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// This error, marked `NoSpace` when its cause said ENOSPC, so callers
    /// can tell a full disk by type, not by wording.
    fn no_space_if(self, full: bool) -> StoreError {
        if full {
            StoreError::NoSpace(Box::new(self))
        } else {
            self
        }
    }
}

/// Whether ostree (GIO, or GLib's file errors) failed with ENOSPC.
pub(crate) fn glib_no_space(e: &glib::Error) -> bool {
    e.matches(gio::IOErrorEnum::NoSpace) || e.matches(glib::FileError::Nospc)
}

/// A layer as its source describes it.
#[derive(Debug, Clone, Copy)]
pub struct LayerSource<'a> {
    pub digest: &'a str,
    /// The unpacked tar's digest, from the image config.
    pub diff_id: &'a str,
    pub compression: Compression,
    /// The blob's size in its descriptor, when the source gives one.
    pub declared_size: Option<u64>,
}

/// A layer's record in the store.
#[derive(Debug, Clone)]
pub struct StoredLayer {
    pub digest: String,
    pub commit: String,
    pub whiteouts: Vec<String>,
    pub opaque_dirs: Vec<String>,
    /// Directories created only as parents of the layer's entries; `None`
    /// for layers stored before this was recorded.
    pub implicit_dirs: Option<Vec<String>>,
    pub unpacked_size: u64,
}

/// An image's record in the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredImage {
    pub name: ImageName,
    /// The manifest digest, `sha256:…`: the image id users see.
    pub id: String,
    pub commit: String,
    pub created: Option<String>,
    pub layers: Vec<String>,
    /// Where it was pulled from, for `socle update --pull`.
    pub source: Option<String>,
    #[serde(skip)]
    pub manifest: Vec<u8>,
    #[serde(skip)]
    pub config: Vec<u8>,
}

impl StoredImage {
    pub fn config(&self) -> Result<oci_spec::image::ImageConfiguration> {
        serde_json::from_slice(&self.config).map_err(|e| StoreError::Repo {
            path: PathBuf::new(),
            message: format!("image {}: stored config is not valid: {e}", self.name),
        })
    }
}

pub struct Store {
    repo: ostree::Repo,
    path: PathBuf,
}

/// Held while a transaction starts or ends (see `Store::begin_transaction`).
fn transaction_edge() -> std::sync::MutexGuard<'static, ()> {
    static EDGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    EDGE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cancel() -> Option<&'static gio::Cancellable> {
    None
}

/// The first 12 hex digits of a digest, as image ids are shown.
pub fn short_id(digest: &str) -> &str {
    let hex = oci::digest_hex(digest);
    &hex[..hex.len().min(12)]
}

/// atomic's ref encoding: `[A-Za-z0-9.-]` kept, every other byte as `_XX`.
pub fn encode_name(name: &ImageName) -> String {
    let mut out = String::new();
    for b in name.to_string().bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

pub fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn layer_ref(digest: &str) -> String {
    format!("{REF_PREFIX}{}", oci::digest_hex(digest))
}

fn image_ref(name: &ImageName) -> String {
    format!("{REF_PREFIX}{}", encode_name(name))
}

fn is_layer_ref(r: &str) -> bool {
    r.strip_prefix(REF_PREFIX).is_some_and(oci::is_sha256_hex)
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Reads to the end (tar padding, compression trailers) and returns the digest.
    fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((oci::digest_of(&self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl Store {
    /// Opens the repository at `path`, creating it when absent. Root gets a
    /// `bare` repo (ownership kept, as runc needs); others `bare-user`.
    pub fn open(path: &Path) -> Result<Store> {
        let err = |e: glib::Error| StoreError::Repo {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let path_str = path.to_str().ok_or_else(|| StoreError::Repo {
            path: path.to_path_buf(),
            message: "path is not UTF-8".into(),
        })?;
        let repo = if path.join("config").exists() {
            ostree::Repo::open_at(ostree::AT_FDCWD, path_str, cancel()).map_err(err)?
        } else {
            // Objects keep the image's modes; only root may reach them.
            crate::permissions::private_dir(path).map_err(|e| StoreError::Repo {
                path: path.to_path_buf(),
                message: format!("cannot create: {e}"),
            })?;
            let mode = if rustix::process::geteuid().is_root() {
                ostree::RepoMode::Bare
            } else {
                ostree::RepoMode::BareUser
            };
            ostree::Repo::create_at(ostree::AT_FDCWD, path_str, mode, None, cancel())
                .map_err(err)?
        };
        // One syncfs at the end of a pull is far cheaper than an fsync per
        // object; `sync()` below is the durability point.
        repo.set_disable_fsync(true);
        Ok(Store {
            repo,
            path: path.to_path_buf(),
        })
    }

    /// Starts a transaction. Layers import side by side, each with its own
    /// handle on the repo. libostree starts a transaction by looking for a
    /// staging directory to reuse in the repo's `tmp/`, and ends one by
    /// removing its own: one handle could pick the directory another is
    /// removing (`opendir(staging-…): No such file or directory`). Starts
    /// and ends are therefore serialised in the process (the state lock
    /// serialises processes); the writes between them stay parallel.
    fn begin_transaction(&self) -> Result<()> {
        let _edge = transaction_edge();
        self.repo
            .prepare_transaction(cancel())
            .map(|_| ())
            .map_err(self.repo_err("prepare transaction"))
    }

    fn commit_transaction(&self) -> Result<()> {
        let _edge = transaction_edge();
        self.repo
            .commit_transaction(cancel())
            .map(|_| ())
            .map_err(self.repo_err("commit transaction"))
    }

    fn abort_transaction(&self) {
        let _edge = transaction_edge();
        let _ = self.repo.abort_transaction(cancel());
    }

    fn repo_err(&self, what: &str) -> impl FnOnce(glib::Error) -> StoreError + '_ {
        let what = what.to_string();
        move |e| {
            StoreError::Repo {
                path: self.path.clone(),
                message: format!("{what}: {e}"),
            }
            .no_space_if(glib_no_space(&e))
        }
    }

    /// Flushes everything written so far to disk.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.path).map_err(|e| StoreError::Repo {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        rustix::fs::syncfs(&dir).map_err(|e| {
            StoreError::Repo {
                path: self.path.clone(),
                message: format!("syncfs: {e}"),
            }
            .no_space_if(e == rustix::io::Errno::NOSPC)
        })
    }

    pub fn has_layer(&self, digest: &str) -> Result<bool> {
        Ok(self
            .repo
            .resolve_rev(&layer_ref(digest), true)
            .map_err(self.repo_err("resolve layer ref"))?
            .is_some())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Streams a layer blob into the store, within the default limits. On
    /// any error (including a digest mismatch) the transaction is aborted
    /// and nothing becomes visible.
    pub fn import_layer(
        &self,
        digest: &str,
        diff_id: &str,
        compression: Compression,
        blob: impl Read,
    ) -> Result<StoredLayer> {
        let budget = ImageBudget::new(Limits::default(), 0);
        let layer = LayerSource {
            digest,
            diff_id,
            compression,
            declared_size: None,
        };
        self.import_layer_unpruned(&layer, blob, &budget)
            .inspect_err(|_| self.discard_unreferenced())
    }

    /// [`Store::import_layer`] without the clean-up on failure, for imports
    /// running side by side: a prune while another import streams would
    /// delete that import's objects. The caller runs
    /// [`Store::discard_unreferenced`] once every import has stopped.
    ///
    /// The blob is cut off past its declared size, and the import stops
    /// when the layer or the image passes `budget`'s limits.
    pub fn import_layer_unpruned(
        &self,
        layer: &LayerSource,
        blob: impl Read,
        budget: &ImageBudget,
    ) -> Result<StoredLayer> {
        self.begin_transaction()?;
        match self.import_layer_in_transaction(layer, blob, budget) {
            Ok(layer) => {
                // Killed here, the layer's objects and ref are in the
                // transaction's staging directory only: not a layer yet.
                crate::failpoint::failpoint("store:before-layer-commit");
                self.commit_transaction()?;
                Ok(layer)
            }
            Err(e) => {
                self.abort_transaction();
                Err(e)
            }
        }
    }

    /// Removes the refs of layers (their objects go with the next
    /// [`Store::discard_unreferenced`]).
    pub fn remove_layer_refs(&self, digests: &[String]) -> Result<()> {
        for d in digests {
            self.repo
                .set_ref_immediate(None, &layer_ref(d), None, cancel())
                .map_err(self.repo_err("remove layer ref"))?;
        }
        Ok(())
    }

    /// Objects land in the repo as they stream; drops the ones no ref
    /// reaches, so a failed pull leaves the store as it was.
    pub fn discard_unreferenced(&self) {
        let _ = self
            .repo
            .prune(ostree::RepoPruneFlags::REFS_ONLY, -1, cancel());
        self.remove_empty_object_dirs();
    }

    /// Removes fan-out directories (`objects/XX`) a failed import emptied,
    /// and the refs directory a removed last layer ref left empty.
    fn remove_empty_object_dirs(&self) {
        let _ = std::fs::remove_dir(self.path.join("refs/heads").join(REF_PREFIX));
        if let Ok(dirs) = std::fs::read_dir(self.path.join("objects")) {
            for d in dirs.flatten() {
                // Fails, as intended, on directories that still hold objects.
                let _ = std::fs::remove_dir(d.path());
            }
        }
    }

    fn import_layer_in_transaction(
        &self,
        layer: &LayerSource,
        blob: impl Read,
        budget: &ImageBudget,
    ) -> Result<StoredLayer> {
        let LayerSource {
            digest,
            diff_id,
            compression,
            declared_size,
        } = *layer;
        let layer_err = |message: String| StoreError::Layer {
            digest: digest.to_string(),
            message,
        };
        let over_limit = |exceeded| StoreError::OverLimit {
            digest: digest.to_string(),
            exceeded: Box::new(exceeded),
            note: "",
        };
        let (read, trip) = (std::cell::Cell::new(0), limits::Trip::default());
        let blob = limits::Compressed::new(blob, declared_size, budget, &read, &trip);
        let mut compressed = HashingReader::new(BufReader::with_capacity(1 << 20, blob));
        let decoder: Box<dyn Read> = match compression {
            Compression::None => Box::new(&mut compressed),
            // Every member, as Go's reader (and so docker) unpacks them.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut compressed)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut compressed)
                    .map_err(|e| layer_err(format!("zstd: {e}")))?,
            ),
        };
        let mut uncompressed =
            HashingReader::new(limits::Unpacked::new(decoder, &read, budget, &trip));
        let mut writer = TreeWriter::new(&self.repo)?;
        let unpacked = (|| {
            let mut archive = tar::Archive::new(&mut uncompressed);
            let entries = archive
                .entries()
                .map_err(|e| layer_err(format!("reading tar: {e}")))?;
            let limits = &budget.limits;
            for (n, entry) in entries.enumerate() {
                let entry = entry.map_err(|e| layer_err(format!("reading tar: {e}")))?;
                if n as u64 >= limits.entries {
                    return Err(over_limit(limits.exceeded(
                        "entries",
                        "the number of tar entries",
                        limits::Value::Count(n as u64 + 1),
                    )));
                }
                let path_length = entry.path_bytes().len() as u64;
                if path_length > limits.path_length {
                    let path = String::from_utf8_lossy(&entry.path_bytes()).to_string();
                    let shown: String = path.chars().take(80).collect();
                    return Err(over_limit(limits.exceeded(
                        "path-length",
                        format!("the path of entry {shown:?}…"),
                        limits::Value::Exact(path_length),
                    )));
                }
                writer.add(entry).map_err(|e| match e {
                    EntryError::Refused { .. } => StoreError::Refused {
                        digest: digest.to_string(),
                        message: e.to_string(),
                    },
                    EntryError::Entry { no_space, .. } => {
                        layer_err(e.to_string()).no_space_if(no_space)
                    }
                })?;
            }
            uncompressed
                .finish()
                .map_err(|e| layer_err(format!("reading layer: {e}")))
        })();
        // A limit hit is the cause, whatever tar or the decompressor made
        // of the error; the rest of the blob is not read.
        if let Some(exceeded) = trip.take() {
            return Err(over_limit(exceeded));
        }
        let (actual_diff_id, unpacked) = match unpacked {
            Ok(u) => u,
            Err(e) => {
                // Damaged bytes usually break the gzip or tar stream first;
                // when the blob's digest is wrong, say that: it is the cause.
                return Err(match compressed.finish() {
                    Ok((actual, _)) if actual != digest => StoreError::DigestMismatch {
                        digest: digest.into(),
                        what: "blob",
                        actual,
                    },
                    _ => e,
                });
            }
        };
        let (actual_digest, _) = compressed.finish().map_err(|e| match trip.take() {
            Some(exceeded) => over_limit(exceeded),
            None => layer_err(format!("reading layer: {e}")),
        })?;
        if actual_digest != digest {
            return Err(StoreError::DigestMismatch {
                digest: digest.into(),
                what: "blob",
                actual: actual_digest,
            });
        }
        if actual_diff_id != diff_id {
            return Err(StoreError::DigestMismatch {
                digest: digest.into(),
                what: "uncompressed (diff_id)",
                actual: actual_diff_id,
            });
        }

        let (root, whiteouts, opaque_dirs, implicit_dirs) = writer.finish()?;
        let md = glib::VariantDict::new(None);
        md.insert_value(MD_DIGEST, &digest.to_variant());
        md.insert_value(MD_DIFF_ID, &diff_id.to_variant());
        md.insert_value(MD_WHITEOUTS, &whiteouts.to_variant());
        md.insert_value(MD_OPAQUE, &opaque_dirs.to_variant());
        md.insert_value(MD_IMPLICIT, &implicit_dirs.to_variant());
        md.insert_value(MD_UNPACKED, &unpacked.to_variant());
        let commit = self
            .repo
            .write_commit_with_time(
                None,
                Some(digest),
                None,
                Some(&md.end()),
                &root,
                0,
                cancel(),
            )
            .map_err(self.repo_err("write layer commit"))?
            .to_string();
        self.repo
            .transaction_set_ref(None, &layer_ref(digest), Some(&commit));
        Ok(StoredLayer {
            digest: digest.into(),
            commit,
            whiteouts,
            opaque_dirs,
            implicit_dirs: Some(implicit_dirs),
            unpacked_size: unpacked,
        })
    }

    pub fn layer(&self, digest: &str) -> Result<StoredLayer> {
        let commit = self
            .repo
            .resolve_rev(&layer_ref(digest), true)
            .map_err(self.repo_err("resolve layer ref"))?
            .ok_or_else(|| StoreError::Layer {
                digest: digest.into(),
                message: "not in the store".into(),
            })?
            .to_string();
        let md = self.commit_metadata(&commit)?;
        Ok(StoredLayer {
            digest: digest.into(),
            whiteouts: md
                .lookup::<Vec<String>>(MD_WHITEOUTS)
                .ok()
                .flatten()
                .unwrap_or_default(),
            opaque_dirs: md
                .lookup::<Vec<String>>(MD_OPAQUE)
                .ok()
                .flatten()
                .unwrap_or_default(),
            implicit_dirs: md.lookup::<Vec<String>>(MD_IMPLICIT).ok().flatten(),
            unpacked_size: md.lookup::<u64>(MD_UNPACKED).ok().flatten().unwrap_or(0),
            commit,
        })
    }

    fn commit_metadata(&self, commit: &str) -> Result<glib::VariantDict> {
        let (v, _) = self
            .repo
            .load_commit(commit)
            .map_err(self.repo_err("load commit"))?;
        Ok(glib::VariantDict::new(Some(&v.child_value(0))))
    }

    /// Records an image whose layers are all in the store; replaces an older
    /// image of the same name. The commit's root is the image's file system:
    /// its layers merged in the store (see [`Store::merge_layers`]).
    pub fn commit_image(
        &self,
        name: &ImageName,
        manifest_digest: &str,
        manifest: &[u8],
        config: &[u8],
        layers: &[String],
        source: &str,
    ) -> Result<StoredImage> {
        let stored = layers
            .iter()
            .map(|l| self.layer(l))
            .collect::<Result<Vec<_>>>()?;
        self.begin_transaction()?;
        let result = (|| {
            let root = self.write_merged_tree(&stored)?;
            let md = glib::VariantDict::new(None);
            let manifest_str = String::from_utf8_lossy(manifest).to_string();
            md.insert_value(MD_NAME, &name.to_string().to_variant());
            md.insert_value(MD_SOURCE, &source.to_variant());
            md.insert_value(MD_MANIFEST_DIGEST, &manifest_digest.to_variant());
            md.insert_value(MD_MANIFEST, &manifest_str.to_variant());
            md.insert_value(MD_ATOMIC_MANIFEST, &manifest_str.to_variant());
            md.insert_value(
                MD_CONFIG,
                &String::from_utf8_lossy(config).to_string().to_variant(),
            );
            md.insert_value(MD_LAYERS, &layers.to_variant());
            md.insert_value(MD_MERGED, &true.to_variant());
            let commit = self
                .repo
                .write_commit_with_time(
                    None,
                    Some(&name.to_string()),
                    None,
                    Some(&md.end()),
                    &root,
                    0,
                    cancel(),
                )
                .map_err(self.repo_err("write image commit"))?;
            // The image this name pointed at may still be deployed: pin it
            // until the next prune or delete, which keeps it only if a
            // deployment still uses it.
            if let Some(old) = self
                .repo
                .resolve_rev(&image_ref(name), true)
                .map_err(self.repo_err("resolve image ref"))?
            {
                if old != commit {
                    self.repo.transaction_set_ref(
                        None,
                        &format!("{}{old}", lifecycle::HELD_PREFIX),
                        Some(&old),
                    );
                }
            }
            self.repo
                .transaction_set_ref(None, &image_ref(name), Some(&commit));
            Ok(commit.to_string())
        })();
        match result {
            Ok(_) => {
                crate::failpoint::failpoint("store:before-image-commit");
                self.commit_transaction()?;
                self.sync()?;
                self.image(&name.to_string())
            }
            Err(e) => {
                self.abort_transaction();
                Err(e)
            }
        }
    }

    fn image_from_commit(&self, commit: &str) -> Result<StoredImage> {
        let md = self.commit_metadata(commit)?;
        let get = |k: &str| md.lookup::<String>(k).ok().flatten().unwrap_or_default();
        let name = ImageName::parse(&get(MD_NAME)).map_err(|e| StoreError::Repo {
            path: self.path.clone(),
            message: format!("commit {commit}: {e}"),
        })?;
        let config = get(MD_CONFIG).into_bytes();
        let created = serde_json::from_slice::<serde_json::Value>(&config)
            .ok()
            .and_then(|c| c.get("created")?.as_str().map(str::to_string));
        Ok(StoredImage {
            name,
            id: get(MD_MANIFEST_DIGEST),
            commit: commit.into(),
            created,
            layers: md
                .lookup::<Vec<String>>(MD_LAYERS)
                .ok()
                .flatten()
                .unwrap_or_default(),
            source: Some(get(MD_SOURCE)).filter(|s| !s.is_empty()),
            manifest: get(MD_MANIFEST).into_bytes(),
            config,
        })
    }

    /// Every image in the store, sorted by name.
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let refs = self
            .repo
            .list_refs(Some(REF_PREFIX.trim_end_matches('/')), cancel())
            .map_err(self.repo_err("list refs"))?;
        let mut out = Vec::new();
        for (r, commit) in refs {
            let full = if r.starts_with(REF_PREFIX) {
                r.clone()
            } else {
                format!("{REF_PREFIX}{r}")
            };
            if is_layer_ref(&full) {
                continue;
            }
            out.push(self.image_from_commit(&commit)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds an image by name (`repo[:tag]`) or by a prefix of its id.
    pub fn image(&self, name_or_id: &str) -> Result<StoredImage> {
        if let Ok(name) = ImageName::parse(name_or_id) {
            if let Some(commit) = self
                .repo
                .resolve_rev(&image_ref(&name), true)
                .map_err(self.repo_err("resolve image ref"))?
            {
                return self.image_from_commit(&commit);
            }
            // `etcd:3.4` finds `registry.local/team/etcd:3.4` when only one
            // stored image ends that way.
            let suffix = format!("/{}", name.repository);
            let by_short_name: Vec<StoredImage> = self
                .images()?
                .into_iter()
                .filter(|i| i.name.tag == name.tag && i.name.repository.ends_with(&suffix))
                .collect();
            match by_short_name.len() {
                0 => {}
                1 => return Ok(by_short_name.into_iter().next().expect("one match")),
                _ => {
                    return Err(StoreError::Ambiguous(
                        name_or_id.into(),
                        by_short_name
                            .iter()
                            .map(|i| i.name.to_string())
                            .collect::<Vec<_>>()
                            .join(" and "),
                    ))
                }
            }
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<StoredImage> = self
                .images()?
                .into_iter()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(prefix))
                .collect();
            let distinct: BTreeMap<&str, Vec<String>> =
                matches.iter().fold(BTreeMap::new(), |mut m, i| {
                    m.entry(i.id.as_str()).or_default().push(i.name.to_string());
                    m
                });
            match distinct.len() {
                0 => {}
                1 => return Ok(matches.into_iter().next().expect("one match")),
                _ => {
                    return Err(StoreError::Ambiguous(
                        name_or_id.into(),
                        distinct
                            .values()
                            .map(|v| v.join(","))
                            .collect::<Vec<_>>()
                            .join(" and "),
                    ))
                }
            }
        }
        Err(StoreError::NoSuchImage(name_or_id.into()))
    }

    /// Size of an image once checked out (sum of its layers' tar contents).
    pub fn image_size(&self, image: &StoredImage) -> Result<u64> {
        image
            .layers
            .iter()
            .map(|l| self.layer(l).map(|l| l.unpacked_size))
            .sum()
    }

    /// Checks an image out into `dest`, which must not exist, as hardlinks
    /// into the store: one tree, the image's layers merged in the store, so
    /// nothing is ever written through a path an earlier layer put there.
    pub fn checkout(&self, image: &StoredImage, dest: &Path) -> Result<()> {
        let err = |message: String| StoreError::Checkout {
            image: image.name.to_string(),
            dest: dest.to_path_buf(),
            message,
        };
        let parent = dest
            .parent()
            .ok_or_else(|| err("destination has no parent directory".into()))?;
        let base = dest
            .file_name()
            .ok_or_else(|| err("destination has no file name".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        let parent_fd = File::open(parent).map_err(|e| err(e.to_string()))?;
        let merged = self
            .commit_metadata(&image.commit)?
            .lookup::<bool>(MD_MERGED)
            .ok()
            .flatten()
            .unwrap_or(false);
        let commit = if merged {
            image.commit.clone()
        } else {
            self.merged_commit_of_old_image(image)?
        };
        let user_mode = self.repo.mode() != ostree::RepoMode::Bare;
        let opts = ostree::RepoCheckoutAtOptions {
            mode: if user_mode {
                ostree::RepoCheckoutMode::User
            } else {
                ostree::RepoCheckoutMode::None
            },
            // The destination must not exist: ostree creates it and every
            // path below it, so nothing there can redirect a write.
            overwrite_mode: ostree::RepoCheckoutOverwriteMode::None,
            // Deployments must cost no file data: refuse to copy.
            no_copy_fallback: true,
            ..Default::default()
        };
        if dest.symlink_metadata().is_ok() {
            return Err(err("the destination already exists".into()));
        }
        self.repo
            .checkout_at(Some(&opts), parent_fd.as_raw_fd(), base, &commit, cancel())
            .map_err(|e| err(e.to_string()))
    }

    /// Images stored before their commit held the merged tree: merges their
    /// layers now into a commit no ref names (the next prune drops it; the
    /// checkout, hardlinks, keeps its files).
    fn merged_commit_of_old_image(&self, image: &StoredImage) -> Result<String> {
        let stored = image
            .layers
            .iter()
            .map(|l| self.layer(l))
            .collect::<Result<Vec<_>>>()?;
        self.begin_transaction()?;
        let result = (|| {
            let root = self.write_merged_tree(&stored)?;
            self.repo
                .write_commit_with_time(None, None, None, None, &root, 0, cancel())
                .map_err(self.repo_err("write merged commit"))
        })();
        match result {
            Ok(commit) => {
                self.commit_transaction()?;
                Ok(commit.to_string())
            }
            Err(e) => {
                self.abort_transaction();
                Err(e)
            }
        }
    }

    /// Writes the merged tree of `layers` (in a transaction).
    fn write_merged_tree(&self, layers: &[StoredLayer]) -> Result<ostree::RepoFile> {
        let mtree = self.merge_layers(layers)?;
        let root = self
            .repo
            .write_mtree(&mtree, cancel())
            .map_err(self.repo_err("write image tree"))?;
        root.downcast::<ostree::RepoFile>()
            .map_err(|_| StoreError::Repo {
                path: self.path.clone(),
                message: "write_mtree did not return a RepoFile".into(),
            })
    }

    /// Composes an image's layers as ostree trees, bottom to top, the way an
    /// OCI runtime unpacks them: each layer's opaque directories and
    /// whiteouts remove entries of the tree so far, then its entries go on
    /// top. A directory replaces a file or symlink of the same name (which is
    /// gone, not followed), a file or symlink replaces a whole directory, and
    /// directories merge, taking the upper layer's metadata when its tar
    /// described them. Only trees are touched: no path is resolved on disk.
    ///
    /// Untouched subtrees stay as references to the layers' tree objects, so
    /// the cost is in the directories the upper layers change.
    fn merge_layers(&self, layers: &[StoredLayer]) -> Result<ostree::MutableTree> {
        let Some((first, upper)) = layers.split_first() else {
            let mtree = ostree::MutableTree::new();
            mtree.set_metadata_checksum(&TreeWriter::dirmeta(&self.repo, 0, 0, 0o755)?);
            return Ok(mtree);
        };
        let layer_err = |layer: &StoredLayer, message: String| StoreError::Layer {
            digest: layer.digest.clone(),
            message,
        };
        let tree_of = |layer: &StoredLayer| {
            ostree::MutableTree::from_commit(&self.repo, &layer.commit)
                .map_err(|e| layer_err(layer, format!("reading its tree: {e}")))
        };
        let merged = tree_of(first)?;
        for layer in upper {
            let g = |e: glib::Error| layer_err(layer, e.to_string());
            for dir in &layer.opaque_dirs {
                let components = whiteout_components(dir)
                    .map_err(|m| layer_err(layer, format!("opaque directory {dir:?}: {m}")))?;
                if let Some(t) = subdir(&merged, &components).map_err(g)? {
                    let (files, dirs) = entries(&t).map_err(g)?;
                    for name in files.keys().chain(dirs.keys()) {
                        t.remove(name, false).map_err(g)?;
                    }
                }
            }
            for path in &layer.whiteouts {
                let components = whiteout_components(path)
                    .map_err(|m| layer_err(layer, format!("whiteout {path:?}: {m}")))?;
                let Some((name, parents)) = components.split_last() else {
                    return Err(layer_err(
                        layer,
                        format!("whiteout {path:?}: it names no entry"),
                    ));
                };
                if let Some(t) = subdir(&merged, parents).map_err(g)? {
                    t.remove(name, true).map_err(g)?;
                }
            }
            let implicit: Option<std::collections::HashSet<&str>> = layer
                .implicit_dirs
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect());
            // Layers stored before implicit directories were recorded keep
            // the metadata of the directories below, as checkouts did.
            let described = |path: &str| implicit.as_ref().is_some_and(|i| !i.contains(path));
            let top = tree_of(layer)?;
            if described("") {
                merged.set_metadata_checksum(&top.metadata_checksum());
            }
            self.union(&merged, &top, "", &described).map_err(g)?;
        }
        Ok(merged)
    }

    /// Puts `upper`'s entries on `lower` (see [`Store::merge_layers`]).
    fn union(
        &self,
        lower: &ostree::MutableTree,
        upper: &ostree::MutableTree,
        path: &str,
        described: &dyn Fn(&str) -> bool,
    ) -> std::result::Result<(), glib::Error> {
        let (up_files, up_dirs) = entries(upper)?;
        let (_, low_dirs) = entries(lower)?;
        for (name, checksum) in &up_files {
            lower.remove(name, true)?;
            lower.replace_file(name, checksum)?;
        }
        for (name, up) in &up_dirs {
            let sub_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            if let Some(low) = low_dirs.get(name) {
                if described(&sub_path) {
                    low.set_metadata_checksum(&up.metadata_checksum());
                }
                self.union(low, up, &sub_path, described)?;
                continue;
            }
            // New here, or replacing a file or symlink: the upper directory
            // as it is, by reference to its tree object.
            lower.remove(name, true)?;
            let new = lower.ensure_dir(name)?;
            if !new.fill_empty_from_dirtree(
                &self.repo,
                &up.contents_checksum(),
                &up.metadata_checksum(),
            ) {
                return Err(glib::Error::new(
                    gio::IOErrorEnum::Failed,
                    &format!("{sub_path}: cannot take the directory from the layer"),
                ));
            }
        }
        Ok(())
    }
}

/// A tree's files (and symlinks) and subdirectories, loading it from the
/// store if it was not yet.
#[allow(clippy::type_complexity)]
fn entries(
    t: &ostree::MutableTree,
) -> std::result::Result<
    (
        BTreeMap<String, String>,
        BTreeMap<String, ostree::MutableTree>,
    ),
    glib::Error,
> {
    let files = t.copy_files().into_iter().collect();
    let dirs = t.copy_subdirs().into_iter().collect();
    // Loading errors are cached in the tree rather than returned.
    t.check_error()?;
    Ok((files, dirs))
}

/// The directory at `components` in `root`, when every component is a
/// directory there. A file or symlink on the way means there is none: a
/// path is never resolved through a link.
fn subdir(
    root: &ostree::MutableTree,
    components: &[&str],
) -> std::result::Result<Option<ostree::MutableTree>, glib::Error> {
    let mut t = root.clone();
    for c in components {
        let (_, mut dirs) = entries(&t)?;
        match dirs.remove(*c) {
            Some(d) => t = d,
            None => return Ok(None),
        }
    }
    Ok(Some(t))
}

/// The components of a recorded whiteout or opaque directory path, each a
/// plain name (no empty, `.` or `..` component).
fn whiteout_components(path: &str) -> std::result::Result<Vec<&str>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path.split('/')
        .map(|c| match c {
            "" | "." | ".." => Err(format!("{c:?} is not a name")),
            c => Ok(c),
        })
        .collect()
}

/// Builds an ostree tree from tar entries.
struct TreeWriter<'r> {
    repo: &'r ostree::Repo,
    root: ostree::MutableTree,
    default_dirmeta: String,
    dirmeta_cache: HashMap<(u32, u32, u32), String>,
    /// Checksums of files written so far, for tar hardlinks.
    files: HashMap<String, String>,
    whiteouts: Vec<String>,
    opaque_dirs: Vec<String>,
    /// Directories the tar described with an entry of their own (`""`: the
    /// root); the others were created as parents and are recorded.
    described_dirs: std::collections::HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("{path}: {message}")]
    Entry {
        path: String,
        message: String,
        /// ostree said ENOSPC.
        no_space: bool,
    },
    #[error("{path}: {message}")]
    Refused { path: String, message: String },
}

impl<'r> TreeWriter<'r> {
    fn new(repo: &'r ostree::Repo) -> Result<Self> {
        let default_dirmeta = Self::dirmeta(repo, 0, 0, 0o755)?;
        let root = ostree::MutableTree::new();
        root.set_metadata_checksum(&default_dirmeta);
        Ok(TreeWriter {
            repo,
            root,
            dirmeta_cache: HashMap::from([((0, 0, 0o755), default_dirmeta.clone())]),
            default_dirmeta,
            files: HashMap::new(),
            whiteouts: Vec::new(),
            opaque_dirs: Vec::new(),
            described_dirs: std::collections::HashSet::new(),
        })
    }

    fn dirmeta(repo: &ostree::Repo, uid: u32, gid: u32, mode: u32) -> Result<String> {
        let info = gio::FileInfo::new();
        info.set_attribute_uint32("unix::uid", uid);
        info.set_attribute_uint32("unix::gid", gid);
        info.set_attribute_uint32("unix::mode", 0o040000 | (mode & 0o7777));
        let v = ostree::create_directory_metadata(&info, None);
        repo.write_metadata(ostree::ObjectType::DirMeta, None, &v, cancel())
            .map(|c| c.to_hex())
            .map_err(|e| {
                StoreError::Repo {
                    path: PathBuf::new(),
                    message: format!("write directory metadata: {e}"),
                }
                .no_space_if(glib_no_space(&e))
            })
    }

    fn cached_dirmeta(&mut self, uid: u32, gid: u32, mode: u32) -> Result<String> {
        if let Some(c) = self.dirmeta_cache.get(&(uid, gid, mode)) {
            return Ok(c.clone());
        }
        let c = Self::dirmeta(self.repo, uid, gid, mode)?;
        self.dirmeta_cache.insert((uid, gid, mode), c.clone());
        Ok(c)
    }

    /// The tree for directory `components`, created (with default metadata) as needed.
    fn dir(&self, components: &[&str]) -> std::result::Result<ostree::MutableTree, glib::Error> {
        let mut t = self.root.clone();
        for c in components {
            t = match t.lookup(c) {
                Ok((_, Some(sub))) => sub,
                // A file of that name is replaced by the directory, as tar would.
                _ => {
                    t.remove(c, true)?;
                    let sub = t.ensure_dir(c)?;
                    sub.set_metadata_checksum(&self.default_dirmeta);
                    sub
                }
            };
        }
        Ok(t)
    }

    fn add<R: Read>(&mut self, mut entry: tar::Entry<R>) -> std::result::Result<(), EntryError> {
        let raw_path = entry.path().map(|p| p.to_string_lossy().to_string());
        let path = raw_path.unwrap_or_default();
        let e = |message: String| EntryError::Entry {
            path: path.clone(),
            message,
            no_space: false,
        };
        let refuse = |message: String| EntryError::Refused {
            path: path.clone(),
            message,
        };
        let mut components: Vec<&str> = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(refuse("path escapes the layer root".into())),
                // Stored, it could never be checked out (ENAMETOOLONG).
                c if c.len() > NAME_MAX => {
                    return Err(refuse(format!(
                        "a name of {} bytes; file systems allow {NAME_MAX}",
                        c.len()
                    )))
                }
                c => components.push(c),
            }
        }
        let header = entry.header();
        let uid = header.uid().map_err(|x| e(x.to_string()))? as u32;
        let gid = header.gid().map_err(|x| e(x.to_string()))? as u32;
        let mode = header.mode().map_err(|x| e(x.to_string()))? & 0o7777;
        let kind = header.entry_type();
        let g = |x: glib::Error| EntryError::Entry {
            path: path.clone(),
            message: x.to_string(),
            no_space: glib_no_space(&x),
        };

        let Some((name, parents)) = components.split_last() else {
            // The layer's root directory itself.
            if kind.is_dir() {
                let meta = self
                    .cached_dirmeta(uid, gid, mode)
                    .map_err(|x| e(x.to_string()))?;
                self.root.set_metadata_checksum(&meta);
                self.described_dirs.insert(String::new());
            }
            return Ok(());
        };
        let rel = components.join("/");
        // A whiteout hides something; it never holds anything itself.
        if let Some(w) = parents.iter().find(|c| c.starts_with(".wh.")) {
            return Err(refuse(format!(
                "whiteout {w:?} is used as a directory (a whiteout is a marker file, nothing lives under it)"
            )));
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = parents.join("/");
            if kind.is_dir() {
                return Err(refuse(format!(
                    "whiteout {name:?} is a directory (a whiteout is a marker file)"
                )));
            }
            if hidden == ".wh..opq" {
                self.opaque_dirs.push(parent);
            } else if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(refuse(format!(
                    "whiteout {name:?} hides no entry ({hidden:?} is not a file name)"
                )));
            } else if hidden.starts_with(".wh.") {
                // aufs kept its own metadata under `.wh..wh.*` (`.wh..wh.plnk`,
                // `.wh..wh.aufs`); OCI defines only the opaque marker.
                return Err(refuse(format!(
                    "{name:?} is not an OCI whiteout (only \".wh..wh..opq\" is; aufs metadata does not belong in a layer)"
                )));
            } else {
                self.whiteouts.push(if parent.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{parent}/{hidden}")
                });
            }
            return Ok(());
        }
        let parent = self.dir(parents).map_err(g)?;
        match kind {
            tar::EntryType::Directory => {
                let meta = self
                    .cached_dirmeta(uid, gid, mode)
                    .map_err(|x| e(x.to_string()))?;
                // A directory replaces a file or symlink of that name
                // from earlier in the same tar.
                if let Ok((Some(_), None)) = parent.lookup(name) {
                    parent.remove(name, false).map_err(g)?;
                }
                let t = parent.ensure_dir(name).map_err(g)?;
                t.set_metadata_checksum(&meta);
                self.described_dirs.insert(rel);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let fmode = 0o100000 | mode;
                let checksum = if size <= INLINE_MAX {
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf).map_err(|x| e(x.to_string()))?;
                    self.repo
                        .write_regfile_inline(None, uid, gid, fmode, None, &buf, cancel())
                        .map_err(g)?
                        .to_string()
                } else {
                    let w = self
                        .repo
                        .write_regfile(None, uid, gid, fmode, size, None)
                        .map_err(g)?;
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = entry.read(&mut buf).map_err(|x| e(x.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        w.write_all(&buf[..n], cancel()).map_err(g)?;
                    }
                    w.finish(cancel()).map_err(g)?.to_string()
                };
                // A name may replace a directory from earlier in the same tar.
                parent.remove(name, true).map_err(g)?;
                parent.replace_file(name, &checksum).map_err(g)?;
                self.files.insert(rel, checksum);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|x| e(x.to_string()))?
                    .ok_or_else(|| e("symlink without a target".into()))?
                    .to_string_lossy()
                    .to_string();
                let checksum = self
                    .repo
                    .write_symlink(None, uid, gid, None, &target, cancel())
                    .map_err(g)?
                    .to_string();
                parent.remove(name, true).map_err(g)?;
                parent.replace_file(name, &checksum).map_err(g)?;
                self.files.insert(rel, checksum);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|x| e(x.to_string()))?
                    .ok_or_else(|| e("hardlink without a target".into()))?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .trim_start_matches('/')
                    .to_string();
                let checksum = self.files.get(&target).cloned().ok_or_else(|| {
                    refuse(format!(
                        "hardlink to {target}, which is not earlier in this layer"
                    ))
                })?;
                parent.remove(name, true).map_err(g)?;
                parent.replace_file(name, &checksum).map_err(g)?;
                self.files.insert(rel, checksum);
            }
            // Devices and fifos can't live in an ostree repo; runc creates
            // /dev itself, so images only lose what they should not ship.
            other => {
                tracing::debug!(path = %rel, kind = ?other, "skipping tar entry ostree cannot store");
            }
        }
        Ok(())
    }

    /// Directories (by path) created only as parents of other entries.
    fn implicit_dirs(&self) -> std::result::Result<Vec<String>, glib::Error> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), self.root.clone())];
        while let Some((path, t)) = stack.pop() {
            if !self.described_dirs.contains(&path) {
                out.push(path.clone());
            }
            let (_, dirs) = entries(&t)?;
            for (name, sub) in dirs {
                let p = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                stack.push((p, sub));
            }
        }
        out.sort();
        Ok(out)
    }

    #[allow(clippy::type_complexity)]
    fn finish(self) -> Result<(ostree::RepoFile, Vec<String>, Vec<String>, Vec<String>)> {
        let err = |message: String| StoreError::Repo {
            path: PathBuf::new(),
            message,
        };
        let root = self
            .repo
            .write_mtree(&self.root, cancel())
            .map_err(|e| err(format!("write layer tree: {e}")))?;
        let implicit = self
            .implicit_dirs()
            .map_err(|e| err(format!("list layer directories: {e}")))?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| err("write_mtree did not return a RepoFile".into()))?;
        Ok((root, self.whiteouts, self.opaque_dirs, implicit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_like_atomic() {
        let n = ImageName::parse("localhost:5000/team/etcd:3.4").unwrap();
        let enc = encode_name(&n);
        assert_eq!(enc, "localhost_3A5000_2Fteam_2Fetcd_3A3.4");
        assert_eq!(decode_name(&enc).unwrap(), "localhost:5000/team/etcd:3.4");
        assert!(!is_layer_ref(&image_ref(&n)));
        assert!(is_layer_ref(&layer_ref(&format!(
            "sha256:{}",
            "ab".repeat(32)
        ))));
    }

    pub(super) fn tar_with(entries: &[(&str, &[u8])], whiteout: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        if let Some(w) = whiteout {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, w, &b""[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn digest(b: &[u8]) -> String {
        oci::sha256_digest(b)
    }

    /// Two layers: `etc/a` and `etc/b`, then `etc/c` with a whiteout of `etc/a`.
    fn import_etc_layers(store: &Store) -> Vec<String> {
        let l1 = tar_with(&[("etc/a", b"a"), ("etc/b", b"b")], None);
        let l2 = tar_with(&[("etc/c", b"c")], Some("etc/.wh.a"));
        for l in [&l1, &l2] {
            store
                .import_layer(&digest(l), &digest(l), Compression::None, &l[..])
                .unwrap();
        }
        vec![digest(&l1), digest(&l2)]
    }

    #[test]
    fn import_checkout_and_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let layers = import_etc_layers(&store);
        let name = ImageName::parse("t:1").unwrap();
        let img = store
            .commit_image(&name, "sha256:00", b"{}", b"{}", &layers, "test")
            .unwrap();
        assert_eq!(store.images().unwrap().len(), 1);
        let out = dir.path().join("co");
        store.checkout(&img, &out).unwrap();
        assert!(!out.join("etc/a").exists());
        assert_eq!(std::fs::read(out.join("etc/b")).unwrap(), b"b");
        assert_eq!(std::fs::read(out.join("etc/c")).unwrap(), b"c");
        assert!(!out.join("etc/.wh.a").exists());
    }

    #[test]
    fn images_stored_before_merged_trees_check_out_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let layers = import_etc_layers(&store);
        let name = ImageName::parse("old:1").unwrap();
        // An image commit as socle wrote them before: an empty root and no
        // merged-tree marker.
        store.repo.prepare_transaction(cancel()).unwrap();
        let root = store.write_merged_tree(&[]).unwrap();
        let md = glib::VariantDict::new(None);
        md.insert_value(MD_NAME, &name.to_string().to_variant());
        md.insert_value(MD_MANIFEST_DIGEST, &"sha256:00".to_variant());
        md.insert_value(MD_CONFIG, &"{}".to_variant());
        md.insert_value(MD_LAYERS, &layers.to_variant());
        let commit = store
            .repo
            .write_commit_with_time(None, None, None, Some(&md.end()), &root, 0, cancel())
            .unwrap();
        store
            .repo
            .transaction_set_ref(None, &image_ref(&name), Some(&commit));
        store.repo.commit_transaction(cancel()).unwrap();

        let img = store.image("old:1").unwrap();
        let out = dir.path().join("co");
        store.checkout(&img, &out).unwrap();
        assert!(!out.join("etc/a").exists());
        assert_eq!(std::fs::read(out.join("etc/b")).unwrap(), b"b");
        assert_eq!(std::fs::read(out.join("etc/c")).unwrap(), b"c");
        // Checkouts never go into an existing directory.
        let e = store.checkout(&img, &out).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }

    #[test]
    fn gzip_and_zstd_layers_import_with_both_digests_checked() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let tar = tar_with(&[("etc/z", b"zz")], None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (blob, compression) in [(&gz, Compression::Gzip), (&zst, Compression::Zstd)] {
            let layer = store
                .import_layer(&digest(blob), &digest(&tar), compression, &blob[..])
                .unwrap();
            assert_eq!(layer.unpacked_size, tar.len() as u64);
            // The same blob claiming another diff_id is refused.
            let other = format!("sha256:{}", "1".repeat(64));
            let e = store
                .import_layer(&digest(blob), &other, compression, &blob[..])
                .unwrap_err();
            assert!(e.to_string().contains("diff_id"), "{e}");
        }
    }

    #[test]
    fn layers_import_side_by_side() {
        // As pull does: a handle per thread, one transaction per layer.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        Store::open(&path).unwrap();
        let budget = &ImageBudget::new(Limits::default(), 0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    let store = Store::open(path).unwrap();
                    for i in 0..40 {
                        let name = format!("t{t}/f{i}");
                        let l = tar_with(&[(name.as_str(), name.as_bytes())], None);
                        let d = digest(&l);
                        let source = LayerSource {
                            digest: &d,
                            diff_id: &d,
                            compression: Compression::None,
                            declared_size: Some(l.len() as u64),
                        };
                        store
                            .import_layer_unpruned(&source, &l[..], budget)
                            .unwrap();
                    }
                });
            }
        });
        let store = Store::open(&path).unwrap();
        assert_eq!(store.layer_digests().unwrap().len(), 160);
    }

    #[test]
    fn digest_mismatch_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("repo")).unwrap();
        let l = tar_with(&[("x", b"x")], None);
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e = store
            .import_layer(&wrong, &digest(&l), Compression::None, &l[..])
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(!store.has_layer(&wrong).unwrap());
    }
}
