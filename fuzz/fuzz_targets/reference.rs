//! Image references as users type them (`reference.rs`): any string parses
//! to a reference or an error, never a panic; a registry reference's store
//! name survives the round trip through its text and atomic's ref encoding,
//! as `pull` and `images` rely on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socle::reference::{DockerRef, ImageName, ImageRef};
use socle::store::{decode_name, encode_name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<ImageRef>() {
        let _ = r.to_string();
        let _ = r.absolute();
    }
    if let Ok(d) = DockerRef::parse(s) {
        let name = d.image_name();
        let text = name.to_string();
        assert_eq!(
            ImageName::parse(&text).as_ref().ok(),
            Some(&name),
            "the store name {text:?} of {s:?} does not parse back"
        );
        let _ = d.manifest_reference();
        let _ = d.in_registry("registry.example:5000");
    }
    if let Ok(name) = ImageName::parse(s) {
        let text = name.to_string();
        assert_eq!(
            decode_name(&encode_name(&name)).as_deref(),
            Some(text.as_str()),
            "the ref encoding of {text:?} does not decode back"
        );
    }
});
