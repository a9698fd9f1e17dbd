//! Layer import (`store.rs`): a tar stream, plain, gzip or zstd, imported
//! into a temporary ostree repo, then composed with a base layer into an
//! image both ways (over it and under it) and checked out. Any bytes give a
//! stored layer or an error, never a panic; a refused layer leaves no ref.
//!
//! Input: one mode byte, then the blob. Mode 0: a plain tar; 1: the tar,
//! gzip-compressed here (so the fuzzer mutates the tar, not the gzip); 2: the
//! bytes as a gzip blob; 3: as a zstd blob. The digests the store checks are
//! computed here, so the import goes past the checks to the commit.
#![no_main]

use std::io::{Read, Write};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use socle::oci::Compression;
use socle::reference::ImageName;
use socle::store::Store;

/// One repo per process: creating an ostree repo costs far more than an import.
struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    base: String,
}

thread_local! {
    static FIXTURE: Fixture = Fixture::new();
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A base layer with what hostile layers aim at: directories, a symlink to
/// a directory, a symlink out of the root, a file, a hardlink.
fn base_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", tar::EntryType::Directory, None, b"");
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        None,
        b"root:x:0:0::/:/bin/sh\n",
    );
    add("etc/shadow", tar::EntryType::Link, Some("etc/passwd"), b"");
    add("usr/bin/", tar::EntryType::Directory, None, b"");
    add("usr/bin/sh", tar::EntryType::Regular, None, b"#!\n");
    add("bin", tar::EntryType::Symlink, Some("usr/bin"), b"");
    add("host", tar::EntryType::Symlink, Some("/etc"), b"");
    b.into_inner().unwrap()
}

impl Fixture {
    fn new() -> Fixture {
        // tmpfs when there is one: commit_image ends with a syncfs.
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let store = Store::open(&dir.path().join("repo")).expect("a new repo");
        let tar = base_tar();
        let base = digest(&tar);
        store
            .import_layer(&base, &base, Compression::None, &tar[..])
            .expect("the base layer imports");
        Fixture { dir, store, base }
    }

    fn run(&self, data: &[u8]) {
        let Some((&mode, bytes)) = data.split_first() else {
            return;
        };
        let (compression, blob) = match mode % 4 {
            0 => (Compression::None, bytes.to_vec()),
            1 => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(bytes).expect("gzip into memory");
                (Compression::Gzip, gz.finish().expect("gzip into memory"))
            }
            2 => (Compression::Gzip, bytes.to_vec()),
            _ => (Compression::Zstd, bytes.to_vec()),
        };
        let blob_digest = digest(&blob);
        // What the store hashes: the decompressed bytes, as far as they go.
        let mut tar = Vec::new();
        let _ = match compression {
            Compression::None => Ok(tar.extend_from_slice(&blob)),
            Compression::Gzip => flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut tar)
                .map(drop),
            Compression::Zstd => zstd::stream::read::Decoder::new(&blob[..])
                .and_then(|mut d| d.read_to_end(&mut tar))
                .map(drop),
        };
        let diff_id = digest(&tar);
        if blob_digest == self.base {
            return;
        }
        let store = &self.store;
        match store.import_layer(&blob_digest, &diff_id, compression, &blob[..]) {
            Ok(layer) => {
                assert_eq!(layer.digest, blob_digest);
                // Over the base and under it, as `images prune` and
                // `delete` leave a store: the names, then the layer, go.
                for (tag, layers) in [
                    ("up", [self.base.clone(), blob_digest.clone()]),
                    ("down", [blob_digest.clone(), self.base.clone()]),
                ] {
                    let name = ImageName::parse(&format!("fuzz:{tag}")).expect("a valid name");
                    let image =
                        store.commit_image(&name, &blob_digest, b"{}", b"{}", &layers, "fuzz");
                    if let Ok(image) = image {
                        let dest = self.dir.path().join("checkout");
                        let _ = store.checkout(&image, &dest);
                        let _ = std::fs::remove_dir_all(&dest);
                        store.remove_name(&name).expect("the name goes");
                    }
                }
                let gc = store
                    .collect_garbage(&[], Some(std::slice::from_ref(&blob_digest)))
                    .expect("garbage collection");
                assert_eq!(gc.layers_removed.len(), 1, "the fuzzed layer is collected");
            }
            Err(_) => assert!(
                !store.has_layer(&blob_digest).expect("the repo answers"),
                "a refused layer left its ref"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| FIXTURE.with(|f| f.run(data)));
