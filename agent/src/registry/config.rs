//! Which registries to ask: the containers `registries.conf` format (v2),
//! read from `/etc/socle/registries.toml` when socle has its own, else from
//! `/etc/containers/registries.conf` so a node configured for podman or
//! skopeo pulls the same way.
//!
//! Supported: `unqualified-search-registries`, and `[[registry]]` tables
//! with `prefix`, `location`, `insecure`, `blocked` and `[[registry.mirror]]`
//! (`location`, `insecure`). Drop-in directories and short-name aliases are
//! not read.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::reference::DockerRef;

pub const SOCLE_CONF: &str = "/etc/socle/registries.toml";
pub const CONTAINERS_CONF: &str = "/etc/containers/registries.conf";

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConf {
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
    /// The file it came from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One place to try for an image: a registry host and the repository path
/// there, and whether plain HTTP or an unverified certificate is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub registry: String,
    pub repository: String,
    pub insecure: bool,
    pub mirror: bool,
}

impl RegistriesConf {
    /// Reads `path` if given, else the first of socle's and containers'
    /// files that exists; no file is an empty configuration.
    pub fn load(path: Option<&Path>) -> anyhow::Result<RegistriesConf> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => [SOCLE_CONF, CONTAINERS_CONF]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(RegistriesConf::default());
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading registries configuration {}", path.display()))?;
        let mut conf: RegistriesConf = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid registries.conf (TOML, containers format v2)",
                path.display()
            )
        })?;
        conf.path = Some(path);
        Ok(conf)
    }

    pub fn describe(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{SOCLE_CONF} or {CONTAINERS_CONF} (neither exists)"))
    }

    /// The `[[registry]]` whose prefix matches `repo` (`host/path`) the
    /// longest; a prefix matches whole path components only.
    fn entry_for(&self, repo: &str) -> Option<&RegistryEntry> {
        self.registry
            .iter()
            .filter_map(|e| {
                let prefix = e.prefix.as_deref().or(e.location.as_deref())?;
                let prefix = prefix.trim_end_matches('/');
                let matches = repo == prefix
                    || repo
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'));
                matches.then_some((prefix.len(), e))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, e)| e)
    }

    /// Where to look for a qualified reference, in order: mirrors first,
    /// then the registry itself (or its configured `location`).
    pub fn endpoints(&self, r: &DockerRef, insecure_flag: bool) -> anyhow::Result<Vec<Endpoint>> {
        let registry = r
            .registry
            .as_deref()
            .context("endpoints of an unqualified reference")?;
        let full = r.full_repository();
        let Some(entry) = self.entry_for(&full) else {
            return Ok(vec![Endpoint {
                registry: registry.to_string(),
                repository: r.repository.clone(),
                insecure: insecure_flag,
                mirror: false,
            }]);
        };
        if entry.blocked {
            anyhow::bail!(
                "registry {registry} is blocked for {full} by {}",
                self.describe()
            );
        }
        let prefix = entry
            .prefix
            .as_deref()
            .or(entry.location.as_deref())
            .unwrap_or(registry)
            .trim_end_matches('/');
        // The part of the repository under the prefix moves with it.
        let rest = &full[prefix.len()..];
        let rewrite = |location: &str, insecure: bool, mirror: bool| {
            let target = format!("{}{rest}", location.trim_end_matches('/'));
            let (host, repo) = target.split_once('/').unwrap_or((&target, ""));
            Endpoint {
                registry: host.to_string(),
                repository: if host == "docker.io" && !repo.contains('/') {
                    format!("library/{repo}")
                } else {
                    repo.to_string()
                },
                insecure: insecure || insecure_flag,
                mirror,
            }
        };
        let mut out: Vec<Endpoint> = entry
            .mirror
            .iter()
            .map(|m| rewrite(&m.location, m.insecure, true))
            .collect();
        out.push(rewrite(
            entry.location.as_deref().unwrap_or(prefix),
            entry.insecure,
            false,
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        toml::from_str(text).unwrap()
    }

    fn r(s: &str) -> DockerRef {
        DockerRef::parse(s).unwrap()
    }

    #[test]
    fn unconfigured_registry_is_asked_directly() {
        let e = RegistriesConf::default()
            .endpoints(&r("quay.io/coreos/etcd:3.5"), false)
            .unwrap();
        assert_eq!(
            e,
            vec![Endpoint {
                registry: "quay.io".into(),
                repository: "coreos/etcd".into(),
                insecure: false,
                mirror: false
            }]
        );
    }

    #[test]
    fn mirrors_come_first_and_prefixes_rewrite() {
        let c = conf(
            r#"
unqualified-search-registries = ["registry.local:5000", "docker.io"]

[[registry]]
prefix = "quay.io/coreos"
location = "registry.local:5000/upstream/coreos"
insecure = true

[[registry.mirror]]
location = "mirror.local/coreos"

[[registry]]
location = "bad.example"
blocked = true
"#,
        );
        assert_eq!(c.unqualified_search_registries.len(), 2);
        let e = c.endpoints(&r("quay.io/coreos/etcd:3.5"), false).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].registry.as_str(), e[0].mirror),
            ("mirror.local", true)
        );
        assert_eq!(e[0].repository, "coreos/etcd");
        assert_eq!(e[1].registry, "registry.local:5000");
        assert_eq!(e[1].repository, "upstream/coreos/etcd");
        assert!(e[1].insecure);
        // A prefix matches whole components only.
        let other = c.endpoints(&r("quay.io/coreosx/etcd"), false).unwrap();
        assert_eq!(other[0].registry, "quay.io");
        let err = c.endpoints(&r("bad.example/x"), false).unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
    }
}
