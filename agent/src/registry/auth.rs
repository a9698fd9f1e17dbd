//! Registry credentials and the WWW-Authenticate challenge.
//!
//! Credentials come from `--creds`, else from the files podman, skopeo and
//! docker log in to, in containers/image's order. All of them share docker's
//! `{"auths": {KEY: {"auth": base64(user:pass)}}}` format, so one small
//! reader covers them; the `docker_credential` crate reads only docker's
//! file. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from, for messages (never the secret itself).
    pub origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.username, self.origin)
    }
}

impl Credentials {
    /// `USER:PASS` as given to `--creds`.
    pub fn from_flag(s: &str) -> anyhow::Result<Credentials> {
        let (username, password) = s.split_once(':').context("--creds takes USER:PASSWORD")?;
        if username.is_empty() {
            anyhow::bail!("--creds takes USER:PASSWORD (the user is empty)");
        }
        Ok(Credentials {
            username: username.into(),
            password: password.into(),
            origin: "--creds".into(),
        })
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The auth files to read, in order: an explicit file replaces the search.
pub fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => out.push(PathBuf::from(d).join("containers/auth.json")),
        None => out.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            rustix::process::geteuid().as_raw()
        ))),
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        out.push(home.join(".config/containers/auth.json"));
        match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => out.push(PathBuf::from(d).join("config.json")),
            None => out.push(home.join(".docker/config.json")),
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://index.docker.io/v1/` → `docker.io`; `host:5000/` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let k = k.replace("index.docker.io", "docker.io");
    k.replace("registry-1.docker.io", "docker.io")
}

/// Credentials for `registry/repository` from the first file that has an
/// entry for it; within a file the longest matching key (a repository
/// namespace, then the registry) wins.
pub fn lookup(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> anyhow::Result<Option<Credentials>> {
    let full = format!("{registry}/{repository}");
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: AuthFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid auth file", path.display()))?;
        let best = file
            .auths
            .iter()
            .filter_map(|(k, v)| {
                let key = normalize_key(k);
                let hit = key == registry
                    || full == key
                    || full
                        .strip_prefix(&key)
                        .is_some_and(|rest| rest.starts_with('/'));
                hit.then_some((key.len(), k, v))
            })
            .max_by_key(|(len, _, _)| *len);
        let Some((_, key, entry)) = best else {
            continue;
        };
        let origin = format!("{} ({key})", path.display());
        let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
            (Some(a), _, _) if !a.is_empty() => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .with_context(|| {
                        format!("{origin}: \"auth\" is not base64 of USER:PASSWORD")
                    })?;
                let (u, p) = raw
                    .split_once(':')
                    .with_context(|| format!("{origin}: \"auth\" is not USER:PASSWORD"))?;
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u.clone(), p.clone()),
            _ => continue,
        };
        return Ok(Some(Credentials {
            username,
            password,
            origin,
        }));
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            }),
            _ => None,
        }
    }
}

/// `k="v", k2=v2` (values may be quoted and contain commas).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/etcd:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/etcd:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="socle-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn auth_files_in_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("ann:s3cret");
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                   "reg.local:5000/team":{{"username":"bob","password":"pw-never-shown"}}}},
                   "credsStore":"desktop"}}"#
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), docker];
        let hub = lookup(&files, "docker.io", "library/etcd")
            .unwrap()
            .unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("ann", "s3cret")
        );
        let team = lookup(&files, "reg.local:5000", "team/etcd")
            .unwrap()
            .unwrap();
        assert_eq!(team.username, "bob");
        assert!(lookup(&files, "reg.local:5000", "other/etcd")
            .unwrap()
            .is_none());
        // The Debug text holds the auth file's (random) path: the password
        // is one no temporary name can contain.
        let shown = format!("{team:?}");
        assert!(
            shown.contains("bob") && !shown.contains("pw-never-shown"),
            "{shown}"
        );
    }

    #[test]
    fn creds_flag() {
        let c = Credentials::from_flag("u:p:q").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:q"));
        assert!(Credentials::from_flag("nocolon").is_err());
    }
}
