//! File operations a deployment relies on for crash safety: whole-file
//! writes by rename, the pointer swap by rename of a new symlink, and fsync
//! of the directories that hold them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

fn with_path<'a>(path: &'a Path, what: &str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// fsyncs a directory so renames inside it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(with_path(dir, "fsync"))
}

/// Writes `data` to `path` via a temporary sibling and rename(2), so readers
/// see the old file or the new one, never a half-written one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(with_path(dir, "create directory"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".socle-")
        .tempfile_in(dir)
        .map_err(with_path(dir, "create a temporary file in"))?;
    tmp.write_all(data).map_err(with_path(path, "write"))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(with_path(path, "chmod"))?;
    tmp.as_file().sync_all().map_err(with_path(path, "fsync"))?;
    tmp.persist(path)
        .map_err(|e| with_path(path, "rename into place")(e.error))?;
    sync_dir(dir)
}

/// Points the symlink `link` at `target` atomically: a new symlink is made
/// beside it and renamed over the old one.
pub fn swap_symlink(target: &Path, link: &Path) -> io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.new",
        link.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(with_path(&tmp, "create symlink"))?;
    fs::rename(&tmp, link).map_err(with_path(link, "rename symlink onto"))?;
    sync_dir(dir)
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path).map_err(with_path(path, "open"))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(with_path(path, "read"))?;
    Ok(hex::encode(h.finalize()))
}

pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Removes a file, a symlink or a whole directory tree; absent is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(with_path(path, "stat")(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(with_path(path, "remove")),
        Ok(_) => fs::remove_file(path).map_err(with_path(path, "remove")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_swap_replaces_the_pointer() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("app");
        swap_symlink(Path::new("app.0"), &link).unwrap();
        swap_symlink(Path::new("app.1"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("app.1"));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temporaries() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }
}
