//! Every name and path derived from a container's name, and the parsing of
//! those names back: the one place that knows how the containers directory
//! and the host files are laid out.
//!
//! ```text
//! STATE/containers/NAME               the pointer, a relative symlink to NAME.N
//! STATE/containers/NAME.N/            slot N (0 or 1)
//! STATE/containers/.NAME.N.staging/   slot N being written
//! STATE/containers/.NAME.transition   the journal of an unfinished operation
//! UNIT_DIR/NAME.service               the current slot's unit
//! TMPFILES_DIR/NAME.conf              the current slot's tmpfiles.d snippet
//! ```
//!
//! Inside a slot: `info`, `config.json`, `NAME.service`, `tmpfiles.conf`
//! and `hostfiles/<host path>`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{fsops, unit_name, Host};

/// `NAME.N`: a slot's directory name, and the pointer's relative target.
fn slot_name(name: &str, slot: u32) -> String {
    format!("{name}.{slot}")
}

/// What an entry of the containers directory is, by its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    /// `NAME.N`
    Slot { name: &'a str, slot: u32 },
    /// `.NAME.N.staging`
    Staging { name: &'a str, slot: u32 },
    /// `.NAME.transition`
    Transition { name: &'a str },
}

/// Reads an entry name of the containers directory. Pointers (any other
/// name) and names that are none of these give `None`.
pub(crate) fn parse(file_name: &str) -> Option<Entry<'_>> {
    if let Some(name) = file_name
        .strip_prefix('.')
        .and_then(|s| s.strip_suffix(".transition"))
        .filter(|n| !n.is_empty())
    {
        return Some(Entry::Transition { name });
    }
    let (rest, staging) = match file_name
        .strip_prefix('.')
        .and_then(|s| s.strip_suffix(".staging"))
    {
        Some(rest) => (rest, true),
        None => (file_name, false),
    };
    let (name, slot) = rest.rsplit_once('.')?;
    let slot = slot.parse::<u32>().ok()?;
    Some(if staging {
        Entry::Staging { name, slot }
    } else {
        Entry::Slot { name, slot }
    })
}

/// The slot a pointer target (`NAME.N`) of `name` designates.
pub(crate) fn slot_of(name: &str, target: &Path) -> Option<u32> {
    let target = target.file_name()?.to_string_lossy();
    match parse(&target)? {
        Entry::Slot { name: n, slot } if n == name => Some(slot),
        _ => None,
    }
}

/// The slot's copy of its unit.
pub(crate) fn slot_unit(slot_dir: &Path, name: &str) -> PathBuf {
    slot_dir.join(unit_name(name))
}

/// The slot's copy of its tmpfiles.d lines.
pub(crate) fn slot_tmpfiles(slot_dir: &Path) -> PathBuf {
    slot_dir.join("tmpfiles.conf")
}

/// The slot's `info` file.
pub(crate) fn slot_info(slot_dir: &Path) -> PathBuf {
    slot_dir.join("info")
}

/// Where a slot keeps its rendered copy of the host file `dest`.
pub(crate) fn slot_host_file(slot_dir: &Path, dest: &Path) -> PathBuf {
    slot_dir
        .join("hostfiles")
        .join(dest.strip_prefix("/").unwrap_or(dest))
}

impl Host {
    pub fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.state_dir.join("repo")
    }

    pub(crate) fn pointer(&self, name: &str) -> PathBuf {
        self.containers_dir().join(name)
    }

    pub(crate) fn slot_dir(&self, name: &str, slot: u32) -> PathBuf {
        self.containers_dir().join(slot_name(name, slot))
    }

    pub(crate) fn staging_dir(&self, name: &str, slot: u32) -> PathBuf {
        self.containers_dir()
            .join(format!(".{}.staging", slot_name(name, slot)))
    }

    pub(crate) fn transition_path(&self, name: &str) -> PathBuf {
        self.containers_dir().join(format!(".{name}.transition"))
    }

    pub(crate) fn unit_path(&self, name: &str) -> PathBuf {
        self.unit_dir.join(unit_name(name))
    }

    pub(crate) fn tmpfiles_path(&self, name: &str) -> PathBuf {
        self.tmpfiles_dir.join(format!("{name}.conf"))
    }

    /// `STATE/applied/`: one record per container `socle apply` installed.
    pub(crate) fn applied_dir(&self) -> PathBuf {
        self.state_dir.join("applied")
    }

    /// The declaration `name` was last applied with.
    pub(crate) fn applied_record(&self, name: &str) -> PathBuf {
        self.applied_dir().join(format!("{name}.json"))
    }

    /// The update of `name` apply tried last and that failed.
    pub(crate) fn applied_failure(&self, name: &str) -> PathBuf {
        self.applied_dir().join(format!(".{name}.failed.json"))
    }

    /// The names that have a record in `applied_dir`.
    pub(crate) fn applied_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.applied_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// `STATE/last/NAME.json`: the last operation that changed `name`.
    pub(crate) fn last_operation(&self, name: &str) -> PathBuf {
        self.state_dir.join("last").join(format!("{name}.json"))
    }

    /// The drop-in `socle apply` writes so that `name`'s unit starts after
    /// the containers it needs.
    pub(crate) fn order_drop_in(&self, name: &str) -> PathBuf {
        self.unit_dir
            .join(format!("{}.d", unit_name(name)))
            .join("50-socle-after.conf")
    }

    /// Makes `slot` the current deployment of `name`: the pointer becomes a
    /// relative link to it, by rename(2).
    pub(crate) fn point_at(&self, name: &str, slot: u32) -> std::io::Result<()> {
        fsops::swap_symlink(Path::new(&slot_name(name, slot)), &self.pointer(name))
    }

    /// The slot the pointer designates, if the container is installed.
    pub fn current_slot(&self, name: &str) -> Option<u32> {
        slot_of(name, &fs::read_link(self.pointer(name)).ok()?)
    }

    /// Where an absolute host path lands under `--host-root`.
    pub fn on_host(&self, path: &Path) -> PathBuf {
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        assert_eq!(
            parse("web.1"),
            Some(Entry::Slot {
                name: "web",
                slot: 1
            })
        );
        assert_eq!(
            parse("etcd.v2.0"),
            Some(Entry::Slot {
                name: "etcd.v2",
                slot: 0
            })
        );
        assert_eq!(
            parse(".web.0.staging"),
            Some(Entry::Staging {
                name: "web",
                slot: 0
            })
        );
        assert_eq!(
            parse(".web.transition"),
            Some(Entry::Transition { name: "web" })
        );
        for other in ["web", ".web.staging", ".transition", "web.x", "lock"] {
            assert_eq!(parse(other), None, "{other}");
        }
        assert_eq!(slot_of("web", Path::new("web.1")), Some(1));
        assert_eq!(slot_of("web", Path::new("other.1")), None);
        assert_eq!(slot_of("web", Path::new("/x/web.0")), Some(0));
    }
}
