//! Pull: bring an image from a source into the store, layer by layer.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context;

use crate::archive;
use crate::reference::{ImageName, ImageRef};
use crate::store::{short_id, Store, StoredImage};

#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    pub image: StoredImage,
    pub layers_imported: usize,
    pub layers_present: usize,
    pub bytes_imported: u64,
    pub seconds: f64,
}

/// Pulls `source` into `store` under `name` (or the name the source gives).
/// Layers already in the store are not read again; the image becomes
/// visible only once every layer is committed.
pub fn pull(
    store: &Store,
    source: &ImageRef,
    name: Option<&ImageName>,
) -> anyhow::Result<PullReport> {
    let start = Instant::now();
    let image = archive::open(source)?;
    let name = match (name, &image.name) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => {
            let stem = source
                .path()
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "image".into());
            ImageName::parse(&stem)
                .with_context(|| format!("{source} names no image; pass --name NAME[:TAG]"))?
        }
    };
    let progress = std::io::stderr().is_terminal();
    let (mut imported, mut present, mut bytes) = (0, 0, 0);
    for (i, layer) in image.layers.iter().enumerate() {
        if store.has_layer(&layer.digest)? {
            present += 1;
            continue;
        }
        if progress {
            eprintln!(
                "Importing layer {}/{} {} ({:.1} MB)",
                i + 1,
                image.layers.len(),
                short_id(&layer.digest),
                layer.size as f64 / 1e6
            );
        }
        let blob = image.open_layer(layer)?;
        store
            .import_layer(&layer.digest, &layer.diff_id, layer.compression, blob)
            .with_context(|| format!("pulling {source}"))?;
        imported += 1;
        bytes += layer.size;
    }
    store.sync()?;
    let layers: Vec<String> = image.layers.iter().map(|l| l.digest.clone()).collect();
    let stored = store.commit_image(
        &name,
        &image.manifest_digest,
        &image.manifest_bytes,
        &image.config_bytes,
        &layers,
        &source.absolute().to_string(),
    )?;
    Ok(PullReport {
        image: stored,
        layers_imported: imported,
        layers_present: present,
        bytes_imported: bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}
