//! Values escaped for the format they land in. A template is plain text
//! with `$VARS` (atomic's contract), so a value with a quote, a backslash,
//! a `%` or a space could otherwise add JSON keys, change a unit's command
//! line or shift a tmpfiles line's fields. Each sink here follows the
//! template's own text to know where a placeholder sits (inside a JSON
//! string, in a word of an `ExecStart=`, in a tmpfiles field) and writes the
//! value so that it reads back as itself there, or refuses it, saying why.
//!
//! The rules are systemd 252's (Debian 12), checked against the real
//! parsers in the tests: unit command lines and `Environment=` are split
//! into words with quotes and C escapes (`\x20`, `\\`, `\"`), `$$` is a `$`
//! in the arguments of `Exec*=` (not in the executable), `%%` is a `%`;
//! tmpfiles.d fields 1-6 take a backslash as "the next character as is"
//! (no C escapes), the argument field takes C escapes and specifiers.

use crate::template::Sink;

/// Where a value came from, for error messages and to know socle's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--set` on the command line (or kept from an earlier one).
    Set,
    /// The image's `defaultValues`.
    Image,
    /// Computed by socle (host-provided or forced).
    Socle,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::Set => "--set",
            Origin::Image => "image default",
            Origin::Socle => "socle",
        }
    }
}

/// Tells where each value came from.
pub type Origins<'a> = &'a dyn Fn(&str) -> Origin;

/// Command-line settings of a unit: split into words, `$VAR` expanded.
const EXEC_KEYS: &[&str] = &[
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecStop",
    "ExecStopPost",
    "ExecReload",
    "ExecCondition",
];

/// socle's own command lines, already written in unit syntax.
const UNIT_COMMANDS: &[&str] = &["EXEC_START", "EXEC_STOP", "EXEC_STARTPRE", "EXEC_STOPPOST"];

/// systemd's word separators (`WHITESPACE`): not Unicode's.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn control_char(value: &str, allow_tab: bool) -> Option<String> {
    let c = value
        .chars()
        .find(|&c| c.is_control() && !(allow_tab && c == '\t'))?;
    Some(match c {
        '\n' | '\r' => "it contains a newline".to_string(),
        c => format!("it contains the control character {:?}", c),
    })
}

// ---------------------------------------------------------------- JSON

/// `config.json.template`: inside a JSON string a value is JSON-escaped;
/// outside one it must be a JSON scalar (a list of scalars inside `[...]`).
pub struct Json<'a> {
    origins: Origins<'a>,
    in_string: bool,
    escaped: bool,
    /// Open `{` and `[` outside strings.
    open: Vec<char>,
}

impl<'a> Json<'a> {
    pub fn new(origins: Origins<'a>) -> Self {
        Json {
            origins,
            in_string: false,
            escaped: false,
            open: Vec::new(),
        }
    }
}

/// `value` as the inside of a JSON string.
pub fn json_string_content(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

fn is_scalar(v: &serde_json::Value) -> bool {
    !(v.is_object() || v.is_array())
}

impl Sink for Json<'_> {
    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.open.push(c),
                '}' | ']' => {
                    self.open.pop();
                }
                _ => {}
            }
        }
    }

    fn value(&mut self, name: &str, value: &str) -> Result<String, String> {
        if self.in_string {
            if self.escaped {
                return Err("it follows a backslash inside a JSON string of the template".into());
            }
            return Ok(json_string_content(value));
        }
        // socle's capability list is a list of JSON strings by design.
        if name == "ALL_PROCESS_CAPABILITIES" && (self.origins)(name) == Origin::Socle {
            return Ok(value.to_string());
        }
        let in_array = self.open.last() == Some(&'[');
        let ok = if in_array {
            serde_json::from_str::<Vec<serde_json::Value>>(&format!("[{value}]"))
                .is_ok_and(|items| items.iter().all(is_scalar))
        } else {
            serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| is_scalar(&v))
        };
        if ok {
            Ok(value.to_string())
        } else if in_array {
            Err(format!("outside a JSON string it must be JSON numbers, true, false, null or \"quoted strings\", separated by commas, not {value:?}"))
        } else {
            Err(format!("outside a JSON string it must be one JSON number, true, false, null or \"quoted string\", not {value:?}"))
        }
    }

    fn origin(&self, name: &str) -> String {
        (self.origins)(name).label().to_string()
    }
}

// ---------------------------------------------------------------- units

/// Where on a unit file line the text is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UnitPart {
    LineStart,
    Key(String),
    Section,
    Comment,
    /// A setting's value that is free text (`Description=`, `User=`, …).
    Text,
    /// A value split into words: a command line (`exec`) or `Environment=`.
    Words {
        exec: bool,
    },
}

/// A unit file (`service.template`): `%` doubled everywhere, newlines
/// refused, values inside command lines and `Environment=` escaped so that
/// they stay inside their word.
pub struct Unit<'a> {
    origins: Origins<'a>,
    part: UnitPart,
    /// The previous character, for `\` line continuations.
    last: char,
    quote: Option<char>,
    escaped: bool,
    /// The word being read, and how many words came before in this command.
    word: Option<String>,
    word_index: usize,
}

impl<'a> Unit<'a> {
    pub fn new(origins: Origins<'a>) -> Self {
        Unit {
            origins,
            part: UnitPart::LineStart,
            last: '\n',
            quote: None,
            escaped: false,
            word: None,
            word_index: 0,
        }
    }

    fn end_word(&mut self) {
        if let Some(word) = self.word.take() {
            // A lone `;` separates two command lines.
            self.word_index = if word == ";" { 0 } else { self.word_index + 1 };
        }
    }

    fn word_char(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            self.word.get_or_insert_with(String::new).push(c);
            return;
        }
        if c == '\\' {
            self.escaped = true;
            self.word.get_or_insert_with(String::new).push(c);
            return;
        }
        if let Some(q) = self.quote {
            if c == q {
                self.quote = None;
            }
            self.word.get_or_insert_with(String::new).push(c);
            return;
        }
        if is_separator(c) {
            self.end_word();
            return;
        }
        if c == '"' || c == '\'' {
            self.quote = Some(c);
        }
        self.word.get_or_insert_with(String::new).push(c);
    }

    fn newline(&mut self) {
        let continued =
            self.last == '\\' && matches!(self.part, UnitPart::Text | UnitPart::Words { .. });
        if continued {
            // systemd joins the lines with a space.
            if let UnitPart::Words { .. } = self.part {
                self.escaped = false;
                if let Some(w) = &mut self.word {
                    w.pop();
                }
                self.end_word();
            }
            return;
        }
        self.part = UnitPart::LineStart;
        self.quote = None;
        self.escaped = false;
        self.word = None;
        self.word_index = 0;
    }
}

/// `value` written inside a word of a unit's command line or `Environment=`:
/// it reads back as itself after systemd unquotes and unescapes the word.
fn unit_word(value: &str, expand_dollar: bool) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            ' ' => out.push_str("\\x20"),
            '\t' => out.push_str("\\t"),
            ';' => out.push_str("\\x3b"),
            '%' => out.push_str("%%"),
            '$' if expand_dollar => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl Sink for Unit<'_> {
    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            if c == '\n' {
                self.newline();
                self.last = c;
                continue;
            }
            match &mut self.part {
                UnitPart::LineStart if is_separator(c) => {}
                UnitPart::LineStart => {
                    self.part = match c {
                        '#' | ';' => UnitPart::Comment,
                        '[' => UnitPart::Section,
                        c => UnitPart::Key(c.to_string()),
                    }
                }
                UnitPart::Key(key) if c == '=' => {
                    let key = key.trim();
                    self.part = if EXEC_KEYS.contains(&key) {
                        UnitPart::Words { exec: true }
                    } else if key == "Environment" {
                        UnitPart::Words { exec: false }
                    } else {
                        UnitPart::Text
                    };
                }
                UnitPart::Key(key) => key.push(c),
                UnitPart::Words { .. } => self.word_char(c),
                UnitPart::Section | UnitPart::Comment | UnitPart::Text => {}
            }
            self.last = c;
        }
    }

    fn value(&mut self, name: &str, value: &str) -> Result<String, String> {
        let origin = (self.origins)(name);
        if UNIT_COMMANDS.contains(&name) && origin == Origin::Socle {
            self.literal(value);
            return Ok(value.to_string());
        }
        if let Some(problem) = control_char(value, true) {
            return Err(problem);
        }
        let out = match self.part.clone() {
            UnitPart::LineStart | UnitPart::Key(_) | UnitPart::Section => {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "it would be part of a section or setting name, which allows only letters, digits, '_' and '-', not {value:?}"
                    ));
                }
                value.to_string()
            }
            UnitPart::Comment => value.to_string(),
            UnitPart::Text => {
                if value.ends_with('\\') {
                    return Err("it ends with a backslash, which would continue the line".into());
                }
                value.replace('%', "%%")
            }
            UnitPart::Words { exec } => {
                let starts_command = exec && self.word_index == 0 && self.word.is_none();
                if starts_command && value.starts_with(['-', '@', ':', '+', '!', '|']) {
                    return Err(format!(
                        "it starts a command line, where {:?} would be read as a prefix of the command",
                        &value[..1]
                    ));
                }
                // systemd expands `$VAR` in the arguments, not in the executable.
                let escaped = unit_word(value, exec && self.word_index > 0);
                if !value.is_empty() {
                    self.word.get_or_insert_with(String::new).push_str(&escaped);
                }
                escaped
            }
        };
        if let Some(c) = out.chars().last() {
            self.last = c;
        }
        Ok(out)
    }

    fn origin(&self, name: &str) -> String {
        (self.origins)(name).label().to_string()
    }
}

// ---------------------------------------------------------------- tmpfiles

/// tmpfiles.d lines (`tmpfiles.template`): whitespace-separated fields
/// (type, path, mode, user, group, age), then the argument, the rest of
/// the line.
pub struct Tmpfiles<'a> {
    origins: Origins<'a>,
    comment: bool,
    /// Fields completed on this line (6: in the argument).
    field: usize,
    in_word: bool,
    quote: Option<char>,
    escaped: bool,
}

/// Index of the argument field.
const ARGUMENT: usize = 6;

impl<'a> Tmpfiles<'a> {
    pub fn new(origins: Origins<'a>) -> Self {
        Tmpfiles {
            origins,
            comment: false,
            field: 0,
            in_word: false,
            quote: None,
            escaped: false,
        }
    }

    fn char(&mut self, c: char) {
        if c == '\n' {
            *self = Tmpfiles::new(self.origins);
            return;
        }
        if self.comment || self.field == ARGUMENT {
            return;
        }
        if !self.in_word && self.field == 0 && c == '#' {
            self.comment = true;
            return;
        }
        if self.escaped {
            self.escaped = false;
        } else if c == '\\' {
            self.escaped = true;
        } else if let Some(q) = self.quote {
            if c == q {
                self.quote = None;
            }
        } else if is_separator(c) {
            if self.in_word {
                self.in_word = false;
                self.field += 1;
            }
            return;
        } else if c == '"' || c == '\'' {
            self.quote = Some(c);
        }
        self.in_word = true;
    }
}

/// `value` as (part of) one of the fields 1-6 of a tmpfiles.d line: there a
/// backslash takes the next character as it is, quoted or not.
pub fn tmpfiles_field(value: &str, specifiers: bool) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if is_separator(c) || matches!(c, '"' | '\'' | '\\') {
            out.push('\\');
        }
        if c == '%' && specifiers {
            out.push('%');
        }
        out.push(c);
    }
    out
}

/// `value` inside the argument field, which takes C escapes and specifiers.
fn tmpfiles_argument(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            ' ' => out.push_str("\\x20"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

impl Sink for Tmpfiles<'_> {
    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            self.char(c);
        }
    }

    fn value(&mut self, _: &str, value: &str) -> Result<String, String> {
        if let Some(problem) = control_char(value, true) {
            return Err(problem);
        }
        if self.comment {
            return Ok(value.to_string());
        }
        if self.field == ARGUMENT {
            return Ok(tmpfiles_argument(value));
        }
        let out = if value.is_empty() && !self.in_word && self.quote.is_none() {
            // An empty field would shift the fields after it.
            "\"\"".to_string()
        } else {
            // Only the path (field 1) expands specifiers.
            tmpfiles_field(value, self.field == 1)
        };
        self.in_word = true;
        Ok(out)
    }

    fn origin(&self, name: &str) -> String {
        (self.origins)(name).label().to_string()
    }
}

#[cfg(test)]
mod tests;
