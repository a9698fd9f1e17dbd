//! The `/exports` contract of a system-container image, read from a checked-out rootfs.
//!
//! Everything here comes from the image, so nothing is followed out of the
//! rootfs: a symlinked `exports`, template or `hostfs` would otherwise make
//! socle read (and later install) files of the host instead of the image.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: invalid manifest at line {line}, column {column}: {message}")]
    Manifest {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: is a symlink; the image contract files must be regular files and directories inside the image")]
    Symlink { path: PathBuf },
    #[error("{path}: is a symlink with {why} ({}); a link in exports/hostfs must name a regular file of exports/hostfs, since socle never follows a link from an image onto the host", target.display())]
    HostfsLink {
        path: PathBuf,
        target: PathBuf,
        why: String,
    },
    #[error("{path}: expected a {expected}")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
}

/// `/exports/manifest.json`, with atomic's keys and socle's additions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportsManifest {
    #[serde(default, deserialize_with = "optional_scalar")]
    pub version: Option<String>,
    /// Defaults of the template variables; the lowest precedence.
    #[serde(default, deserialize_with = "scalar_map")]
    pub default_values: BTreeMap<String, String>,
    /// Host path (as under `hostfs`, with a leading `/`) → destination template.
    #[serde(default)]
    pub rename_files: BTreeMap<String, String>,
    /// Host paths whose content is rendered as a template when installed.
    #[serde(default)]
    pub installed_files_template: Vec<String>,
    #[serde(default)]
    pub no_container_service: bool,
    #[serde(default = "yes")]
    pub use_links: bool,
    /// socle's health probe, parsed by the daemon.
    #[serde(default)]
    pub health_check: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

impl Default for ExportsManifest {
    fn default() -> Self {
        ExportsManifest {
            version: None,
            default_values: BTreeMap::new(),
            rename_files: BTreeMap::new(),
            installed_files_template: Vec::new(),
            no_container_service: false,
            use_links: true,
            health_check: None,
        }
    }
}

/// A JSON scalar as the string Python's `str()` would have put in the template,
/// except that booleans are spelled the JSON way (`true`), which is what
/// every file these values end up in expects.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn optional_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.0))
}

impl ExportsManifest {
    /// Parses manifest text; `path` labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ExportsError> {
        serde_json::from_str(text).map_err(|e| ExportsError::Manifest {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// What an image exports, read once after checkout.
#[derive(Debug, Clone, PartialEq)]
pub struct Exports {
    /// `ROOTFS/exports`.
    pub dir: PathBuf,
    /// The parsed `manifest.json`, or the defaults when the image has none.
    pub manifest: ExportsManifest,
    /// A literal `config.json`: atomic used it as-is, in preference to the template.
    pub config_json: Option<String>,
    pub config_template: Option<String>,
    pub service_template: Option<String>,
    pub tmpfiles_template: Option<String>,
    /// `ROOTFS/exports/hostfs`, when present.
    pub hostfs: Option<PathBuf>,
}

/// What `path` is, without following a symlink.
enum Kind {
    Missing,
    File,
    Dir,
}

fn kind(path: &Path) -> Result<Kind, ExportsError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Kind::Missing),
        Err(source) => Err(ExportsError::Read {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if m.file_type().is_symlink() => Err(ExportsError::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(m) if m.is_dir() => Ok(Kind::Dir),
        Ok(m) if m.is_file() => Ok(Kind::File),
        Ok(_) => Err(ExportsError::WrongType {
            path: path.to_path_buf(),
            expected: "regular file or directory",
        }),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ExportsError> {
    match kind(path)? {
        Kind::Missing => Ok(None),
        Kind::Dir => Err(ExportsError::WrongType {
            path: path.to_path_buf(),
            expected: "regular file",
        }),
        Kind::File => {
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|source| ExportsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
        }
    }
}

/// Reads `ROOTFS/exports`; `Ok(None)` when the image has no `/exports`.
pub fn read(rootfs: &Path) -> Result<Option<Exports>, ExportsError> {
    let dir = rootfs.join("exports");
    match kind(&dir)? {
        Kind::Missing => return Ok(None),
        Kind::File => {
            return Err(ExportsError::WrongType {
                path: dir,
                expected: "directory",
            })
        }
        Kind::Dir => {}
    }
    let manifest_path = dir.join("manifest.json");
    let manifest = match read_optional(&manifest_path)? {
        Some(text) => ExportsManifest::parse(&text, &manifest_path)?,
        None => ExportsManifest::default(),
    };
    let hostfs_path = dir.join("hostfs");
    let hostfs = match kind(&hostfs_path)? {
        Kind::Missing => None,
        Kind::Dir => Some(hostfs_path),
        Kind::File => {
            return Err(ExportsError::WrongType {
                path: hostfs_path,
                expected: "directory",
            })
        }
    };
    Ok(Some(Exports {
        config_json: read_optional(&dir.join("config.json"))?,
        config_template: read_optional(&dir.join("config.json.template"))?,
        service_template: read_optional(&dir.join("service.template"))?,
        tmpfiles_template: read_optional(&dir.join("tmpfiles.template"))?,
        manifest,
        hostfs,
        dir,
    }))
}

impl Exports {
    /// Paths, relative to `hostfs`, of its regular files and symlinks, sorted.
    /// Directories are implied by their content; other file types are skipped.
    pub fn hostfs_files(&self) -> Result<Vec<PathBuf>, ExportsError> {
        let mut out = Vec::new();
        if let Some(root) = &self.hostfs {
            walk(root, Path::new(""), &mut out)?;
        }
        out.sort();
        Ok(out)
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), ExportsError> {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(|source| ExportsError::Read {
        path: dir.clone(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ExportsError::Read {
            path: dir.clone(),
            source,
        })?;
        let file_type = entry.file_type().map_err(|source| ExportsError::Read {
            path: entry.path(),
            source,
        })?;
        let child = rel.join(entry.file_name());
        if file_type.is_dir() {
            walk(root, &child, out)?;
        } else if file_type.is_symlink() {
            check_hostfs_link(root, &child)?;
            out.push(child);
        } else if file_type.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

/// A symlink of `hostfs` is installed as the file it names, so it must name
/// a regular file of `hostfs` itself: followed on the host, an absolute or
/// `..` target would copy a host file (a secret) into a file the image
/// chose. The target is resolved lexically from the link's directory; every
/// component on the way must be a real directory, and the last one a
/// regular file.
fn check_hostfs_link(root: &Path, rel: &Path) -> Result<(), ExportsError> {
    let link = root.join(rel);
    let refuse = |target: &Path, why: &str| ExportsError::HostfsLink {
        path: link.clone(),
        target: target.to_path_buf(),
        why: why.to_string(),
    };
    let target = std::fs::read_link(&link).map_err(|source| ExportsError::Read {
        path: link.clone(),
        source,
    })?;
    if target.is_absolute() {
        return Err(refuse(&target, "an absolute target"));
    }
    let mut resolved: Vec<&std::ffi::OsStr> =
        rel.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for component in target.components() {
        match component {
            std::path::Component::Normal(c) => resolved.push(c),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if resolved.pop().is_none() {
                    return Err(refuse(&target, "a target outside exports/hostfs"));
                }
            }
            _ => return Err(refuse(&target, "an absolute target")),
        }
    }
    let mut path = root.to_path_buf();
    for (i, c) in resolved.iter().enumerate() {
        path.push(c);
        let last = i + 1 == resolved.len();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if last && m.is_file() => return Ok(()),
            Ok(m) if !last && m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(&target, "a target through another symlink"))
            }
            _ => break,
        }
    }
    Err(refuse(
        &target,
        "a target that is not a regular file of exports/hostfs",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    #[test]
    fn no_exports_is_none() {
        let dir = rootfs_with(&[("usr/bin/x", "")]);
        assert!(read(dir.path()).unwrap().is_none());
    }

    #[test]
    fn reads_manifest_and_templates() {
        let dir = rootfs_with(&[
            (
                "exports/manifest.json",
                r#"{
                    "version": "1.0",
                    "defaultValues": {"PORT": 8081, "DEBUG": true, "RATIO": 0.5, "NAME2": "x"},
                    "renameFiles": {"/etc/a.conf": "/etc/$NAME.conf"},
                    "installedFilesTemplate": ["/etc/a.conf"],
                    "noContainerService": false,
                    "somethingElse": [1, 2],
                    "healthCheck": {"http": "http://127.0.0.1:$PORT/"}
                }"#,
            ),
            ("exports/config.json.template", "{}"),
            ("exports/service.template", "[Unit]\n"),
            ("exports/hostfs/etc/a.conf", "x"),
        ]);
        let e = read(dir.path()).unwrap().unwrap();
        assert_eq!(e.dir, dir.path().join("exports"));
        let m = &e.manifest;
        assert_eq!(m.version.as_deref(), Some("1.0"));
        assert_eq!(m.default_values["PORT"], "8081");
        assert_eq!(m.default_values["DEBUG"], "true");
        assert_eq!(m.default_values["RATIO"], "0.5");
        assert_eq!(m.rename_files["/etc/a.conf"], "/etc/$NAME.conf");
        assert_eq!(m.installed_files_template, vec!["/etc/a.conf"]);
        assert!(!m.no_container_service);
        assert!(m.use_links);
        assert!(m.health_check.is_some());
        assert_eq!(e.config_template.as_deref(), Some("{}"));
        assert_eq!(e.service_template.as_deref(), Some("[Unit]\n"));
        assert_eq!(e.tmpfiles_template, None);
        assert_eq!(e.config_json, None);
        assert_eq!(e.hostfs, Some(dir.path().join("exports/hostfs")));
    }

    #[test]
    fn missing_manifest_means_defaults() {
        let dir = rootfs_with(&[("exports/service.template", "")]);
        let e = read(dir.path()).unwrap().unwrap();
        assert_eq!(e.manifest, ExportsManifest::default());
        assert_eq!(e.hostfs, None);
        assert!(e.hostfs_files().unwrap().is_empty());
    }

    #[test]
    fn malformed_manifest_names_file_and_position() {
        let dir = rootfs_with(&[(
            "exports/manifest.json",
            "{\n  \"defaultValues\": {\n    \"A\": }\n}",
        )]);
        let err = read(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exports/manifest.json"), "{msg}");
        assert!(
            matches!(err, ExportsError::Manifest { line: 3, .. }),
            "{msg}"
        );
    }

    #[test]
    fn non_scalar_default_value_is_an_error() {
        let dir = rootfs_with(&[("exports/manifest.json", r#"{"defaultValues": {"A": [1]}}"#)]);
        let msg = read(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("a string, number or boolean"), "{msg}");
    }

    #[test]
    fn symlinked_template_is_refused() {
        let dir = rootfs_with(&[("exports/manifest.json", "{}")]);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("exports/service.template"))
            .unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, ExportsError::Symlink { .. }), "{err}");
    }

    #[test]
    fn hostfs_links_out_of_hostfs_are_refused() {
        for (link, target) in [
            ("etc/x.conf", "/etc/shadow"),
            ("etc/x.conf", "../../../../etc/shadow"),
            ("etc/x.conf", "../../manifest.json"),
            ("etc/x.conf", "b"),
            ("etc/x.conf", "missing"),
            ("etc/x.conf", "self"),
        ] {
            let dir = rootfs_with(&[
                ("exports/hostfs/etc/a.conf", ""),
                ("exports/manifest.json", "{}"),
            ]);
            fs::create_dir_all(dir.path().join("exports/hostfs/etc/b")).unwrap();
            if target == "self" {
                // A loop: each link names the other.
                std::os::unix::fs::symlink("x.conf", dir.path().join("exports/hostfs/etc/self"))
                    .unwrap();
            }
            std::os::unix::fs::symlink(target, dir.path().join("exports/hostfs").join(link))
                .unwrap();
            let e = read(dir.path()).unwrap().unwrap();
            let err = e.hostfs_files().unwrap_err();
            assert!(
                matches!(err, ExportsError::HostfsLink { .. }),
                "{target}: {err}"
            );
            assert!(err.to_string().contains(target), "{err}");
        }
    }

    #[test]
    fn lists_hostfs_files_and_symlinks_sorted() {
        let dir = rootfs_with(&[
            ("exports/hostfs/usr/local/bin/foo", "#!/bin/sh\n"),
            ("exports/hostfs/etc/b/z.conf", ""),
            ("exports/hostfs/etc/a.conf", ""),
        ]);
        fs::create_dir_all(dir.path().join("exports/hostfs/var/empty")).unwrap();
        std::os::unix::fs::symlink("foo", dir.path().join("exports/hostfs/usr/local/bin/bar"))
            .unwrap();
        let e = read(dir.path()).unwrap().unwrap();
        let files: Vec<String> = e
            .hostfs_files()
            .unwrap()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            vec![
                "etc/a.conf",
                "etc/b/z.conf",
                "usr/local/bin/bar",
                "usr/local/bin/foo"
            ]
        );
    }
}
