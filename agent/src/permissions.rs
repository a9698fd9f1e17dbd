//! Who may reach what socle keeps, and which modes an image may give the
//! host.
//!
//! Store objects keep the modes their image gave them (a setuid binary, a
//! world-writable file), because the container must see them so. Every
//! deployment's `rootfs/` is hardlinks to those objects: one inode for all.
//! So the state directory is private to root (0700): no other user of the
//! host can open, let alone change, an object every deployment shares.
//! runc runs as root and needs nothing more; an image that maps its root
//! to another uid (a user namespace) would need the path traversable and is
//! not supported.
//!
//! Host files (`exports/hostfs`) land on the host itself, where modes mean
//! what they say: setuid, setgid and world-write bits are dropped.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of the state directory and of the store and containers in it.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and missing parents) readable by its owner only, or
/// tightens an existing one that group or others could reach. Returns the
/// mode it had when it was tightened.
pub fn private_dir(dir: &Path) -> io::Result<Option<u32>> {
    let with = |what: &str| {
        let what = format!("{what} {}", dir.display());
        move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .map_err(with("creating"))?;
    let mode = fs::metadata(dir)
        .map_err(with("reading"))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))
        .map_err(with("restricting to its owner"))?;
    Ok(Some(mode))
}

/// The mode a host file gets from its mode in the image: without setuid,
/// setgid and world-write; and a warning when something was dropped.
pub fn host_file_mode(path: &Path, image_mode: u32) -> (u32, Option<String>) {
    let mode = image_mode & 0o7777 & !0o6002;
    if mode == image_mode & 0o7777 {
        return (mode, None);
    }
    let mut dropped = Vec::new();
    if image_mode & 0o4000 != 0 {
        dropped.push("setuid");
    }
    if image_mode & 0o2000 != 0 {
        dropped.push("setgid");
    }
    if image_mode & 0o002 != 0 {
        dropped.push("world-write");
    }
    let warning = format!(
        "host file {} has mode {:04o} in the image; it is installed with {mode:04o} ({} dropped: host files get no setuid, setgid or world-write bits)",
        path.display(),
        image_mode & 0o7777,
        dropped.join(", ")
    );
    (mode, Some(warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_lose_setuid_setgid_and_world_write() {
        let p = Path::new("/usr/bin/x");
        assert_eq!(host_file_mode(p, 0o755), (0o755, None));
        assert_eq!(host_file_mode(p, 0o100644).0, 0o644);
        let (mode, warning) = host_file_mode(p, 0o4777);
        assert_eq!(mode, 0o775);
        let w = warning.unwrap();
        assert!(
            w.contains("/usr/bin/x") && w.contains("4777") && w.contains("0775"),
            "{w}"
        );
        assert!(w.contains("setuid, world-write"), "{w}");
        assert_eq!(host_file_mode(p, 0o2750).0, 0o750);
        // The sticky bit gives nobody anything on a file.
        assert_eq!(host_file_mode(p, 0o1644), (0o1644, None));
    }

    #[test]
    fn state_directories_are_created_private_and_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/state");
        assert_eq!(private_dir(&d).unwrap(), None);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&d).unwrap(), Some(0o755));
        assert_eq!(mode(&d), 0o700);
        assert_eq!(private_dir(&d).unwrap(), None);
    }
}
