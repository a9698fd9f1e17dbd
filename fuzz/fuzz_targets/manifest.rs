//! Manifest, index and config JSON as a registry serves them, parsed the way
//! `registry::open` does (`index_choice`, `parse_manifest`, `image_layers`):
//! any bytes give one layer per manifest layer or an error, never a panic.
//!
//! Input: the manifest or index, NUL, the config, NUL, an optional
//! `--platform` value. JSON documents hold no raw NUL, so NUL separates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socle::reference::DockerRef;
use socle::oci::{is_index, media_type_of};
use socle::registry::{image_layers, index_choice, parse_manifest};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let platform = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let r = DockerRef::parse("registry.example/fuzz:1").expect("a valid reference");
    let media_type = media_type_of(manifest, None);
    if is_index(&media_type) {
        let _ = index_choice(&r, manifest, platform);
        return;
    }
    let Ok(m) = parse_manifest(&r, &media_type, manifest) else {
        return;
    };
    if let Ok((layers, _note)) = image_layers(&r, &m, config, platform) {
        assert_eq!(layers.len(), m.layers().len());
    }
});
