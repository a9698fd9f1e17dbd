//! Pull: bring an image from a source (a registry or a local layout or
//! archive) into the store. Layers stream straight into ostree objects,
//! several at a time; a layer already in the store is not fetched; the image
//! becomes visible only once every layer is committed, so an interrupted
//! pull leaves finished layers for the next one and no half image.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;

use crate::archive::{self, ArchiveError, LocalImage};
use crate::failpoint::failpoint;
use crate::limits::{Exceeded, ImageBudget, Limits, Value};
use crate::oci::Compression;
use crate::progress::{Progress, Quiet};
use crate::reference::{ImageName, ImageRef};
use crate::registry::{self, RegistryError, RemoteImage, ResolveError};
use crate::store::{LayerSource, Store, StoreError, StoredImage};

#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    pub image: StoredImage,
    pub layers_imported: usize,
    pub layers_present: usize,
    pub bytes_imported: u64,
    pub seconds: f64,
}

pub struct PullOptions<'a> {
    /// Store under this name instead of the one the source gives.
    pub name: Option<ImageName>,
    pub registry: registry::Options,
    /// Layers fetched at once.
    pub jobs: usize,
    pub progress: &'a dyn Progress,
    /// What the image may make socle read and unpack.
    pub limits: Limits,
}

impl Default for PullOptions<'_> {
    fn default() -> Self {
        PullOptions {
            name: None,
            registry: registry::Options::default(),
            jobs: 3,
            progress: &Quiet,
            limits: Limits::default(),
        }
    }
}

/// What every source gives: the image's documents and its layers.
struct Layer {
    digest: String,
    diff_id: String,
    size: u64,
    compression: Compression,
    index: usize,
}

enum Source {
    Local(LocalImage),
    Remote(RemoteImage),
}

impl Source {
    fn layers(&self) -> Vec<Layer> {
        let fields: Vec<(&String, &String, u64, Compression)> = match self {
            Source::Local(i) => i
                .layers
                .iter()
                .map(|l| (&l.digest, &l.diff_id, l.size, l.compression))
                .collect(),
            Source::Remote(i) => i
                .layers
                .iter()
                .map(|l| (&l.digest, &l.diff_id, l.size, l.compression))
                .collect(),
        };
        fields
            .into_iter()
            .enumerate()
            .map(|(index, (digest, diff_id, size, compression))| Layer {
                digest: digest.clone(),
                diff_id: diff_id.clone(),
                size,
                compression,
                index,
            })
            .collect()
    }

    fn open_layer<'a>(
        &'a self,
        layer: &Layer,
        cancel: &'a AtomicBool,
    ) -> anyhow::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Source::Local(i) => i.open_layer(&i.layers[layer.index])?,
            Source::Remote(i) => Box::new(i.open_layer(&i.layers[layer.index], cancel)),
        })
    }
}

/// Counts bytes as they are read, for the progress display.
struct Counted<'a, R> {
    inner: R,
    done: u64,
    report: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(self.done);
        Ok(n)
    }
}

/// What kind of failure stopped a pull, for fronts that act on it (an exit
/// status, a D-Bus error name) rather than only print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullErrorKind {
    /// The image, tag, manifest or local source is not there.
    NotFound,
    /// The registry wants credentials, or refused the ones it got.
    Unauthorized,
    /// The registry could not be reached, or failed on its side.
    Network,
    /// The image is over a limit, named as `--limit` names it.
    Limit(&'static str),
    /// The store's file system is full.
    DiskFull,
    /// Bytes that do not match their digest, a damaged archive, manifest or
    /// layer, a layer socle refuses to apply.
    Corrupt,
    /// A media type, manifest schema or platform socle does not read.
    Unsupported,
    Other,
}

/// A failed pull: its kind, and the error as socle words it. It prints, and
/// its chain of causes reads, exactly as the error it wraps.
#[derive(Debug)]
pub struct PullError {
    kind: PullErrorKind,
    error: anyhow::Error,
}

impl PullError {
    pub fn kind(&self) -> PullErrorKind {
        self.kind
    }
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl std::error::Error for PullError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The kind of the outermost cause in `e`'s chain that has one.
fn kind_of(e: &anyhow::Error) -> PullErrorKind {
    e.chain()
        .find_map(cause_kind)
        .unwrap_or(PullErrorKind::Other)
}

fn cause_kind(cause: &(dyn std::error::Error + 'static)) -> Option<PullErrorKind> {
    use PullErrorKind::*;
    if let Some(e) = cause.downcast_ref::<StoreError>() {
        return Some(match e {
            StoreError::NoSpace(_) => DiskFull,
            StoreError::OverLimit { exceeded, .. } => Limit(exceeded.name),
            StoreError::DigestMismatch { .. } | StoreError::Refused { .. } => Corrupt,
            StoreError::NoSuchImage(_) => NotFound,
            _ => Other,
        });
    }
    if let Some(e) = cause.downcast_ref::<Exceeded>() {
        return Some(Limit(e.name));
    }
    if let Some(e) = cause.downcast_ref::<RegistryError>() {
        return Some(match e {
            RegistryError::NotFound { .. } => NotFound,
            RegistryError::AuthRequired { .. }
            | RegistryError::BadCredentials { .. }
            | RegistryError::Denied { .. } => Unauthorized,
            RegistryError::Connect { .. } => Network,
            RegistryError::Http { status, .. } if *status >= 500 => Network,
            RegistryError::Http { .. } => Other,
            RegistryError::TooLarge { .. } => Limit(JSON_SIZE),
        });
    }
    if let Some(e) = cause.downcast_ref::<ResolveError>() {
        return Some(match e {
            ResolveError::Corrupt(_) => Corrupt,
            ResolveError::Unsupported(_) => Unsupported,
            // Every registry tried failing the same way is that failure.
            ResolveError::Nowhere { attempts, .. } => {
                let mut kinds = attempts.iter().map(kind_of);
                let first = kinds.next().unwrap_or(Other);
                if kinds.all(|k| k == first) {
                    first
                } else {
                    Other
                }
            }
        });
    }
    if let Some(e) = cause.downcast_ref::<ArchiveError>() {
        return Some(match e {
            ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => NotFound,
            ArchiveError::Io { .. } | ArchiveError::Ambiguous { .. } => Other,
            ArchiveError::UnknownReference { .. } => NotFound,
            ArchiveError::TooLarge { .. } => Limit(JSON_SIZE),
            ArchiveError::Unsupported { .. } | ArchiveError::UnsupportedMediaType { .. } => {
                Unsupported
            }
            ArchiveError::Missing { .. }
            | ArchiveError::BadJson { .. }
            | ArchiveError::DigestMismatch { .. }
            | ArchiveError::Invalid { .. } => Corrupt,
        });
    }
    if cause.downcast_ref::<serde_json::Error>().is_some() {
        return Some(Corrupt);
    }
    let enospc = rustix::io::Errno::NOSPC.raw_os_error();
    if let Some(e) = cause.downcast_ref::<io::Error>() {
        return (e.raw_os_error() == Some(enospc)).then_some(DiskFull);
    }
    if let Some(e) = cause.downcast_ref::<ostree::glib::Error>() {
        return crate::store::glib_no_space(e).then_some(DiskFull);
    }
    None
}

/// The limit on manifests, indexes and configs, as `--limit` names it.
const JSON_SIZE: &str = "json-size";

/// Pulls `source` into `store`. Layers already in the store are not read
/// again; the image becomes visible only once every layer is committed.
pub fn pull(store: &Store, source: &ImageRef, opts: &PullOptions) -> Result<PullReport, PullError> {
    let result = pull_inner(store, source, opts);
    opts.progress.finish();
    result.map_err(|e| {
        let kind = kind_of(&e);
        // ostree and the kernel say ENOSPC about an object; say where.
        let e = if kind == PullErrorKind::DiskFull {
            e.context(format!(
                "the file system of the store ({}) is full; the store is as it was: free space there (`socle images prune` removes what no image or deployment uses) and pull again",
                store.path().display()
            ))
        } else {
            e
        };
        PullError {
            kind,
            error: e.context(format!("pulling {source}")),
        }
    })
}

fn pull_inner(store: &Store, source: &ImageRef, opts: &PullOptions) -> anyhow::Result<PullReport> {
    let start = Instant::now();
    let progress = opts.progress;
    let (image, source_name, recorded_source) = match source {
        ImageRef::Docker(r) => {
            let remote = registry::resolve(r, &opts.registry, opts.limits.json_size)?;
            for n in &remote.notes {
                progress.note(n);
            }
            let name = remote.name.clone();
            let recorded = ImageRef::Docker(remote.reference.clone()).to_string();
            (Source::Remote(remote), Some(name), recorded)
        }
        local => {
            let image = archive::open(local, opts.limits.json_size)?;
            let name = image.name.clone();
            (Source::Local(image), name, local.absolute().to_string())
        }
    };
    let name = match (&opts.name, source_name) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n,
        (None, None) => {
            let stem = source
                .path()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "image".into());
            ImageName::parse(&stem)
                .with_context(|| format!("{source} names no image; pass --name NAME[:TAG]"))?
        }
    };
    // Before any layer: a name the store can't hold would fail only at the end.
    name.check_new()?;
    let (manifest_digest, manifest_bytes, config_bytes) = match &image {
        Source::Local(i) => (&i.manifest_digest, &i.manifest_bytes, &i.config_bytes),
        Source::Remote(i) => (&i.manifest_digest, &i.manifest_bytes, &i.config_bytes),
    };
    let layers = image.layers();
    progress.resolved(
        &recorded_source,
        &name.to_string(),
        manifest_digest,
        &layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect::<Vec<_>>(),
    );

    let budget = check_declared(store, &name, &layers, opts.limits)?;

    // A digest listed twice (empty layers often are) is fetched once.
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    let mut present = 0;
    for l in &layers {
        if !seen.insert(l.digest.clone()) {
            continue;
        }
        if store.has_layer(&l.digest)? {
            present += 1;
            progress.layer_present(&l.digest, l.size);
        } else {
            todo.push(l);
        }
    }
    import_all(store, &image, &todo, &budget, opts)?;
    store.sync()?;
    failpoint("pull:after-layers");

    let digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let stored = store.commit_image(
        &name,
        manifest_digest,
        manifest_bytes,
        config_bytes,
        &digests,
        &recorded_source,
    )?;
    Ok(PullReport {
        image: stored,
        layers_imported: todo.len(),
        layers_present: present,
        bytes_imported: todo.iter().map(|l| l.size).sum(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Refuses, before anything is downloaded, an image that lists more layers
/// than the limit or a layer whose descriptor declares more bytes than a
/// layer may have; returns the image's budget with the layers already in
/// the store counted.
fn check_declared(
    store: &Store,
    name: &ImageName,
    layers: &[Layer],
    limits: Limits,
) -> anyhow::Result<ImageBudget> {
    if layers.len() as u64 > limits.layers {
        return Err(limits
            .exceeded(
                "layers",
                format!("the number of layers of image {name}"),
                Value::Count(layers.len() as u64),
            )
            .into());
    }
    let mut already = 0;
    let mut seen = BTreeSet::new();
    for l in layers {
        if l.size > limits.layer_size {
            let e = limits.exceeded(
                "layer-size",
                "the size its descriptor declares",
                Value::Exact(l.size),
            );
            return Err(StoreError::OverLimit {
                digest: l.digest.clone(),
                exceeded: Box::new(e),
                note: " (nothing was downloaded)",
            }
            .into());
        }
        if seen.insert(&l.digest) && store.has_layer(&l.digest)? {
            already += store.layer(&l.digest)?.unpacked_size;
        }
    }
    Ok(ImageBudget::new(limits, already))
}

/// Imports `todo` with up to `opts.jobs` layers in flight, each thread with
/// its own handle on the repository (ostree allows one transaction per
/// handle). The first failure stops the others; then the objects they wrote
/// are discarded.
fn import_all(
    store: &Store,
    image: &Source,
    todo: &[&Layer],
    budget: &ImageBudget,
    opts: &PullOptions,
) -> anyhow::Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    // Each failure, and whether another had already stopped the pull (a
    // cancelled download is a consequence, not the cause).
    let errors: Mutex<Vec<(anyhow::Error, bool)>> = Mutex::new(Vec::new());
    let committed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let progress = opts.progress;
    let repo_path = store.path().to_path_buf();
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, todo.len()) {
            s.spawn(|| {
                let fail = |e: anyhow::Error| {
                    let after_another = cancel.swap(true, Ordering::Relaxed);
                    errors.lock().expect("errors lock").push((e, after_another));
                };
                let handle = match Store::open(&repo_path) {
                    Ok(h) => h,
                    Err(e) => return fail(e.into()),
                };
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= todo.len() || cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let layer = todo[k];
                    let started = Instant::now();
                    progress.layer_started(&layer.digest, layer.size);
                    let report = |done: u64| progress.layer_bytes(&layer.digest, done);
                    let result = image.open_layer(layer, &cancel).and_then(|blob| {
                        let counted = Counted {
                            inner: blob,
                            done: 0,
                            report: &report,
                        };
                        let source = LayerSource {
                            digest: &layer.digest,
                            diff_id: &layer.diff_id,
                            compression: layer.compression,
                            declared_size: Some(layer.size),
                        };
                        Ok(handle.import_layer_unpruned(&source, counted, budget)?)
                    });
                    match result {
                        Ok(_) => {
                            committed
                                .lock()
                                .expect("committed lock")
                                .push(layer.digest.clone());
                            failpoint("pull:after-layer");
                            progress.layer_done(
                                &layer.digest,
                                layer.size,
                                started.elapsed().as_secs_f64(),
                            )
                        }
                        Err(e) => return fail(e),
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().expect("errors lock");
    if errors.is_empty() {
        return Ok(());
    }
    // Report the failure that stopped the others, not their cancellation.
    let first = errors
        .iter()
        .position(|(_, after_another)| !after_another)
        .unwrap_or(0);
    let (error, _) = errors.swap_remove(first);
    // Layers that arrived whole and verified are kept, so pulling again
    // fetches only the rest; but a source that served damaged data, or an
    // image with a layer socle refuses to apply, gets nothing of this pull
    // into the store.
    let committed = committed.into_inner().expect("committed lock");
    let damaged = matches!(
        error.downcast_ref::<StoreError>(),
        Some(
            StoreError::DigestMismatch { .. }
                | StoreError::Refused { .. }
                | StoreError::OverLimit { .. }
        )
    );
    if damaged {
        store.remove_layer_refs(&committed)?;
    }
    store.discard_unreferenced();
    if !damaged && !committed.is_empty() {
        return Err(error.context(format!(
            "{} of {} layers arrived whole and stay in the store; pulling again fetches only the rest",
            committed.len(),
            todo.len()
        )));
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: impl Into<anyhow::Error>) -> PullErrorKind {
        kind_of(&e.into().context("pulling x").context("outer"))
    }

    #[test]
    fn a_full_disk_is_told_by_type_not_by_wording() {
        let enospc = io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        assert_eq!(kind(enospc), PullErrorKind::DiskFull);
        let glib_full = ostree::glib::Error::new(ostree::gio::IOErrorEnum::NoSpace, "write");
        assert_eq!(kind(glib_full), PullErrorKind::DiskFull);
        let store_full = StoreError::NoSpace(Box::new(StoreError::Repo {
            path: "/x".into(),
            message: "commit transaction: write".into(),
        }));
        assert_eq!(kind(store_full), PullErrorKind::DiskFull);
        // The words alone are not a full disk.
        assert_eq!(
            kind(anyhow::anyhow!("No space left on device")),
            PullErrorKind::Other
        );
        assert_eq!(
            kind(io::Error::other("No space left on device")),
            PullErrorKind::Other
        );
    }

    #[test]
    fn registry_failures_have_kinds() {
        let not_found = || RegistryError::NotFound {
            what: "manifest 1".into(),
            registry: "r".into(),
            repository: "a".into(),
        };
        assert_eq!(kind(not_found()), PullErrorKind::NotFound);
        let auth = RegistryError::AuthRequired {
            registry: "r".into(),
        };
        assert_eq!(kind(auth), PullErrorKind::Unauthorized);
        let down = RegistryError::Connect {
            registry: "r".into(),
            message: "refused".into(),
        };
        assert_eq!(kind(down), PullErrorKind::Network);
        let nowhere = |attempts: Vec<anyhow::Error>| ResolveError::Nowhere {
            message: "not found anywhere".into(),
            attempts,
        };
        assert_eq!(
            kind(nowhere(vec![not_found().into(), not_found().into()])),
            PullErrorKind::NotFound
        );
        let mixed = nowhere(vec![not_found().into(), anyhow::anyhow!("odd")]);
        assert_eq!(kind(mixed), PullErrorKind::Other);
        assert_eq!(
            kind(ResolveError::Unsupported("schema 1".into())),
            PullErrorKind::Unsupported
        );
    }

    #[test]
    fn limits_and_damage_have_kinds() {
        let limits = Limits::default();
        let e = limits.exceeded("layers", "the number of layers", Value::Count(1 << 20));
        assert_eq!(kind(e.clone()), PullErrorKind::Limit("layers"));
        let over = StoreError::OverLimit {
            digest: "sha256:1".into(),
            exceeded: Box::new(limits.exceeded("entries", "tar entries", Value::Count(1 << 30))),
            note: "",
        };
        assert_eq!(kind(over), PullErrorKind::Limit("entries"));
        let mismatch = StoreError::DigestMismatch {
            digest: "sha256:1".into(),
            what: "blob",
            actual: "sha256:2".into(),
        };
        assert_eq!(kind(mismatch), PullErrorKind::Corrupt);
        let bad_json = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        assert_eq!(kind(bad_json), PullErrorKind::Corrupt);
        let missing = ArchiveError::Io {
            path: "/nonexistent".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(kind(missing), PullErrorKind::NotFound);
    }

    #[test]
    fn a_pull_error_reads_as_the_error_it_wraps() {
        let inner = anyhow::Error::from(StoreError::NoSuchImage("x".into()))
            .context("middle")
            .context("pulling x");
        let text = format!("{inner:#}");
        let causes: Vec<String> = inner.chain().map(|c| c.to_string()).collect();
        let wrapped = anyhow::Error::from(PullError {
            kind: kind_of(&inner),
            error: inner,
        });
        assert_eq!(format!("{wrapped:#}"), text);
        let wrapped_causes: Vec<String> = wrapped.chain().map(|c| c.to_string()).collect();
        assert_eq!(wrapped_causes, causes);
        let e = wrapped.downcast_ref::<PullError>().unwrap();
        assert_eq!(e.kind(), PullErrorKind::NotFound);
    }
}
