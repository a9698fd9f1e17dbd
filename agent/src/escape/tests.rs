//! Values go in, the format's own reading gives them back: small readers
//! of JSON (serde_json), unit words and tmpfiles.d fields that follow
//! systemd 252's rules, and the real systemd-tmpfiles and systemd-analyze.

use super::*;
use crate::template::{substitute_into, TemplateError, Values};
use proptest::prelude::*;

fn from_set(_: &str) -> Origin {
    Origin::Set
}

fn values(v: &str) -> Values {
    [("V".to_string(), v.to_string())].into_iter().collect()
}

fn render(
    sink: &mut dyn Sink,
    file: &str,
    template: &str,
    v: &str,
) -> Result<String, TemplateError> {
    substitute_into(template, &values(v), file, sink)
}

fn json(template: &str, v: &str) -> Result<String, TemplateError> {
    render(
        &mut Json::new(&from_set),
        "config.json.template",
        template,
        v,
    )
}

fn unit(template: &str, v: &str) -> Result<String, TemplateError> {
    render(&mut Unit::new(&from_set), "service.template", template, v)
}

fn tmpfiles(template: &str, v: &str) -> Result<String, TemplateError> {
    render(
        &mut Tmpfiles::new(&from_set),
        "tmpfiles.template",
        template,
        v,
    )
}

/// One C escape of systemd's `cunescape_one` after a backslash, as used here.
fn c_unescape(chars: &mut Chars) -> char {
    match chars.next().unwrap() {
        'x' => {
            let hex: String = [chars.next().unwrap(), chars.next().unwrap()]
                .iter()
                .collect();
            u8::from_str_radix(&hex, 16).unwrap() as char
        }
        't' => '\t',
        's' => ' ',
        'n' => '\n',
        c => c,
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// systemd's `extract_first_word` with UNQUOTE, up to `limit` words;
/// `backslash` reads what follows a backslash.
fn words(chars: &mut Chars, limit: usize, backslash: fn(&mut Chars) -> char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    while words.len() < limit {
        let Some(c) = chars.next() else { break };
        match (quote, c) {
            (_, '\\') => word.get_or_insert_with(String::new).push(backslash(chars)),
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if super::is_separator(c) => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// A unit's command line or `Environment=`: words with C escapes (CUNESCAPE).
fn unit_words(line: &str) -> Vec<String> {
    words(&mut line.chars().peekable(), usize::MAX, c_unescape)
}

/// Specifier expansion with no specifier but `%%`.
fn unpercent(s: &str) -> String {
    s.replace("%%", "%")
}

/// The value of `key=` in a rendered unit (one line each).
fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {unit}"))
}

/// A tmpfiles.d line: fields 1-6 (a backslash takes the next character as
/// it is), then the argument (C escapes, specifiers).
fn tmpfiles_line(line: &str) -> (Vec<String>, Option<String>) {
    let mut chars = line.chars().peekable();
    let fields = words(&mut chars, 6, |c| c.next().unwrap());
    while chars.peek().is_some_and(|&c| super::is_separator(c)) {
        chars.next();
    }
    let mut argument = String::new();
    while let Some(c) = chars.next() {
        argument.push(if c == '\\' { c_unescape(&mut chars) } else { c });
    }
    (fields, (!argument.is_empty()).then(|| unpercent(&argument)))
}

/// Values with everything that matters to the three formats.
fn any_value() -> impl Strategy<Value = String> {
    "[ -~\t\u{e9}\u{2028}]{0,20}"
}

const JSON_TEMPLATE: &str = r#"{"root": {"path": "rootfs", "readonly": true},
 "s": "pre-$V-post", "list": ["$V", 1], "k$V": 2}"#;

const UNIT_TEMPLATE: &str = "[Unit]\nDescription=about $V here\n\n[Service]\nExecStart=/bin/echo a$V \"q $V\" 'sq$V' $V\nEnvironment=K=$V \"L=x $V\"\n";

const TMPFILES_TEMPLATE: &str =
    "d /srv/$V 0755 - - -\nf \"/q/$V\" 0644 root root - arg $V end\nd $V - - - -\n";

proptest! {
    #[test]
    fn json_strings_keep_the_value_and_the_structure(v in any_value()) {
        let out = json(JSON_TEMPLATE, &v).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let object = doc.as_object().unwrap();
        prop_assert_eq!(object.len(), 4);
        prop_assert_eq!(&doc["s"], &serde_json::Value::String(format!("pre-{v}-post")));
        prop_assert_eq!(&doc["list"][0], &serde_json::Value::String(v.clone()));
        prop_assert_eq!(&doc[format!("k{v}")], &serde_json::json!(2));
    }

    #[test]
    fn json_outside_strings_takes_scalars_only(v in any_value()) {
        match json(r#"{"n": $V, "a": [0, $V]}"#, &v) {
            Ok(out) => {
                let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
                prop_assert_eq!(doc.as_object().unwrap().len(), 2);
                prop_assert!(is_scalar(&doc["n"]));
                prop_assert!(doc["a"].as_array().unwrap().iter().all(is_scalar));
            }
            Err(e) => prop_assert!(matches!(e, TemplateError::Value { ref name, .. } if name == "V"), "{}", e),
        }
    }

    #[test]
    fn unit_values_stay_in_their_word(v in any_value()) {
        match unit(UNIT_TEMPLATE, &v) {
            Ok(out) => {
                prop_assert_eq!(out.lines().count(), UNIT_TEMPLATE.lines().count());
                prop_assert_eq!(unpercent(setting(&out, "Description")), format!("about {v} here"));
                let exec: Vec<String> = unit_words(setting(&out, "ExecStart"))
                    .iter()
                    .map(|w| unpercent(w).replace("$$", "$"))
                    .collect();
                let mut want = vec!["/bin/echo".to_string(), format!("a{v}"), format!("q {v}"), format!("sq{v}")];
                if !v.is_empty() {
                    want.push(v.clone());
                }
                prop_assert_eq!(exec, want);
                let env: Vec<String> = unit_words(setting(&out, "Environment")).iter().map(|w| unpercent(w)).collect();
                prop_assert_eq!(env, vec![format!("K={v}"), format!("L=x {v}")]);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(v.contains(|c: char| c.is_control() && c != '\t') || v.ends_with('\\'), "{}", msg);
                prop_assert!(msg.starts_with("value of V (--set) cannot go into service.template"), "{}", msg);
            }
        }
    }

    #[test]
    fn tmpfiles_values_stay_in_their_field(v in any_value()) {
        match tmpfiles(TMPFILES_TEMPLATE, &v) {
            Ok(out) => {
                let lines: Vec<_> = out.lines().map(tmpfiles_line).collect();
                prop_assert_eq!(lines.len(), 3);
                let (f, arg) = &lines[0];
                prop_assert_eq!(f.len(), 6);
                prop_assert_eq!(unpercent(&f[1]), format!("/srv/{v}"));
                prop_assert_eq!(arg, &None);
                let (f, arg) = &lines[1];
                prop_assert_eq!(unpercent(&f[1]), format!("/q/{v}"));
                prop_assert_eq!(&f[2..], &["0644", "root", "root", "-"]);
                prop_assert_eq!(arg.clone(), Some(format!("arg {v} end")));
                let (f, _) = &lines[2];
                prop_assert_eq!(f.len(), 6);
                prop_assert_eq!(unpercent(&f[1]), v.clone());
            }
            Err(e) => {
                prop_assert!(v.contains(|c: char| c.is_control() && c != '\t'), "{}", e);
            }
        }
    }
}

#[test]
fn errors_name_the_variable_the_origin_and_the_file() {
    let err = unit(
        "[Service]\nExecStart=/bin/x $V\n",
        "a\nExecStartPre=/bin/evil",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "value of V (--set) cannot go into service.template (line 2): it contains a newline"
    );
    let err = json(r#"{"port": $V}"#, r#"1, "evil": true"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("value of V (--set) cannot go into config.json.template (line 1): outside a JSON string"),
        "{err}"
    );
}

#[test]
fn json_cannot_gain_keys() {
    let out = json(r#"{"hostname": "$V"}"#, r#"x", "evil": "y"#).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc, serde_json::json!({"hostname": "x\", \"evil\": \"y"}));
    assert_eq!(
        json(r#"{"port": $V}"#, "8080").unwrap(),
        r#"{"port": 8080}"#
    );
    assert_eq!(
        json(r#"{"a": [$V]}"#, r#""A", "B""#).unwrap(),
        r#"{"a": ["A", "B"]}"#
    );
    assert!(json(r#"{"a": [$V]}"#, r#""A"], "b": ["#).is_err());
}

#[test]
fn socles_capability_list_goes_in_as_is_but_a_set_one_is_checked() {
    let caps = "\"CAP_CHOWN\",\n\"CAP_KILL\"\n";
    let vals: Values = [("ALL_PROCESS_CAPABILITIES".to_string(), caps.to_string())].into();
    let socle = |_: &str| Origin::Socle;
    let t = r#"{"caps": [$ALL_PROCESS_CAPABILITIES]}"#;
    assert!(substitute_into(t, &vals, "c", &mut Json::new(&socle)).is_ok());
    let bad: Values = [("ALL_PROCESS_CAPABILITIES".to_string(), "1]}".to_string())].into();
    assert!(substitute_into(t, &bad, "c", &mut Json::new(&from_set)).is_err());
    assert!(substitute_into(t, &vals, "c", &mut Json::new(&from_set)).is_ok());
}

#[test]
fn unit_refusals() {
    for (template, v, why) in [
        (
            "[Service]\nExecStart=$V\n",
            "-/bin/true",
            "prefix of the command",
        ),
        ("[Service]\n$V=1\n", "Exec Start", "setting name"),
        ("[Unit]\nDescription=$V\n", "a\\", "continue the line"),
        ("[Unit]\nDescription=$V\n", "a\u{7}b", "control character"),
    ] {
        let err = unit(template, v).unwrap_err().to_string();
        assert!(err.contains(why), "{template:?} {v:?}: {err}");
    }
    // socle's own command lines are unit syntax already.
    let vals: Values = [(
        "EXEC_START".to_string(),
        "/usr/bin/runc run 'a%%b'".to_string(),
    )]
    .into();
    let socle = |_: &str| Origin::Socle;
    let out = substitute_into(
        "[Service]\nExecStart=$EXEC_START --x $$y\n",
        &vals,
        "s",
        &mut Unit::new(&socle),
    )
    .unwrap();
    assert_eq!(
        out,
        "[Service]\nExecStart=/usr/bin/runc run 'a%%b' --x $y\n"
    );
}

#[test]
fn dollar_is_doubled_in_arguments_only() {
    let out = unit("[Service]\nExecStart=$V $V ; $V x\n", "/a$b").unwrap();
    assert_eq!(out, "[Service]\nExecStart=/a$b /a$$b ; /a$b x\n");
}

/// The real systemd-tmpfiles reads back the names the values asked for.
#[test]
fn real_systemd_tmpfiles_creates_the_paths_asked_for() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("t.conf");
    let names = [
        "with space",
        "q\"uote's",
        "back\\slash",
        "100%",
        "tab\there",
        "-",
    ];
    let mut text = String::new();
    for (i, n) in names.iter().enumerate() {
        text.push_str(
            &tmpfiles(
                &format!("d /d{i}-$V 0755 - - -\nf /f{i} 0644 - - - [$V]\n"),
                n,
            )
            .unwrap(),
        );
    }
    std::fs::write(&conf, &text).unwrap();
    let root_arg = format!("--root={}", root.path().join("r").display());
    run_ok("systemd-tmpfiles", &["--create", &root_arg], &conf, &text);
    for (i, n) in names.iter().enumerate() {
        let dir = root.path().join(format!("r/d{i}-{n}"));
        assert!(dir.is_dir(), "{} missing; tmpfiles:\n{text}", dir.display());
        let content = std::fs::read_to_string(root.path().join(format!("r/f{i}"))).unwrap();
        assert_eq!(content, format!("[{n}]"), "{text}");
    }
}

/// systemd-analyze finds the executable the value names.
#[test]
fn real_systemd_reads_back_the_executable() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("my prog 100%");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = unit("[Service]\nExecStart=$V --flag=$V\n", exe.to_str().unwrap()).unwrap();
    let file = dir.path().join("t.service");
    std::fs::write(&file, &text).unwrap();
    run_ok("systemd-analyze", &["verify", "--man=no"], &file, &text);
}

/// Runs `program args file`, which must succeed; `text` is what `file` holds.
fn run_ok(program: &str, args: &[&str], file: &std::path::Path, text: &str) {
    let out = std::process::Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}
