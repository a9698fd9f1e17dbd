//! `$VAR` substitution (`template.rs`) and the per-format escaping
//! (`escape.rs`): any template with any values renders or fails with an
//! error naming the file, never panics. A render that succeeds used only
//! variables that have values; a template without `$` renders to itself;
//! a value never adds a line to a unit or a tmpfiles snippet, and a JSON
//! template that is valid with plain values stays valid JSON whatever the
//! values are.
//!
//! Input: the template, then NUL-separated `--set` arguments (`VAR=VALUE`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use socle::escape::{Json, Origin, Tmpfiles, Unit};
use socle::template::{parse_set, resolve, substitute, substitute_into, variables_in, Values};

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
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.template: "), "{e}");
            return;
        }
    }

    let origins = |_: &str| Origin::Set;
    // Newlines, not `lines()`: an empty value at the end drops a last empty line.
    let lines = text.matches('\n').count();
    for (file, out) in [
        (
            "service.template",
            substitute_into(text, &values, "service.template", &mut Unit::new(&origins)),
        ),
        (
            "tmpfiles.template",
            substitute_into(
                text,
                &values,
                "tmpfiles.template",
                &mut Tmpfiles::new(&origins),
            ),
        ),
    ] {
        if let Ok(out) = out {
            assert_eq!(
                out.matches('\n').count(),
                lines,
                "a value added a line to {file}: {out:?}"
            );
        }
    }

    // The same template with a plain value everywhere: when that is JSON,
    // the escaped render must be JSON too.
    let plain: Values = values
        .keys()
        .map(|k| (k.clone(), "x".to_string()))
        .collect();
    let valid_with_plain = substitute(text, &plain, "config.json.template")
        .is_ok_and(|t| serde_json::from_str::<serde_json::Value>(&t).is_ok());
    if let Ok(out) = substitute_into(
        text,
        &values,
        "config.json.template",
        &mut Json::new(&origins),
    ) {
        if valid_with_plain {
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "values broke the JSON: {out:?}"
            );
        }
    }
});
