//! Strict `$VAR` / `${VAR}` substitution and the precedence of template values.
//!
//! The syntax is Python's `string.Template`, which atomic used for every file
//! of the image contract, so existing images render the same: `$name` and
//! `${name}` with `name = [A-Za-z_][A-Za-z0-9_]*`, `$$` for a literal `$`.
//! Unlike `safe_substitute`, anything unresolved is an error: a unit with a
//! stray `$FOO` left in it would fail much later and far less clearly.

use std::collections::{BTreeMap, BTreeSet};

/// Template variables, sorted so that everything derived from them is deterministic.
pub type Values = BTreeMap<String, String>;

/// Variables socle always computes; a `--set` of one of them is ignored.
pub const FORCED: &[&str] = &[
    "DESTDIR",
    "NAME",
    "EXEC_START",
    "EXEC_STOP",
    "EXEC_STARTPRE",
    "EXEC_STOPPOST",
    "HOST_UID",
    "HOST_GID",
    "IMAGE_NAME",
    "IMAGE_ID",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("{file}: unknown variable ${name} (line {line})")]
    UnknownVariable {
        file: String,
        name: String,
        line: usize,
    },
    #[error("{file}: invalid placeholder at line {line}, column {column}: a `$` must start $NAME, ${{NAME}} or $$")]
    InvalidPlaceholder {
        file: String,
        line: usize,
        column: usize,
    },
    #[error("--set {0}: expected VAR=VALUE")]
    SetWithoutEquals(String),
    #[error("--set {0}: invalid variable name (expected [A-Za-z_][A-Za-z0-9_]*)")]
    SetInvalidName(String),
    #[error("--set {0}: the value contains a line break, which would inject lines into the generated files")]
    SetValueWithNewline(String),
    #[error("value of {name} ({origin}) cannot go into {file} (line {line}): {problem}")]
    Value {
        name: String,
        origin: String,
        file: String,
        line: usize,
        problem: String,
    },
}

/// Where substituted values land: it sees the template's own text in order
/// and writes each value the way that format needs (escaped, or refused).
pub trait Sink {
    /// Literal template text, in order, up to the next placeholder.
    fn literal(&mut self, text: &str);
    /// `value` as it must be written at this point, or why it can't be.
    fn value(&mut self, name: &str, value: &str) -> Result<String, String>;
    /// Where the value of `name` came from, for errors (`--set`, …).
    fn origin(&self, name: &str) -> String;
}

/// Plain text: values go in as they are.
struct Plain;

impl Sink for Plain {
    fn literal(&mut self, _: &str) {}
    fn value(&mut self, _: &str, value: &str) -> Result<String, String> {
        Ok(value.to_string())
    }
    fn origin(&self, _: &str) -> String {
        String::new()
    }
}

/// One lexical piece of a template.
enum Token<'a> {
    Text(&'a str),
    Dollar,
    Variable(&'a str),
    Invalid,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length of the identifier at the start of `s` (0 when there is none).
fn name_len(s: &[u8]) -> usize {
    match s.first() {
        Some(&b) if is_name_start(b) => 1 + s[1..].iter().take_while(|&&b| is_name_char(b)).count(),
        _ => 0,
    }
}

/// Whether `name` is a valid template variable name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name_len(name.as_bytes()) == name.len()
}

/// Splits `text` into tokens, each with its byte offset.
fn tokens(text: &str) -> Vec<(usize, Token<'_>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        if start < i {
            out.push((start, Token::Text(&text[start..i])));
        }
        let rest = &bytes[i + 1..];
        let (token, consumed) = if rest.first() == Some(&b'$') {
            (Token::Dollar, 2)
        } else if rest.first() == Some(&b'{') {
            let n = name_len(&rest[1..]);
            if n > 0 && rest.get(1 + n) == Some(&b'}') {
                (Token::Variable(&text[i + 2..i + 2 + n]), n + 3)
            } else {
                (Token::Invalid, 1)
            }
        } else {
            match name_len(rest) {
                0 => (Token::Invalid, 1),
                n => (Token::Variable(&text[i + 1..i + 1 + n]), n + 1),
            }
        };
        out.push((i, token));
        i += consumed;
        start = i;
    }
    if start < bytes.len() {
        out.push((start, Token::Text(&text[start..])));
    }
    out
}

/// 1-based line and column (in characters) of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Substitutes every placeholder of `text`; `file` labels errors.
pub fn substitute(text: &str, values: &Values, file: &str) -> Result<String, TemplateError> {
    substitute_into(text, values, file, &mut Plain)
}

/// Substitutes every placeholder of `text`, each value written as `sink`
/// (the format of `file`) says.
pub fn substitute_into(
    text: &str,
    values: &Values,
    file: &str,
    sink: &mut dyn Sink,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for (offset, token) in tokens(text) {
        match token {
            Token::Text(s) => {
                sink.literal(s);
                out.push_str(s)
            }
            Token::Dollar => {
                sink.literal("$");
                out.push('$')
            }
            Token::Variable(name) => {
                match values.get(name) {
                    Some(v) => out.push_str(&sink.value(name, v).map_err(|problem| {
                        TemplateError::Value {
                            name: name.to_string(),
                            origin: sink.origin(name),
                            file: file.to_string(),
                            line: position(text, offset).0,
                            problem,
                        }
                    })?),
                    None => {
                        return Err(TemplateError::UnknownVariable {
                            file: file.to_string(),
                            name: name.to_string(),
                            line: position(text, offset).0,
                        })
                    }
                }
            }
            Token::Invalid => {
                let (line, column) = position(text, offset);
                return Err(TemplateError::InvalidPlaceholder {
                    file: file.to_string(),
                    line,
                    column,
                });
            }
        }
    }
    Ok(out)
}

/// The variables `text` uses; invalid placeholders are skipped (lint reports them via `substitute`).
pub fn variables_in(text: &str) -> BTreeSet<String> {
    tokens(text)
        .into_iter()
        .filter_map(|(_, t)| match t {
            Token::Variable(name) => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// Parses one `--set VAR=VALUE` argument.
pub fn parse_set(arg: &str) -> Result<(String, String), TemplateError> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| TemplateError::SetWithoutEquals(arg.to_string()))?;
    if !is_valid_name(name) {
        return Err(TemplateError::SetInvalidName(arg.to_string()));
    }
    if value.contains(['\n', '\r']) {
        return Err(TemplateError::SetValueWithNewline(name.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The values of one deployment and what the user should hear about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub values: Values,
    pub warnings: Vec<String>,
}

/// Merges the value sources: user `--set` > OS-provided > image `defaultValues`,
/// and `forced` over everything.
pub fn resolve(
    user_set: &Values,
    os_provided: &Values,
    image_defaults: &Values,
    forced: &Values,
) -> Resolved {
    let mut values = image_defaults.clone();
    values.extend(os_provided.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut warnings = Vec::new();
    for (k, v) in user_set {
        if FORCED.contains(&k.as_str()) || forced.contains_key(k) {
            warnings.push(format!(
                "--set {k} ignored: {k} is always computed by socle"
            ));
        } else {
            values.insert(k.clone(), v.clone());
        }
    }
    values.extend(forced.iter().map(|(k, v)| (k.clone(), v.clone())));
    Resolved { values, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_both_forms_and_escapes() {
        let v = values(&[("NAME", "hello"), ("PORT", "8081"), ("A_1", "x")]);
        let out = substitute("$NAME:${PORT} $$NAME ${A_1}y $NAME.service $$", &v, "t").unwrap();
        assert_eq!(out, "hello:8081 $NAME xy hello.service $");
    }

    #[test]
    fn name_is_the_longest_identifier() {
        let v = values(&[("NAME", "n")]);
        let err = substitute("$NAMEx", &v, "t").unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                file: "t".into(),
                name: "NAMEx".into(),
                line: 1
            }
        );
        assert_eq!(substitute("${NAME}x-$NAME-", &v, "t").unwrap(), "nx-n-");
    }

    #[test]
    fn unknown_variable_names_file_variable_and_line() {
        let err = substitute("a\nb\nc $FOO d", &Values::new(), "service.template").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service.template: unknown variable $FOO (line 3)"
        );
        let err = substitute("${BAR}", &Values::new(), "f").unwrap_err();
        assert_eq!(err.to_string(), "f: unknown variable $BAR (line 1)");
    }

    #[test]
    fn invalid_placeholders_are_errors() {
        for (text, line, column) in [
            ("a $", 1, 3),
            ("x\n $1", 2, 2),
            ("${", 1, 1),
            ("${NAME", 1, 1),
            ("${1A}", 1, 1),
            ("${ NAME}", 1, 1),
            ("é$-", 1, 2),
        ] {
            let err = substitute(text, &values(&[("NAME", "n")]), "f").unwrap_err();
            assert_eq!(
                err,
                TemplateError::InvalidPlaceholder {
                    file: "f".into(),
                    line,
                    column
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let text = "plain text, ünïcode, {braces} and no dollars\n";
        assert_eq!(substitute(text, &Values::new(), "f").unwrap(), text);
        assert_eq!(substitute("", &Values::new(), "f").unwrap(), "");
    }

    #[test]
    fn values_are_not_rescanned() {
        let v = values(&[("A", "$B"), ("B", "no")]);
        assert_eq!(substitute("$A", &v, "f").unwrap(), "$B");
    }

    #[test]
    fn lists_variables() {
        let vars = variables_in("$A ${B} $$C $A ${ bad $1 $_x");
        assert_eq!(vars.into_iter().collect::<Vec<_>>(), vec!["A", "B", "_x"]);
    }

    #[test]
    fn parses_set_arguments() {
        assert_eq!(parse_set("FOO=bar").unwrap(), ("FOO".into(), "bar".into()));
        assert_eq!(parse_set("FOO=").unwrap(), ("FOO".into(), "".into()));
        assert_eq!(parse_set("FOO=a=b").unwrap(), ("FOO".into(), "a=b".into()));
        assert_eq!(
            parse_set("FOO").unwrap_err().to_string(),
            "--set FOO: expected VAR=VALUE"
        );
        assert!(matches!(
            parse_set("1FOO=x"),
            Err(TemplateError::SetInvalidName(_))
        ));
        assert!(matches!(
            parse_set("=x"),
            Err(TemplateError::SetInvalidName(_))
        ));
        assert!(matches!(
            parse_set("FO-O=x"),
            Err(TemplateError::SetInvalidName(_))
        ));
        assert!(matches!(
            parse_set("FOO=a\nExecStart=/bin/evil"),
            Err(TemplateError::SetValueWithNewline(_))
        ));
        assert!(matches!(
            parse_set("FOO=a\rb"),
            Err(TemplateError::SetValueWithNewline(_))
        ));
    }

    #[test]
    fn precedence_user_then_os_then_image_and_forced_wins() {
        let user = values(&[
            ("PORT", "9000"),
            ("NAME", "evil"),
            ("STATE_DIRECTORY", "/srv"),
        ]);
        let os = values(&[("STATE_DIRECTORY", "/var/lib"), ("RUN_DIRECTORY", "/run")]);
        let image = values(&[
            ("PORT", "8081"),
            ("RECEIVER", "world"),
            ("RUN_DIRECTORY", "/image-run"),
        ]);
        let forced = values(&[("NAME", "hello")]);
        let r = resolve(&user, &os, &image, &forced);
        assert_eq!(
            r.values,
            values(&[
                ("NAME", "hello"),
                ("PORT", "9000"),
                ("RECEIVER", "world"),
                ("RUN_DIRECTORY", "/run"),
                ("STATE_DIRECTORY", "/srv"),
            ])
        );
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("NAME"), "{:?}", r.warnings);
    }

    #[test]
    fn set_of_a_forced_name_is_ignored_even_if_not_computed() {
        let r = resolve(
            &values(&[("IMAGE_ID", "x")]),
            &Values::new(),
            &Values::new(),
            &Values::new(),
        );
        assert!(r.values.is_empty());
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("IMAGE_ID"));
    }
}
