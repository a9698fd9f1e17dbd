//! The image builder's packing half: directories in, an OCI image out.
//!
//! `scripts/build-image --builder socle` assembles each layer's tree from an
//! image definition (busybox base, Debian packages, binaries with their
//! libraries, `exports/`) and hands the trees to `socle image pack`, which
//! writes them reproducibly: entries sorted by name, every mtime set to
//! `SOURCE_DATE_EPOCH`, owners kept as root sees them (root otherwise),
//! gzip without a timestamp, JSON with a fixed key order. The same trees
//! give the same layer, config and manifest digests on any machine.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::oci::{self, Platform};

/// What to pack.
#[derive(Debug, Clone, Default)]
pub struct PackSpec {
    /// One directory per layer, base first.
    pub layers: Vec<PathBuf>,
    /// What each layer is, for the image history (same length as `layers`
    /// or empty).
    pub layer_comments: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// `KEY=VALUE`
    pub labels: Vec<String>,
    pub working_dir: Option<String>,
    /// Seconds since the epoch for every mtime and the `created` field.
    pub epoch: i64,
}

/// Where the image goes: an OCI layout directory or a tar of one, and the
/// reference name it gets in the index.
#[derive(Debug, Clone)]
pub enum Output {
    Dir { path: PathBuf, reference: String },
    Archive { path: PathBuf, reference: String },
}

#[derive(Debug, serde::Serialize)]
pub struct PackReport {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<PackedLayer>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackedLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub entries: usize,
}

struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn digest(&self) -> String {
        oci::digest_of(&self.hasher.clone().finalize())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Every path under `root`, parents before children, siblings by byte order.
fn sorted_tree(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for n in names {
        let p = rel.join(&n);
        out.push(p.clone());
        if fs::symlink_metadata(root.join(&p))
            .with_context(|| format!("reading {}", root.join(&p).display()))?
            .is_dir()
        {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

/// Writes `dir` as a gzip-compressed tar layer into `blobs`, returning its
/// digests. Hardlinked files become tar hardlinks to their first path.
fn pack_layer(dir: &Path, blobs: &Path, epoch: i64) -> anyhow::Result<PackedLayer> {
    let keep_owners = rustix::process::geteuid().is_root();
    let tmp = tempfile::NamedTempFile::new_in(blobs)
        .with_context(|| format!("creating a temporary file in {}", blobs.display()))?;
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, tmp.reopen()?));
    // No name and mtime 0 in the gzip header: the bytes depend only on the tar.
    let gz = flate2::GzBuilder::new().write(compressed, flate2::Compression::default());
    let mut builder = tar::Builder::new(HashWriter::new(gz));
    builder.follow_symlinks(false);
    let mut first_path_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let entries = sorted_tree(dir)?;
    for rel in &entries {
        let full = dir.join(rel);
        let md =
            fs::symlink_metadata(&full).with_context(|| format!("reading {}", full.display()))?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(epoch.max(0) as u64);
        h.set_mode(md.permissions().mode() & 0o7777);
        let (uid, gid) = if keep_owners {
            (md.uid(), md.gid())
        } else {
            (0, 0)
        };
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_username("").ok();
        h.set_groupname("").ok();
        let ft = md.file_type();
        let err = |e: io::Error| anyhow::anyhow!("adding {} to the layer: {e}", full.display());
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            builder
                .append_data(&mut h, rel.join(""), io::empty())
                .map_err(err)?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&full).with_context(|| format!("reading {}", full.display()))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            builder.append_link(&mut h, rel, &target).map_err(err)?;
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            if md.nlink() > 1 {
                if let Some(first) = first_path_of.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    builder.append_link(&mut h, rel, first).map_err(err)?;
                    continue;
                }
                first_path_of.insert(key, rel.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let f = File::open(&full).with_context(|| format!("opening {}", full.display()))?;
            builder.append_data(&mut h, rel, f).map_err(err)?;
        } else {
            bail!(
                "{}: device nodes, fifos and sockets can't go into a layer (the store can't keep them)",
                full.display()
            );
        }
    }
    let tar_writer = builder.into_inner().context("finishing the layer tar")?;
    let diff_id = tar_writer.digest();
    let mut compressed = tar_writer.inner.finish().context("finishing gzip")?;
    compressed.flush()?;
    let digest = compressed.digest();
    let size = compressed.count;
    drop(compressed);
    let dest = blob_path(blobs, &digest);
    tmp.persist(&dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(PackedLayer {
        digest,
        diff_id,
        size,
        entries: entries.len(),
    })
}

fn blob_path(blobs: &Path, digest: &str) -> PathBuf {
    blobs.join(oci::digest_hex(digest))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> anyhow::Result<(String, u64)> {
    let digest = oci::sha256_digest(bytes);
    let path = blob_path(blobs, &digest);
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok((digest, bytes.len() as u64))
}

fn rfc3339(epoch: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Packs the layers and writes the image to `output`.
pub fn pack(spec: &PackSpec, output: &Output) -> anyhow::Result<PackReport> {
    if spec.layers.is_empty() {
        bail!("an image needs at least one layer (--layer DIR)");
    }
    for l in &spec.layers {
        if !l.is_dir() {
            bail!("layer {}: not a directory", l.display());
        }
    }
    let (layout, reference, archive) = match output {
        Output::Dir { path, reference } => (path.clone(), reference.clone(), None),
        Output::Archive { path, reference } => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                bail!("{}: no directory {}", path.display(), parent.display());
            }
            let tmp = tempfile::Builder::new()
                .prefix(".socle-pack-")
                .tempdir_in(parent)
                .with_context(|| format!("creating a work directory in {}", parent.display()))?;
            (
                tmp.path().to_path_buf(),
                reference.clone(),
                Some((tmp, path.clone())),
            )
        }
    };
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;

    let mut layers = Vec::new();
    for dir in &spec.layers {
        layers.push(
            pack_layer(dir, &blobs, spec.epoch)
                .with_context(|| format!("packing layer {}", dir.display()))?,
        );
    }
    let created = rfc3339(spec.epoch);
    let host = Platform::host();
    let mut config = json!({
        "created": created,
        "architecture": host.arch,
        "os": host.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        // Never the directory's name: builds from two temporary
        // directories must give the same config.
        "history": (0..spec.layers.len()).map(|i| json!({
            "created": created,
            "created_by": spec.layer_comments.get(i).cloned()
                .unwrap_or_else(|| format!("socle image pack: layer {}", i + 1)),
        })).collect::<Vec<_>>(),
    });
    let c = &mut config["config"];
    if !spec.env.is_empty() {
        c["Env"] = json!(spec.env);
    }
    if !spec.entrypoint.is_empty() {
        c["Entrypoint"] = json!(spec.entrypoint);
    }
    if !spec.cmd.is_empty() {
        c["Cmd"] = json!(spec.cmd);
    }
    if let Some(w) = &spec.working_dir {
        c["WorkingDir"] = json!(w);
    }
    if !spec.labels.is_empty() {
        let mut labels = serde_json::Map::new();
        for l in &spec.labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("label {l:?}: expected KEY=VALUE"))?;
            labels.insert(k.to_string(), json!(v));
        }
        c["Labels"] = serde_json::Value::Object(labels);
    }
    let (config_digest, config_size) = write_blob(&blobs, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "config": {
            "mediaType": oci::OCI_CONFIG,
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": oci::Compression::Gzip.layer_media_type(),
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = write_blob(&blobs, &serde_json::to_vec(&manifest)?)?;

    // The index: keep other references of an existing layout directory.
    let index_path = layout.join("index.json");
    let mut entries: Vec<serde_json::Value> = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .with_context(|| format!("{} is not valid JSON", index_path.display()))?
            .get("manifests")
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    entries.retain(|e| {
        e.get("annotations")
            .and_then(|a| a.get(oci::ANNOTATION_REF_NAME))
            .and_then(|r| r.as_str())
            != Some(reference.as_str())
    });
    entries.push(json!({
        "mediaType": oci::OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {(oci::ANNOTATION_REF_NAME): reference},
    }));
    let index = json!({"schemaVersion": 2, "manifests": entries});
    fs::write(&index_path, serde_json::to_vec(&index)?)
        .with_context(|| format!("writing {}", index_path.display()))?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .with_context(|| format!("writing {}/oci-layout", layout.display()))?;

    if let Some((tmp, path)) = archive {
        write_archive(tmp.path(), &path, spec.epoch)?;
    }
    Ok(PackReport {
        manifest_digest,
        config_digest,
        layers,
    })
}

/// Tars an OCI layout reproducibly (sorted, fixed mtimes, root owners) and
/// renames it into place.
fn write_archive(layout: &Path, dest: &Path, epoch: i64) -> anyhow::Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp.reopen()?));
    for rel in sorted_tree(layout)? {
        let full = layout.join(&rel);
        let md = fs::symlink_metadata(&full)?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(epoch.max(0) as u64);
        h.set_uid(0);
        h.set_gid(0);
        if md.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            builder.append_data(&mut h, rel.join(""), io::empty())?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(md.len());
            builder.append_data(&mut h, &rel, File::open(&full)?)?;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", dest.display()))?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/b"), b"bee").unwrap();
        fs::write(root.join("usr/bin/a"), b"ay").unwrap();
        fs::hard_link(root.join("usr/bin/a"), root.join("usr/bin/a2")).unwrap();
        std::os::unix::fs::symlink("b", root.join("usr/bin/c")).unwrap();
    }

    #[test]
    fn packing_twice_gives_the_same_digests() {
        let d = tempfile::tempdir().unwrap();
        let (one, two) = (d.path().join("one"), d.path().join("two"));
        tree(&one);
        // Same content, created in another order and at another time.
        fs::create_dir_all(two.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("b", two.join("usr/bin/c")).unwrap();
        fs::write(two.join("usr/bin/a"), b"ay").unwrap();
        fs::hard_link(two.join("usr/bin/a"), two.join("usr/bin/a2")).unwrap();
        fs::write(two.join("usr/bin/b"), b"bee").unwrap();
        let spec = |l: &Path| PackSpec {
            layers: vec![l.to_path_buf()],
            cmd: vec!["/usr/bin/b".into()],
            labels: vec!["version=1".into()],
            epoch: 1_700_000_000,
            ..Default::default()
        };
        let a = pack(
            &spec(&one),
            &Output::Archive {
                path: d.path().join("a.tar"),
                reference: "1".into(),
            },
        )
        .unwrap();
        let b = pack(
            &spec(&two),
            &Output::Archive {
                path: d.path().join("b.tar"),
                reference: "1".into(),
            },
        )
        .unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.layers[0].entries, 6);
        assert_eq!(
            fs::read(d.path().join("a.tar")).unwrap(),
            fs::read(d.path().join("b.tar")).unwrap()
        );
        // And the store reads what it wrote, hardlink and symlink included.
        let store = crate::store::Store::open(&d.path().join("repo")).unwrap();
        let image = crate::archive::open(
            &crate::reference::ImageRef::OciArchive {
                path: d.path().join("a.tar"),
                reference: Some("1".into()),
            },
            crate::limits::Limits::default().json_size,
        )
        .unwrap();
        let l = &image.layers[0];
        store
            .import_layer(
                &l.digest,
                &l.diff_id,
                l.compression,
                image.open_layer(l).unwrap(),
            )
            .unwrap();
    }
}
