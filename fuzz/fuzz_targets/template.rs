//! Strict `$VAR` substitution (`template.rs`): any template with any values
//! renders or fails with an error naming the file, never panics; a render
//! that succeeds used only variables that have values, and a template
//! without `$` renders to itself.
//!
//! Input: the template, then NUL-separated `--set` arguments (`VAR=VALUE`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socle::template::{parse_set, resolve, substitute, variables_in, Values};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.split('\0');
    let text = parts.next().unwrap_or_default();
    let mut user = Values::new();
    for arg in parts {
        if let Ok((k, v)) = parse_set(arg) {
            user.insert(k, v);
        }
    }
    let forced = Values::from([("NAME".to_string(), "fuzz".to_string())]);
    let defaults = Values::from([("PORT".to_string(), "8080".to_string())]);
    let values = resolve(&user, &Values::new(), &defaults, &forced).values;
    let used = variables_in(text);
    match substitute(text, &values, "fuzz.template") {
        Ok(out) => {
            assert!(
                used.iter().all(|v| values.contains_key(v)),
                "rendered although a variable has no value"
            );
            if !text.contains('$') {
                assert_eq!(out, text);
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.template: "), "{e}"),
    }
});
