//! Images in registries: which registry to ask (`config`), with which
//! credentials (`auth`), over the OCI distribution API (`client`), and which
//! manifest of an index fits this host (`resolve`).

pub mod auth;
pub mod client;
pub mod config;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::oci::{self, is_index, media_type_of, sha256_digest, Compression, Platform};
use crate::reference::{DockerRef, ImageName};
pub use auth::Credentials;
pub use client::{BlobReader, Client, RegistryError};
use config::{Endpoint, RegistriesConf};

/// Why a registry image was refused, beyond what the client reports.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A manifest or config that does not hash to its digest, or that
    /// disagrees with itself.
    #[error("{0}")]
    Corrupt(String),
    /// A manifest, platform or layer type socle does not read.
    #[error("{0}")]
    Unsupported(String),
    /// No registry tried had the image; each attempt's error is kept.
    #[error("{message}")]
    Nowhere {
        message: String,
        attempts: Vec<anyhow::Error>,
    },
}

/// How to reach registries, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `os/arch[/variant]`; the host's by default.
    pub platform: Option<String>,
    pub creds: Option<Credentials>,
    pub authfile: Option<PathBuf>,
    /// `false` allows plain HTTP and unverified certificates for every
    /// registry of this pull.
    pub insecure: bool,
    pub registries_conf: Option<PathBuf>,
}

/// One layer of a remote image.
#[derive(Debug, Clone)]
pub struct RemoteLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub compression: Compression,
}

/// A registry image with everything but its layer bytes fetched and checked.
pub struct RemoteImage {
    /// The fully qualified reference it resolved to.
    pub reference: DockerRef,
    pub name: ImageName,
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<RemoteLayer>,
    /// Things the user should know (an unqualified name resolved, a mirror
    /// used, a platform mismatch).
    pub notes: Vec<String>,
    client: Client,
}

impl RemoteImage {
    pub fn open_layer<'a>(&'a self, layer: &RemoteLayer, cancel: &'a AtomicBool) -> BlobReader<'a> {
        self.client.blob(&layer.digest, layer.size, cancel)
    }

    /// `host[:port]` the bytes come from (a mirror, possibly).
    pub fn registry(&self) -> &str {
        &self.client.registry
    }
}

/// Finds the image a reference names: through the search list for an
/// unqualified name, through mirrors for a configured registry.
/// Manifests, indexes and configs over `json_limit` bytes are refused.
pub fn resolve(r: &DockerRef, opts: &Options, json_limit: u64) -> anyhow::Result<RemoteImage> {
    let conf = RegistriesConf::load(opts.registries_conf.as_deref())?;
    let candidates: Vec<DockerRef> = match &r.registry {
        Some(_) => vec![r.clone()],
        None => {
            if conf.unqualified_search_registries.is_empty() {
                anyhow::bail!(
                    "{} names no registry and no unqualified-search-registries are set in {}; \
                     write REGISTRY/{}, e.g. docker.io/library/{}",
                    r,
                    conf.describe(),
                    r,
                    r
                );
            }
            conf.unqualified_search_registries
                .iter()
                .map(|reg| r.in_registry(reg))
                .collect()
        }
    };
    let mut attempts: Vec<(String, anyhow::Error)> = Vec::new();
    for candidate in &candidates {
        let endpoints = conf.endpoints(candidate, opts.insecure)?;
        for ep in &endpoints {
            match open(candidate, ep, opts, json_limit) {
                Ok(mut image) => {
                    if r.registry.is_none() {
                        image.notes.insert(
                            0,
                            format!(
                                "{r} resolved to {candidate} (unqualified-search-registries in {})",
                                conf.describe()
                            ),
                        );
                    }
                    if ep.mirror {
                        image.notes.push(format!(
                            "pulled {candidate} from the mirror {}",
                            ep.registry
                        ));
                    }
                    for (where_, e) in &attempts {
                        image.notes.push(format!("{where_}: {e:#}"));
                    }
                    return Ok(image);
                }
                Err(e) => attempts.push((format!("{}/{}", ep.registry, ep.repository), e)),
            }
        }
    }
    if attempts.len() == 1 {
        let (_, e) = attempts.pop().expect("one attempt");
        return Err(e);
    }
    let tried: Vec<String> = attempts
        .iter()
        .map(|(w, e)| format!("{w}: {e:#}"))
        .collect();
    Err(ResolveError::Nowhere {
        message: format!(
            "{r} was not found anywhere it was looked for: {}",
            tried.join("; ")
        ),
        attempts: attempts.into_iter().map(|(_, e)| e).collect(),
    }
    .into())
}

fn open(
    r: &DockerRef,
    ep: &Endpoint,
    opts: &Options,
    json_limit: u64,
) -> anyhow::Result<RemoteImage> {
    let creds = match &opts.creds {
        Some(c) => Some(c.clone()),
        None => auth::lookup(
            &auth::auth_files(opts.authfile.as_deref()),
            &ep.registry,
            &ep.repository,
        )?,
    };
    let client = Client::connect(&ep.registry, &ep.repository, ep.insecure, creds)?
        .with_json_limit(json_limit);
    let reference = r.manifest_reference();
    let (bytes, header) = client.manifest(&reference)?;
    let mut notes = Vec::new();
    let mut digest = sha256_digest(&bytes);
    if reference.starts_with("sha256:") && digest != reference {
        return Err(ResolveError::Corrupt(format!(
            "{r}: the manifest {} served hashes to {digest}, not the digest asked for",
            client.registry
        ))
        .into());
    }
    let mut media_type = media_type_of(&bytes, header);
    let mut manifest_bytes = bytes;
    if is_index(&media_type) {
        let chosen = index_choice(r, &manifest_bytes, opts.platform.as_deref())?;
        let (bytes, header) = client.manifest(&chosen)?;
        digest = sha256_digest(&bytes);
        if digest != chosen {
            return Err(ResolveError::Corrupt(format!(
                "{r}: the manifest {} served for {chosen} hashes to {digest}",
                client.registry
            ))
            .into());
        }
        media_type = media_type_of(&bytes, header);
        manifest_bytes = bytes;
    }
    let manifest = parse_manifest(r, &media_type, &manifest_bytes)?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = client.small_blob(&config_digest, &format!("config {config_digest}"))?;
    if sha256_digest(&config_bytes) != config_digest {
        return Err(ResolveError::Corrupt(format!(
            "{r}: config {config_digest}: digest mismatch: {} served bytes that hash to {}",
            client.registry,
            sha256_digest(&config_bytes)
        ))
        .into());
    }
    let (layers, note) = image_layers(r, &manifest, &config_bytes, opts.platform.as_deref())?;
    notes.extend(note);
    Ok(RemoteImage {
        reference: r.clone(),
        name: r.image_name(),
        manifest_digest: digest,
        manifest_bytes,
        config_bytes,
        layers,
        notes,
        client,
    })
}

/// The digest of the manifest an index offers for the wanted platform.
/// Pure parsing, as the fuzz target `manifest` calls it.
pub fn index_choice(r: &DockerRef, bytes: &[u8], platform: Option<&str>) -> anyhow::Result<String> {
    let index: ImageIndex = serde_json::from_slice(bytes)
        .with_context(|| format!("{r}: the image index is not valid JSON"))?;
    choose_platform(&index, platform).with_context(|| format!("{r}"))
}

/// A manifest of a media type socle reads, parsed.
pub fn parse_manifest(
    r: &DockerRef,
    media_type: &str,
    bytes: &[u8],
) -> anyhow::Result<ImageManifest> {
    match media_type {
        oci::OCI_MANIFEST | oci::DOCKER_MANIFEST => {}
        oci::DOCKER_SCHEMA1 | oci::DOCKER_SCHEMA1_SIGNED => {
            return Err(ResolveError::Unsupported(format!(
                "{r} is a Docker schema 1 image, which socle does not read; push it again with a current tool (skopeo copy converts it)"
            ))
            .into())
        }
        other => {
            return Err(ResolveError::Unsupported(format!(
                "{r}: unsupported manifest media type {other:?}"
            ))
            .into())
        }
    }
    serde_json::from_slice(bytes)
        .with_context(|| format!("{r}: the manifest is not a valid image manifest"))
}

/// The layers of a manifest, checked against its (verified) config: one
/// diff_id per layer, a compression socle unpacks; and a note when the
/// image is built for another platform than the wanted one.
pub fn image_layers(
    r: &DockerRef,
    manifest: &ImageManifest,
    config_bytes: &[u8],
    platform: Option<&str>,
) -> anyhow::Result<(Vec<RemoteLayer>, Option<String>)> {
    let config_digest = manifest.config().digest();
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .with_context(|| format!("{r}: config {config_digest} is not a valid image config"))?;
    let want = Platform::wanted(platform).map_err(anyhow::Error::msg)?;
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    let note =
        ((os.as_str(), arch.as_str()) != (want.os.as_str(), want.arch.as_str())).then(|| {
            format!(
                "{r} is built for {os}/{arch}, not {}/{}; it may not run here",
                want.os, want.arch
            )
        });
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ResolveError::Corrupt(format!(
            "{r}: the manifest has {} layers but the config lists {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        ))
        .into());
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            let compression = Compression::from_media_type(l.media_type()).ok_or_else(|| {
                ResolveError::Unsupported(format!(
                    "{r}: layer {} has media type {}, which socle cannot unpack",
                    l.digest(),
                    l.media_type()
                ))
            })?;
            Ok(RemoteLayer {
                digest: l.digest().to_string(),
                diff_id: diff_id.clone(),
                size: l.size(),
                compression,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((layers, note))
}

/// The digest of the index entry for the wanted platform; an error lists
/// what the index offers.
fn choose_platform(index: &ImageIndex, flag: Option<&str>) -> anyhow::Result<String> {
    let want = Platform::wanted(flag).map_err(anyhow::Error::msg)?;
    if let Some(d) = want.choose(index.manifests()) {
        return Ok(d.digest().to_string());
    }
    let available: Vec<String> = index.manifests().iter().filter_map(oci::describe).collect();
    Err(ResolveError::Unsupported(format!(
        "no manifest for platform {want} in the image index; available: {} (choose one with --platform)",
        if available.is_empty() {
            "none named".to_string()
        } else {
            available.join(", ")
        }
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[&str]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let parts: Vec<&str> = p.split('/').collect();
                let mut plat = serde_json::json!({"os": parts[0], "architecture": parts[1]});
                if let Some(v) = parts.get(2) {
                    plat["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 100,
                    "platform": plat,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn platform_selection_names_what_is_there() {
        let idx = index(&["linux/arm64/v8", "linux/s390x", "linux/arm/v7"]);
        let d = choose_platform(&idx, Some("linux/s390x")).unwrap();
        assert_eq!(d, format!("sha256:{}", "1".repeat(64)));
        assert_eq!(
            choose_platform(&idx, Some("linux/arm/v7")).unwrap(),
            format!("sha256:{}", "2".repeat(64))
        );
        let e = choose_platform(&idx, Some("linux/amd64"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no manifest for platform linux/amd64"), "{e}");
        assert!(
            e.contains("linux/arm64/v8, linux/s390x, linux/arm/v7"),
            "{e}"
        );
        assert!(choose_platform(&idx, Some("arm64")).is_err());
    }
}
