//! Containers declared in files: `NAME.toml` in `containers.d` directories,
//! read with systemd's precedence (`/etc` over `/run` over `/usr/lib`; an
//! empty file or a link to `/dev/null` masks the name), each checked alone
//! and then together (dependencies exist, no cycle), in dependency order.
//!
//! A declaration that fails a check is reported with its file, line and
//! key, and is left out with everything that depends on it; the others
//! stand.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::template::Values;

/// Where declarations are read from, most important first.
pub const DEFAULT_DIRS: [&str; 3] = [
    "/etc/socle/containers.d",
    "/run/socle/containers.d",
    "/usr/lib/socle/containers.d",
];

/// The file format, as other tools write it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    image: Spanned<String>,
    seed: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    values: BTreeMap<String, Spanned<String>>,
}

/// Whether a declared container's service should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wanted {
    Running,
    Stopped,
}

/// One declared container, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Declaration {
    pub name: String,
    pub file: PathBuf,
    /// A reference as `socle pull` takes it.
    pub image: String,
    /// A local source imported when the image is not in the store.
    pub seed: Option<String>,
    pub state: Wanted,
    /// Declared containers this one needs (started before it).
    pub after: Vec<String>,
    pub values: Values,
}

/// Why a declaration was left out: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub name: String,
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub line: usize,
    /// The key at fault, when there is one.
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every declaration of the directories: the valid ones in dependency
/// order (a container after those it needs), and the problems.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Declared {
    pub containers: Vec<Declaration>,
    pub problems: Vec<Problem>,
    /// Names masked by an empty file or a link to /dev/null.
    pub masked: Vec<String>,
}

/// Reads and checks the declarations of `dirs` (most important first).
pub fn read(dirs: &[PathBuf]) -> Declared {
    let mut out = Declared::default();
    let mut checked: BTreeMap<String, Declaration> = BTreeMap::new();
    for (name, file) in winners(dirs, &mut out.problems) {
        if is_mask(&file) {
            out.masked.push(name);
            continue;
        }
        match parse(&name, &file) {
            Ok(d) => {
                checked.insert(name, d);
            }
            Err(p) => out.problems.push(p),
        }
    }
    let (ordered, problems) = order(checked);
    out.containers = ordered;
    out.problems.extend(problems);
    out
}

/// The file that declares each name: the first directory that has
/// `NAME.toml` wins.
fn winners(dirs: &[PathBuf], problems: &mut Vec<Problem>) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            if name.starts_with('.') {
                continue; // editors' and tools' temporary files
            }
            if found.contains_key(name) {
                continue;
            }
            if let Err(e) = crate::deploy::validate_name(name) {
                problems.push(Problem {
                    name: name.to_string(),
                    file: path.clone(),
                    line: 0,
                    key: None,
                    message: format!("the file name is the container's name: {e:#}"),
                });
            }
            found.insert(name.to_string(), path);
        }
    }
    found.retain(|name, _| !problems.iter().any(|p| &p.name == name));
    found
}

/// An empty file or a link to /dev/null: the name is masked, as in systemd.
fn is_mask(file: &Path) -> bool {
    if fs::read_link(file).is_ok_and(|t| t == Path::new("/dev/null")) {
        return true;
    }
    fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() == 0)
}

fn parse(name: &str, file: &Path) -> Result<Declaration, Problem> {
    let problem = |line: usize, key: Option<&str>, message: String| Problem {
        name: name.to_string(),
        file: file.to_path_buf(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let text =
        fs::read_to_string(file).map_err(|e| problem(0, None, format!("cannot be read: {e}")))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let parsed: File = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(s.start));
        let message = e.message().trim().to_string();
        problem(line, None, format!("{message} (see docs/declarations.md)"))
    })?;
    let at = |s: &Spanned<String>| line_of(s.span().start);
    let image = parsed.image.get_ref().trim().to_string();
    if image.is_empty() {
        return Err(problem(
            at(&parsed.image),
            Some("image"),
            "is empty: give a reference as `socle pull` takes it".into(),
        ));
    }
    if let Err(e) = image.parse::<crate::reference::ImageRef>() {
        return Err(problem(at(&parsed.image), Some("image"), format!("{e:#}")));
    }
    if let Some(seed) = &parsed.seed {
        match seed.get_ref().parse::<crate::reference::ImageRef>() {
            Ok(r) if r.path().is_some() => {}
            Ok(_) => {
                return Err(problem(
                    at(seed),
                    Some("seed"),
                    "must be a local source: oci-archive:FILE, oci:DIR or docker-archive:FILE"
                        .into(),
                ))
            }
            Err(e) => return Err(problem(at(seed), Some("seed"), format!("{e:#}"))),
        }
    }
    let state = match parsed.state.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("running", _)) => Wanted::Running,
        Some(("stopped", _)) => Wanted::Stopped,
        Some((other, s)) => {
            return Err(problem(
                at(s),
                Some("state"),
                format!("{other:?} is not a state: give \"running\" or \"stopped\""),
            ))
        }
    };
    let mut values = Values::new();
    for (key, value) in &parsed.values {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(problem(
                at(value),
                Some(&format!("values.{key}")),
                "is not a variable name: letters, digits and '_'".into(),
            ));
        }
        if value.get_ref().contains(['\n', '\r']) {
            return Err(problem(
                at(value),
                Some(&format!("values.{key}")),
                "contains a line break, which no unit or config line can hold".into(),
            ));
        }
        values.insert(key.clone(), value.get_ref().clone());
    }
    let mut after = Vec::new();
    for dep in &parsed.after {
        if dep.get_ref() == name {
            return Err(problem(
                at(dep),
                Some("after"),
                "names the container itself".into(),
            ));
        }
        after.push(dep.get_ref().clone());
    }
    Ok(Declaration {
        name: name.to_string(),
        file: file.to_path_buf(),
        image,
        seed: parsed.seed.map(|s| s.into_inner()),
        state,
        after,
        values,
    })
}

/// Orders the declarations so each comes after those it names in `after`.
/// A declaration naming an unknown one, or in a cycle, is a problem, and
/// so is everything that depends on a declaration left out.
fn order(mut all: BTreeMap<String, Declaration>) -> (Vec<Declaration>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut ordered: Vec<Declaration> = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    loop {
        let ready: Vec<String> = all
            .values()
            .filter(|d| d.after.iter().all(|a| placed.contains(a)))
            .map(|d| d.name.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            let d = all.remove(&name).expect("ready names are in the map");
            placed.insert(name);
            ordered.push(d);
        }
    }
    // What is left waits on a missing declaration or on a cycle.
    let waiting: BTreeSet<String> = all.keys().cloned().collect();
    for d in all.values() {
        let missing: Vec<&String> = d
            .after
            .iter()
            .filter(|a| !placed.contains(*a) && !waiting.contains(*a))
            .collect();
        let message = if let Some(m) = missing.first() {
            format!("needs {m:?}, which is not declared or was left out (see above)")
        } else if in_cycle(&all, &d.name) {
            format!(
                "is in a dependency cycle ({}): remove one of these `after` entries",
                cycle_path(&all, &d.name).join(" -> ")
            )
        } else {
            let blocked: Vec<&str> = d
                .after
                .iter()
                .map(String::as_str)
                .filter(|a| waiting.contains(*a))
                .collect();
            format!(
                "needs {}, which cannot be applied (see above)",
                blocked.join(", ")
            )
        };
        problems.push(Problem {
            name: d.name.clone(),
            file: d.file.clone(),
            line: after_line(&d.file),
            key: Some("after".into()),
            message,
        });
    }
    (ordered, problems)
}

/// Whether `start` can reach itself through `after`.
fn in_cycle(all: &BTreeMap<String, Declaration>, start: &str) -> bool {
    !cycle_path(all, start).is_empty()
}

/// `start -> ... -> start` through `after`, or empty.
fn cycle_path(all: &BTreeMap<String, Declaration>, start: &str) -> Vec<String> {
    fn walk(
        all: &BTreeMap<String, Declaration>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(d) = all.get(at) else { return false };
        for next in &d.after {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(all, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    if walk(all, start, start, &mut path, &mut seen) {
        path
    } else {
        Vec::new()
    }
}

/// The line of the `after` key in a declaration file (for messages).
fn after_line(file: &Path) -> usize {
    fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines()
                .position(|l| l.trim_start().starts_with("after"))
                .map(|i| i + 1)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(files: &[(&str, &str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let tmp = tempfile::tempdir().unwrap();
        let names = ["etc", "run", "lib"];
        let dirs: Vec<PathBuf> = names.iter().map(|n| tmp.path().join(n)).collect();
        for d in &dirs {
            fs::create_dir_all(d).unwrap();
        }
        for (dir, name, text) in files {
            let d = tmp.path().join(dir);
            fs::write(d.join(format!("{name}.toml")), text).unwrap();
        }
        (tmp, dirs)
    }

    fn names(d: &Declared) -> Vec<&str> {
        d.containers.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_full_declaration_reads_back() {
        let (_t, dirs) = dirs(&[(
            "etc",
            "etcd",
            "image = \"127.0.0.1:5000/etcd:3.4\"\nseed = \"oci-archive:/usr/share/socle/images/etcd.tar\"\nstate = \"stopped\"\n[values]\nETCD_NAME = \"n1\"\n",
        )]);
        let d = read(&dirs);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let c = &d.containers[0];
        assert_eq!(c.name, "etcd");
        assert_eq!(c.image, "127.0.0.1:5000/etcd:3.4");
        assert_eq!(
            c.seed.as_deref(),
            Some("oci-archive:/usr/share/socle/images/etcd.tar")
        );
        assert_eq!(c.state, Wanted::Stopped);
        assert_eq!(c.values["ETCD_NAME"], "n1");
    }

    #[test]
    fn etc_overrides_run_and_lib_and_an_empty_file_masks() {
        let (_t, dirs) = dirs(&[
            ("lib", "a", "image = \"lib/a:1\""),
            ("etc", "a", "image = \"etc/a:1\""),
            ("run", "b", "image = \"run/b:1\""),
            ("lib", "b", "image = \"lib/b:1\""),
            ("lib", "c", "image = \"lib/c:1\""),
            ("etc", "c", ""),
        ]);
        let d = read(&dirs);
        assert_eq!(names(&d), ["a", "b"]);
        assert_eq!(d.containers[0].image, "etc/a:1");
        assert_eq!(d.containers[1].image, "run/b:1");
        assert_eq!(d.masked, ["c"]);
    }

    #[test]
    fn a_link_to_dev_null_masks() {
        let (_t, dirs) = dirs(&[("lib", "a", "image = \"a:1\"")]);
        std::os::unix::fs::symlink("/dev/null", dirs[0].join("a.toml")).unwrap();
        let d = read(&dirs);
        assert!(d.containers.is_empty());
        assert_eq!(d.masked, ["a"]);
    }

    #[test]
    fn dependencies_come_first() {
        let (_t, dirs) = dirs(&[
            ("etc", "dockerd", "image = \"d:1\"\nafter = [\"flannel\"]"),
            ("etc", "flannel", "image = \"f:1\"\nafter = [\"etcd\"]"),
            ("etc", "etcd", "image = \"e:1\""),
            ("etc", "greeter", "image = \"g:1\""),
        ]);
        let d = read(&dirs);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(names(&d), ["etcd", "greeter", "flannel", "dockerd"]);
    }

    fn one_problem(files: &[(&str, &str, &str)]) -> Problem {
        let (_t, dirs) = dirs(files);
        let d = read(&dirs);
        assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
        d.problems[0].clone()
    }

    #[test]
    fn bad_declarations_name_file_line_and_key() {
        let p = one_problem(&[("etc", "a", "image = \"a:1\"\nimage_typo = 2\n")]);
        assert_eq!(p.line, 2, "{p}");
        assert!(p.message.contains("image_typo"), "{p}");

        // A basic string cannot hold a line break: TOML stops at the next line.
        let p = one_problem(&[("etc", "a", "image = \"a:1\"\n[values]\nX = \"one\ntwo\"\n")]);
        assert_eq!(p.line, 4, "{p}");

        let p = one_problem(&[(
            "etc",
            "a",
            "image = \"a:1\"\n[values]\nX = \"\"\"one\ntwo\"\"\"\n",
        )]);
        assert_eq!((p.line, p.key.as_deref()), (3, Some("values.X")), "{p}");
        assert!(p.message.contains("line break"), "{p}");

        let p = one_problem(&[("etc", "a", "seed = \"oci-archive:/x.tar\"\n")]);
        assert!(p.message.contains("image"), "{p}");

        let p = one_problem(&[("etc", "a", "image = \"a:1\"\nstate = \"paused\"\n")]);
        assert_eq!((p.line, p.key.as_deref()), (2, Some("state")), "{p}");

        let p = one_problem(&[(
            "etc",
            "a",
            "image = \"a:1\"\nseed = \"registry.example/a:1\"\n",
        )]);
        assert_eq!(p.key.as_deref(), Some("seed"), "{p}");

        let p = one_problem(&[("etc", "bad@name", "image = \"a:1\"\n")]);
        assert!(p.message.contains("file name"), "{p}");
        assert!(p.to_string().contains("bad@name.toml"), "{p}");
    }

    #[test]
    fn an_unknown_dependency_leaves_out_its_dependents_too() {
        let (_t, dirs) = dirs(&[
            ("etc", "a", "image = \"a:1\"\nafter = [\"nope\"]"),
            ("etc", "b", "image = \"b:1\"\nafter = [\"a\"]"),
            ("etc", "c", "image = \"c:1\""),
        ]);
        let d = read(&dirs);
        assert_eq!(names(&d), ["c"]);
        assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
        assert!(
            d.problems[0].message.contains("\"nope\""),
            "{}",
            d.problems[0]
        );
        assert_eq!(d.problems[0].line, 2);
        assert!(d.problems[1].message.contains("a"), "{}", d.problems[1]);
    }

    #[test]
    fn a_cycle_is_named() {
        let (_t, dirs) = dirs(&[
            ("etc", "a", "image = \"a:1\"\nafter = [\"b\"]"),
            ("etc", "b", "image = \"b:1\"\nafter = [\"a\"]"),
        ]);
        let d = read(&dirs);
        assert!(d.containers.is_empty());
        assert!(
            d.problems
                .iter()
                .all(|p| p.message.contains("a -> b -> a") || p.message.contains("b -> a -> b")),
            "{:?}",
            d.problems
        );
    }
}
