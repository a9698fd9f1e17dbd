//! Pull: bring an image from a source (a registry or a local layout or
//! archive) into the store. Layers stream straight into ostree objects,
//! several at a time; a layer already in the store is not fetched; the image
//! becomes visible only once every layer is committed, so an interrupted
//! pull leaves finished layers for the next one and no half image.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;

use crate::archive::{self, LocalImage};
use crate::failpoint::failpoint;
use crate::limits::{ImageBudget, Limits, Value};
use crate::oci::Compression;
use crate::progress::{Progress, Quiet};
use crate::reference::{ImageName, ImageRef};
use crate::registry::{self, RemoteImage};
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

/// Pulls `source` into `store`. Layers already in the store are not read
/// again; the image becomes visible only once every layer is committed.
pub fn pull(store: &Store, source: &ImageRef, opts: &PullOptions) -> anyhow::Result<PullReport> {
    let result = pull_inner(store, source, opts).map_err(|e| {
        // ostree and the kernel say ENOSPC about an object; say where.
        if format!("{e:#}").contains("No space left on device") {
            e.context(format!(
                "the file system of the store ({}) is full; the store is as it was: free space there (`socle images prune` removes what no image or deployment uses) and pull again",
                store.path().display()
            ))
        } else {
            e
        }
    });
    opts.progress.finish();
    result.with_context(|| format!("pulling {source}"))
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
            return Err(StoreError::Refused {
                digest: l.digest.clone(),
                message: format!("{e} (nothing was downloaded)"),
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
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    let committed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let progress = opts.progress;
    let repo_path = store.path().to_path_buf();
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, todo.len()) {
            s.spawn(|| {
                let fail = |e: anyhow::Error| {
                    cancel.store(true, Ordering::Relaxed);
                    errors.lock().expect("errors lock").push(e);
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
        .position(|e| !format!("{e:#}").ends_with("cancelled"))
        .unwrap_or(0);
    let error = errors.swap_remove(first);
    // Layers that arrived whole and verified are kept, so pulling again
    // fetches only the rest; but a source that served damaged data, or an
    // image with a layer socle refuses to apply, gets nothing of this pull
    // into the store.
    let committed = committed.into_inner().expect("committed lock");
    let damaged = matches!(
        error.downcast_ref::<StoreError>(),
        Some(StoreError::DigestMismatch { .. } | StoreError::Refused { .. })
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
