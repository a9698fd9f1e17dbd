//! Shared helpers for the CLI tests: fixture images built once per test
//! binary by `scripts/build-image` (umoci + skopeo, never hand-written
//! blobs), and a `Socle` environment per test (state dir, unit dir, tmpfiles
//! dir and host root under one temporary directory, `--systemd none`).

#![allow(dead_code)] // each test file uses a different subset

pub mod registry;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The repository root (agent/..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The images every test may use, built once per process.
pub struct Fixtures {
    pub dir: PathBuf,
    /// hello 1 as an OCI archive (ref "1": pulled as `hello:1`).
    pub oci_archive: PathBuf,
    /// hello 1 as a `docker save` tarball (RepoTag `hello:1`).
    pub docker_archive: PathBuf,
    /// An OCI layout directory holding hello 1 under the ref "1" (pulled as
    /// `hello:1`: the directory is named `hello`).
    pub oci_dir: PathBuf,
    /// hello 2 as an OCI archive (`hello:2`): same busybox base layer.
    pub v2_archive: PathBuf,
    /// hello 1 without /exports (`noexports:1`).
    pub no_exports: PathBuf,
    /// hello 1 whose /exports/service.template uses an unknown `$FOO`
    /// (`badtemplate:1`).
    pub bad_template: PathBuf,
    /// hello 1 with a layer removing /usr/bin/hello-greeter (from the image
    /// layer) and /bin/wget (from the base layer) (`whiteout:1`).
    pub whiteout: PathBuf,
    /// Manifest digests (`sha256:…`) as build-image reports them.
    pub v1_digest: String,
    pub v2_digest: String,
}

static FIXTURES: OnceLock<Fixtures> = OnceLock::new();

pub fn fixtures() -> &'static Fixtures {
    FIXTURES.get_or_init(build_fixtures)
}

fn build_fixtures() -> Fixtures {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&base).unwrap();
    remove_stale_fixture_dirs(&base);
    let dir = base.join(format!("fixtures-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("oci")).unwrap();
    fs::create_dir_all(dir.join("v2")).unwrap();

    let bad_service = dir.join("bad-service.template");
    fs::write(
        &bad_service,
        "[Unit]\nDescription=hello $NAME\n\n[Service]\nExecStart=$EXEC_START\n\
         Environment=GREETING=$FOO\nWorkingDirectory=$DESTDIR\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();

    let f = Fixtures {
        oci_archive: dir.join("hello.tar"),
        docker_archive: dir.join("hello-docker.tar"),
        oci_dir: dir.join("oci/hello"),
        v2_archive: dir.join("v2/hello.tar"),
        no_exports: dir.join("noexports.tar"),
        bad_template: dir.join("badtemplate.tar"),
        whiteout: dir.join("whiteout.tar"),
        v1_digest: String::new(),
        v2_digest: String::new(),
        dir,
    };
    let p = |p: &Path| p.display().to_string();
    let v1_digest_file = f.dir.join("v1.digest");
    let v2_digest_file = f.dir.join("v2.digest");
    // (options, destinations) of each build-image run.
    let builds: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["--digest-file".into(), p(&v1_digest_file)],
            vec![
                format!("oci-archive:{}", p(&f.oci_archive)),
                format!("docker-archive:{}", p(&f.docker_archive)),
                format!("oci:{}", p(&f.oci_dir)),
            ],
        ),
        (
            vec![
                "--version".into(),
                "2".into(),
                "--digest-file".into(),
                p(&v2_digest_file),
            ],
            vec![format!("oci-archive:{}", p(&f.v2_archive))],
        ),
        (
            vec!["--without-exports".into()],
            vec![format!("oci-archive:{}", p(&f.no_exports))],
        ),
        (
            vec![
                "--add-file".into(),
                format!("{}:/exports/service.template", p(&bad_service)),
            ],
            vec![format!("oci-archive:{}", p(&f.bad_template))],
        ),
        (
            vec![
                "--remove".into(),
                "/usr/bin/hello-greeter".into(),
                "--remove".into(),
                "/bin/wget".into(),
            ],
            vec![format!("oci-archive:{}", p(&f.whiteout))],
        ),
    ];
    build_images(builds);
    let read_digest = |p: &Path| fs::read_to_string(p).unwrap().trim().to_string();
    Fixtures {
        v1_digest: read_digest(&v1_digest_file),
        v2_digest: read_digest(&v2_digest_file),
        ..f
    }
}

/// Runs `scripts/build-image OPTIONS images/hello DESTINATIONS` for every
/// (options, destinations) pair, all at once, and waits for them.
fn build_images(builds: Vec<(Vec<String>, Vec<String>)>) {
    let p = |p: &Path| p.display().to_string();
    let root = repo_root();
    let children: Vec<_> = builds
        .into_iter()
        .map(|(opts, dests)| {
            let mut args = opts;
            args.push(p(&root.join("images/hello")));
            args.extend(dests);
            let child = Command::new(root.join("scripts/build-image"))
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("running scripts/build-image");
            (args, child)
        })
        .collect();
    for (args, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "scripts/build-image {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Variants of hello 1 for the update tests, each an OCI archive named
/// `hello.tar` in a directory of its own, with its own tag (so each pulls
/// as `hello:TAG`). Built once per process, after (and beside) `fixtures()`.
pub struct UpdateFixtures {
    /// Other manifest defaults: PORT 8082 (was 8081), RECEIVER "everyone"
    /// (was "world") (`hello:newdefaults`).
    pub new_defaults: PathBuf,
    /// A manifest without the PORT default, which the templates use
    /// (`hello:noport`).
    pub no_port_default: PathBuf,
    /// /exports/hostfs/etc/hello/hello.conf with other text: its first line
    /// is `NEW_CONF_MARKER` (`hello:newconf`).
    pub new_conf: PathBuf,
    /// Without /bin/wget (base layer) and /usr/share/hello/version (image
    /// layer) (`hello:slim`).
    pub slim: PathBuf,
}

/// The first line of the host file template of `UpdateFixtures::new_conf`.
pub const NEW_CONF_MARKER: &str = "# hello.conf, new edition";

static UPDATE_FIXTURES: OnceLock<UpdateFixtures> = OnceLock::new();

pub fn update_fixtures() -> &'static UpdateFixtures {
    UPDATE_FIXTURES.get_or_init(build_update_fixtures)
}

fn build_update_fixtures() -> UpdateFixtures {
    let dir = fixtures().dir.join("update");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let hello = repo_root().join("images/hello/exports");
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(hello.join("manifest.json")).unwrap()).unwrap();

    let mut new_defaults = manifest.clone();
    new_defaults["defaultValues"]["PORT"] = "8082".into();
    new_defaults["defaultValues"]["RECEIVER"] = "everyone".into();
    let new_defaults_file = dir.join("manifest-newdefaults.json");
    fs::write(&new_defaults_file, new_defaults.to_string()).unwrap();

    let mut no_port = manifest;
    no_port["defaultValues"]
        .as_object_mut()
        .unwrap()
        .remove("PORT")
        .expect("hello's manifest has a PORT default");
    let no_port_file = dir.join("manifest-noport.json");
    fs::write(&no_port_file, no_port.to_string()).unwrap();

    let conf = fs::read_to_string(hello.join("hostfs/etc/hello/hello.conf")).unwrap();
    let new_conf_file = dir.join("hello.conf");
    fs::write(&new_conf_file, format!("{NEW_CONF_MARKER}\n{conf}")).unwrap();

    let f = UpdateFixtures {
        new_defaults: dir.join("newdefaults/hello.tar"),
        no_port_default: dir.join("noport/hello.tar"),
        new_conf: dir.join("newconf/hello.tar"),
        slim: dir.join("slim/hello.tar"),
    };
    let p = |p: &Path| p.display().to_string();
    let variant = |tag: &str, extra: Vec<String>, dest: &Path| {
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut opts = vec!["--tag".to_string(), tag.to_string()];
        opts.extend(extra);
        (opts, vec![format!("oci-archive:{}", p(dest))])
    };
    build_images(vec![
        variant(
            "newdefaults",
            vec![
                "--add-file".into(),
                format!("{}:/exports/manifest.json", p(&new_defaults_file)),
            ],
            &f.new_defaults,
        ),
        variant(
            "noport",
            vec![
                "--add-file".into(),
                format!("{}:/exports/manifest.json", p(&no_port_file)),
            ],
            &f.no_port_default,
        ),
        variant(
            "newconf",
            vec![
                "--add-file".into(),
                format!("{}:/exports/hostfs/etc/hello/hello.conf", p(&new_conf_file)),
            ],
            &f.new_conf,
        ),
        variant(
            "slim",
            vec![
                "--remove".into(),
                "/bin/wget".into(),
                "--remove".into(),
                "/usr/share/hello/version".into(),
            ],
            &f.slim,
        ),
    ]);
    f
}

/// Removes fixture directories left by earlier test processes.
fn remove_stale_fixture_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("fixtures-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A fresh socle environment: everything socle writes lands under `root`.
pub struct Socle {
    tmp: tempfile::TempDir,
    /// Environment changes for every command: `(KEY, Some(VALUE))` sets,
    /// `(KEY, None)` removes.
    env: Vec<(String, Option<String>)>,
}

impl Default for Socle {
    fn default() -> Self {
        Self::new()
    }
}

impl Socle {
    pub fn new() -> Socle {
        let tmp = tempfile::Builder::new()
            .prefix("socle-cli-")
            .tempdir()
            .expect("creating a temp dir");
        Socle {
            tmp,
            env: Vec::new(),
        }
    }

    /// Sets `key=value` in the environment of every command.
    pub fn with_env(mut self, key: &str, value: &str) -> Socle {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Removes `key` from the environment of every command.
    pub fn without_env(mut self, key: &str) -> Socle {
        self.env.push((key.to_string(), None));
        self
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }
    pub fn state(&self) -> PathBuf {
        self.root().join("state")
    }
    pub fn repo(&self) -> PathBuf {
        self.state().join("repo")
    }
    pub fn containers(&self) -> PathBuf {
        self.state().join("containers")
    }
    /// The slot directory `NAME.N`.
    pub fn slot(&self, name: &str, n: u32) -> PathBuf {
        self.containers().join(format!("{name}.{n}"))
    }
    pub fn units(&self) -> PathBuf {
        self.root().join("units")
    }
    pub fn tmpfiles(&self) -> PathBuf {
        self.root().join("tmpfiles")
    }
    pub fn host(&self) -> PathBuf {
        self.root().join("host")
    }
    /// An absolute host path under the host root.
    pub fn on_host(&self, path: &str) -> PathBuf {
        self.host().join(path.trim_start_matches('/'))
    }
    /// A scratch directory for test inputs (inside the environment, so the
    /// snapshot also shows that socle leaves its inputs alone).
    pub fn inputs(&self) -> PathBuf {
        let d = self.root().join("inputs");
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socle"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SOCLE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--state-dir")
            .arg(self.state())
            .arg("--unit-dir")
            .arg(self.units())
            .arg("--tmpfiles-dir")
            .arg(self.tmpfiles())
            .arg("--host-root")
            .arg(self.host())
            .args(["--systemd", "none"])
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("running the socle binary")
    }

    /// Runs socle, asserts success, returns (stdout, stderr).
    pub fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "socle {} failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
            args.join(" "),
            out.status
        );
        (stdout, stderr)
    }

    /// Runs socle, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stderr(args).0
    }

    /// Runs socle with `--json`, asserts success, parses stdout. Commands
    /// that stream (pull) print one JSON object per line; their result is
    /// the last line.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let lines = self.json_lines(args);
        if lines.len() == 1 {
            return lines.into_iter().next().expect("one value");
        }
        lines.into_iter().last().expect("at least one value")
    }

    /// Runs socle with `--json`, asserts success, parses stdout as a
    /// sequence of JSON values (one per line, or one pretty document).
    pub fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| {
                panic!("socle {}: stdout is not JSON ({e}):\n{out}", all.join(" "))
            });
        assert!(
            !values.is_empty(),
            "socle {}: no JSON on stdout",
            all.join(" ")
        );
        values
    }

    /// Runs socle, asserts exit code 1 and a one-line `error: ...` on
    /// stderr, returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "socle {}: expected exit code 1, got {}\nstderr:\n{stderr}\nstdout:\n{stdout}",
            args.join(" "),
            out.status
        );
        let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
        assert!(
            !line.contains('\n') && line.starts_with("error: "),
            "socle {}: expected one line `error: ...` on stderr, got:\n{stderr}",
            args.join(" ")
        );
        line.to_string()
    }

    /// Pulls the hello 1 OCI archive (`hello:1`).
    pub fn pull_hello(&self) {
        self.ok(&["pull", &oci_archive(&fixtures().oci_archive)]);
    }

    /// A sorted listing of the whole environment: path, type, size and
    /// sha256 of file contents (symlinks with their targets).
    ///
    /// Leaves out socle's lock file `state/lock`, and `state/repo/.lock` and
    /// `state/repo/tmp/`: libostree's lock file and scratch space (it keeps an empty staging directory for reuse
    /// after an aborted transaction); neither holds content or state.
    pub fn snapshot(&self) -> Vec<String> {
        let mut lines = Vec::new();
        walk(self.root(), self.root(), &mut lines);
        lines.retain(|l| {
            !l.starts_with("state/lock\t")
                && !l.starts_with("state/repo/.lock\t")
                && !l.starts_with("state/repo/tmp/")
        });
        lines.sort();
        lines
    }

    /// Asserts the environment still matches `before`, listing what differs.
    pub fn assert_unchanged(&self, before: &[String]) {
        let after = self.snapshot();
        if after == before {
            return;
        }
        let b: BTreeSet<_> = before.iter().collect();
        let a: BTreeSet<_> = after.iter().collect();
        let gone: Vec<_> = b.difference(&a).collect();
        let new: Vec<_> = a.difference(&b).collect();
        panic!(
            "the environment changed (store and host should be as they were)\n\
             only before:\n  {}\nonly after:\n  {}",
            gone.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            new.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            out.push(format!("{rel}\tsymlink -> {}", target.display()));
        } else if ft.is_dir() {
            out.push(format!("{rel}\tdir"));
            walk(root, &path, out);
        } else if ft.is_file() {
            out.push(format!(
                "{rel}\tfile\t{}\t{}",
                meta.len(),
                sha256_file(&path)
            ));
        } else if ft.is_fifo() {
            out.push(format!("{rel}\tfifo"));
        } else if ft.is_socket() {
            out.push(format!("{rel}\tsocket"));
        } else {
            out.push(format!("{rel}\tdevice {}", meta.rdev()));
        }
    }
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Runs a tool with no stdin, expects success, returns its stdout; on
/// failure the assertion shows the command line and both outputs.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Copies a directory tree (files, dirs, symlinks).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&from, &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}

/// Every path below `dir` (not following symlinks).
pub fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A port nobody listens on right now (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `oci-archive:FILE` reference of an archive.
pub fn oci_archive(p: &Path) -> String {
    format!("oci-archive:{}", p.display())
}
