//! The deploy engine driven against recording fakes (`deploy::fakes`) with a
//! real store and real files in a temporary directory: every failpoint of
//! install, uninstall, update, switch and rollback, "crashed" in-process
//! and recovered; every outcome of the health gate; what a stopped or a
//! failing service becomes. No root, no runc, no systemd, no real waiting.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fakes::Fake;
use super::*;
use crate::failpoint::crash_at;
use crate::systemd::JobResult;

const NAME: &str = "web";

/// A tiny image with the whole `/exports` contract: a unit and tmpfiles
/// template, a host file rendered with `GREETING`, and a probe.
fn pack_image(dir: &Path) -> PathBuf {
    let layer = dir.join("layer");
    let files = [
        (
            "exports/manifest.json",
            r#"{"version": "1.0", "defaultValues": {"GREETING": "hello"},
                "installedFilesTemplate": ["/etc/web/web.conf"],
                "healthCheck": {"command": ["/usr/bin/check"]}}"#,
        ),
        (
            "exports/service.template",
            "[Service]\nExecStart=$EXEC_START\nExecStop=$EXEC_STOP\nWorkingDirectory=$DESTDIR\n\n[Install]\nWantedBy=multi-user.target\n",
        ),
        (
            "exports/tmpfiles.template",
            "d ${STATE_DIRECTORY}/$NAME 0755 root root -\n",
        ),
        ("exports/hostfs/etc/web/web.conf", "GREETING=$GREETING\n"),
        ("usr/bin/app", "#!/bin/sh\n"),
    ];
    for (path, text) in files {
        let path = layer.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let archive = dir.join("web.tar");
    crate::builder::pack(
        &crate::builder::PackSpec {
            layers: vec![layer],
            cmd: vec!["/usr/bin/app".into()],
            epoch: 1_700_000_000,
            ..Default::default()
        },
        &crate::builder::Output::Archive {
            path: archive.clone(),
            reference: "1".into(),
        },
    )
    .unwrap();
    archive
}

/// The store holding `web:1`, packed and pulled once per test process (a
/// pull ends in syncfs, slow on a busy disk). Nodes live in directories
/// beside it, so that their checkouts can hardlink into it. It goes to
/// /dev/shm when the store works there (a tmpfs: the engine's fsyncs cost
/// nothing), else to the temporary directory. A static is never dropped:
/// the directory of a run that is over is removed by the next.
fn shared_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let tmpfs = Path::new("/dev/shm");
        let bases = [tmpfs, &std::env::temp_dir()].map(Path::to_path_buf);
        let mut errors = Vec::new();
        for base in bases.iter().filter(|b| b.is_dir()) {
            match make_shared(base) {
                Ok(dir) => return dir,
                Err(e) => errors.push(format!("{}: {e:#}", base.display())),
            }
        }
        panic!("no store for the engine tests: {errors:?}")
    })
}

fn make_shared(base: &Path) -> anyhow::Result<PathBuf> {
    const PREFIX: &str = "socle-engine-tests-";
    for entry in fs::read_dir(base)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix(PREFIX) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let archive = pack_image(&dir);
    let store = Store::open(&dir.join("repo"))?;
    let pulled = crate::pull::pull(
        &store,
        &crate::reference::ImageRef::OciArchive {
            path: archive,
            reference: Some("1".into()),
        },
        &crate::pull::PullOptions {
            name: Some(crate::reference::ImageName::parse("web:1")?),
            jobs: 1,
            ..Default::default()
        },
    );
    if let Err(e) = pulled {
        let _ = fs::remove_dir_all(&dir);
        return Err(e.into());
    }
    Ok(dir)
}

/// One node: its directories, the shared store holding `web:1`, and the
/// fake answering for systemd, runc, tmpfiles, the journal and the clock.
struct Node {
    _dir: tempfile::TempDir,
    fake: Fake,
    host: Host,
    store: Store,
}

fn node() -> Node {
    let shared = shared_dir();
    let dir = tempfile::tempdir_in(shared).unwrap();
    let store = Store::open(&shared.join("repo")).unwrap();
    let fake = Fake::new();
    let host = fake.host(dir.path());
    Node {
        _dir: dir,
        fake,
        host,
        store,
    }
}

impl Node {
    fn install(&self) -> anyhow::Result<InstallReport> {
        install(
            &self.host,
            &self.store,
            &InstallOptions {
                name: NAME,
                image: "web:1",
                set: &[],
                policy: Policy::default(),
            },
        )
    }

    /// Installed, then (if `running`) started, with the calls forgotten.
    fn installed(running: bool) -> Node {
        let n = node();
        n.install().unwrap();
        if running {
            n.fake.set_state("active");
        }
        n.fake.take_calls();
        n
    }

    fn update(&self, greeting: &str) -> anyhow::Result<UpdateReport> {
        update(
            &self.host,
            &self.store,
            &UpdateOptions {
                name: NAME,
                set: &[format!("GREETING={greeting}")],
                policy: Policy::default(),
                rebase: None,
                no_rollback: false,
                timeout: Duration::from_secs(10),
            },
        )
    }

    /// Installed with `hello`, updated to `bye` (slot 1), calls forgotten.
    fn updated(running: bool) -> Node {
        let n = Node::installed(running);
        n.update("bye").unwrap();
        n.fake.take_calls();
        n
    }

    /// Entries of the containers directory, sorted.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.host.containers_dir())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn read(path: PathBuf) -> Option<String> {
        fs::read_to_string(path).ok()
    }

    fn unit(&self) -> Option<String> {
        Self::read(self.host.unit_path(NAME))
    }

    fn tmpfiles(&self) -> Option<String> {
        Self::read(self.host.tmpfiles_path(NAME))
    }

    /// The greeting of the host file, if it is there.
    fn greeting(&self) -> Option<String> {
        let text = Self::read(self.host.on_host(Path::new("/etc/web/web.conf")))?;
        Some(text.trim().trim_start_matches("GREETING=").to_string())
    }

    /// The host shows slot `slot` completely: pointer, unit, tmpfiles and
    /// host file are that slot's, and no journal or staging is left.
    fn assert_on(&self, slot: u32, greeting: &str) {
        let slot_dir = self.host.slot_dir(NAME, slot);
        assert_eq!(self.host.current_slot(NAME), Some(slot));
        assert_eq!(
            self.unit(),
            Self::read(layout::slot_unit(&slot_dir, NAME)),
            "unit"
        );
        assert!(self
            .unit()
            .unwrap()
            .contains(&slot_dir.display().to_string()));
        assert_eq!(
            self.tmpfiles(),
            Self::read(layout::slot_tmpfiles(&slot_dir)),
            "tmpfiles"
        );
        assert_eq!(self.greeting().as_deref(), Some(greeting));
        let left: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|e| e.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Nothing of the container is left.
    fn assert_gone(&self) {
        assert_eq!(self.entries(), Vec::<String>::new());
        assert_eq!(self.unit(), None);
        assert_eq!(self.tmpfiles(), None);
        assert_eq!(self.greeting(), None);
    }

    fn state(&self) -> String {
        self.host
            .systemd
            .active_state(NAME)
            .unwrap()
            .unwrap_or_default()
    }
}

/// Runs `f`, which must crash at `step`.
fn crash<T: std::fmt::Debug>(step: &str, f: impl FnOnce() -> T) {
    let crash = crash_at(step, f).expect_err(step);
    assert_eq!(crash.0, step);
}

fn started(calls: &[String]) -> usize {
    calls.iter().filter(|c| *c == "start web.service").count()
}

#[test]
fn install_publishes_slot_0_and_enables_it_without_starting() {
    let n = node();
    let report = n.install().unwrap();
    assert_eq!(report.deployment, n.host.slot_dir(NAME, 0));
    n.assert_on(0, "hello");
    assert_eq!(n.entries(), ["web", "web.0"]);
    assert_eq!(
        n.fake.take_calls(),
        ["reload", "enable web.service", "tmpfiles --create web.conf"]
    );
    let list = list(&n.host).unwrap();
    assert_eq!(list[0].state, State::Inactive);
}

#[test]
fn an_install_crashed_before_its_pointer_is_undone() {
    for step in [
        "install:after-journal",
        "install:after-staging",
        "install:after-rename",
        "install:after-publish",
    ] {
        let n = node();
        crash(step, || n.install());
        assert!(!n.entries().is_empty(), "{step}: the journal is there");
        let messages = recover_all(&n.host).unwrap();
        assert_eq!(messages.len(), 1, "{step}: {messages:?}");
        n.assert_gone();
        // And it can be installed again.
        n.install().unwrap();
        n.assert_on(0, "hello");
    }
}

#[test]
fn an_install_crashed_after_its_pointer_is_finished() {
    for step in ["install:after-pointer", "install:after-enable"] {
        let n = node();
        crash(step, || n.install());
        n.fake.take_calls();
        // The next command finishes it; the same install asked again reports
        // success, not a conflict.
        let report = n.install().unwrap();
        assert_eq!(
            report.warnings,
            ["finished the interrupted install of web (web:1)"],
            "{step}"
        );
        n.assert_on(0, "hello");
        assert_eq!(
            n.fake.take_calls(),
            ["reload", "enable web.service", "tmpfiles --create web.conf"],
            "{step}"
        );
        assert!(n.install().is_err(), "{step}: installed now");
    }
}

#[test]
fn an_install_crash_is_finished_by_recovery() {
    let n = node();
    crash("install:after-pointer", || n.install());
    let messages = recover_all(&n.host).unwrap();
    assert_eq!(
        messages,
        ["finished the interrupted install of web (web:1)"]
    );
    n.assert_on(0, "hello");
    assert_eq!(list(&n.host).unwrap().len(), 1);
}

#[test]
fn an_uninstall_crashed_anywhere_is_finished_by_recovery() {
    for step in [
        "uninstall:after-journal",
        "uninstall:after-unit",
        "uninstall:after-tmpfiles",
        "uninstall:after-host-files",
        "uninstall:after-pointer",
        "uninstall:after-slots",
    ] {
        let n = Node::updated(true);
        crash(step, || uninstall(&n.host, NAME));
        assert!(list(&n.host).unwrap().is_empty(), "{step}: not listed");
        let messages = recover_all(&n.host).unwrap();
        assert_eq!(
            messages,
            ["finished the interrupted uninstall of web"],
            "{step}"
        );
        n.assert_gone();
        assert_eq!(n.state(), "inactive", "{step}");
    }
}

#[test]
fn uninstall_stops_disables_and_removes_everything() {
    let n = Node::updated(true);
    let report = uninstall(&n.host, NAME).unwrap();
    assert!(report.kept.is_empty());
    n.assert_gone();
    assert_eq!(
        n.fake.take_calls(),
        [
            "stop web.service",
            "runc state web",
            "disable web.service",
            "reload",
            "tmpfiles --remove web.conf",
        ]
    );
}

#[test]
fn an_update_of_a_running_service_passes_the_gate() {
    let n = Node::installed(true);
    let report = n.update("bye").unwrap();
    assert_eq!(report.status, UpdateStatus::Updated);
    assert_eq!(report.slot, 1);
    n.assert_on(1, "bye");
    assert_eq!(n.entries(), ["web", "web.0", "web.1"]);
    assert_eq!(
        n.fake.take_calls(),
        [
            "stop web.service",
            "runc state web",
            "tmpfiles --remove web.conf",
            "reload",
            "enable web.service",
            "tmpfiles --create web.conf",
            "reset-failed web.service",
            "start web.service",
            "runc exec web /usr/bin/check",
        ]
    );
    assert_eq!(n.state(), "active");
    assert!(n.fake.0.slept.get() >= Duration::from_secs(3), "settled");
}

#[test]
fn the_same_values_again_are_up_to_date() {
    let n = Node::updated(true);
    let report = n.update("bye").unwrap();
    assert_eq!(report.status, UpdateStatus::UpToDate);
    assert_eq!(n.fake.take_calls(), Vec::<String>::new());
}

/// Updates a running service whose new deployment fails the gate as the
/// fake is scripted to: the old one must be back and running.
fn assert_rolled_back(script: impl FnOnce(&Fake), why: &str) {
    let n = Node::installed(true);
    script(&n.fake);
    let e = format!("{:#}", n.update("bye").unwrap_err());
    assert!(e.contains(why), "{e}");
    assert!(e.contains("rolled back to web:1 (slot 0)"), "{e}");
    assert!(e.contains("Last log lines: the last words"), "{e}");
    n.assert_on(0, "hello");
    let calls = n.fake.take_calls();
    assert_eq!(started(&calls), 2, "{calls:?}");
    assert_eq!(calls.last().unwrap(), "start web.service", "{calls:?}");
    assert_eq!(n.state(), "active");
}

#[test]
fn a_service_that_exits_at_start_is_rolled_back() {
    assert_rolled_back(
        |f| {
            f.0.start.borrow_mut().push_back(Some(JobResult::Failed));
            f.0.result.set(Some("exit-code"));
        },
        "start job failed, service result \"exit-code\"",
    );
}

#[test]
fn a_service_never_ready_is_rolled_back() {
    assert_rolled_back(
        |f| f.0.start.borrow_mut().push_back(None),
        "still starting after 10 s",
    );
}

#[test]
fn a_service_failing_its_probe_is_rolled_back() {
    assert_rolled_back(
        |f| {
            *f.0.probes.borrow_mut() = std::iter::repeat_n(Err("exit 1".to_string()), 500).collect()
        },
        "probe: exit 1 (for 10 s)",
    );
}

#[test]
fn a_service_dying_while_it_settles_is_rolled_back() {
    assert_rolled_back(
        |f| f.0.after_start.borrow_mut().extend(["active", "failed"]),
        "web.service left the active state (failed)",
    );
}

#[test]
fn no_rollback_leaves_the_unhealthy_deployment() {
    let n = Node::installed(true);
    n.fake.0.start.borrow_mut().push_back(None);
    let e = update(
        &n.host,
        &n.store,
        &UpdateOptions {
            name: NAME,
            set: &["GREETING=bye".into()],
            policy: Policy::default(),
            rebase: None,
            no_rollback: true,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("left in place (--no-rollback)"),
        "{e:#}"
    );
    n.assert_on(1, "bye");
}

#[test]
fn a_stopped_service_stays_stopped_through_update_and_rollback() {
    let n = Node::installed(false);
    n.update("bye").unwrap();
    n.assert_on(1, "bye");
    let report = rollback(&n.host, NAME).unwrap();
    assert_eq!(report.status, UpdateStatus::RolledBack);
    n.assert_on(0, "hello");
    let calls = n.fake.take_calls();
    assert_eq!(started(&calls), 0, "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("stop")), "{calls:?}");
    assert_eq!(n.state(), "inactive");
}

#[test]
fn an_error_while_stopping_for_an_update_leaves_the_old_one_running() {
    let n = Node::installed(true);
    n.fake.take_calls();
    n.fake.0.processes_fail.set(true);
    let e = format!("{:#}", n.update("bye").unwrap_err());
    assert!(e.contains("updating web"), "{e}");
    assert!(e.contains("Input/output error"), "{e}");
    n.assert_on(0, "hello");
    assert_eq!(n.state(), "active", "{e}");
    assert!(!n.host.transition_path(NAME).exists(), "{e}");
    // And the update goes through when asked again.
    n.update("bye").unwrap();
    n.assert_on(1, "bye");
}

#[test]
fn rollback_of_a_failing_service_starts_the_old_one() {
    let n = Node::updated(true);
    n.fake.set_state("failed");
    let report = rollback(&n.host, NAME).unwrap();
    assert_eq!((report.status, report.slot), (UpdateStatus::RolledBack, 0));
    n.assert_on(0, "hello");
    let calls = n.fake.take_calls();
    assert_eq!(calls.first().unwrap(), "stop web.service", "{calls:?}");
    assert_eq!(started(&calls), 1, "{calls:?}");
    assert_eq!(n.state(), "active");
    // And forward again.
    rollback(&n.host, NAME).unwrap();
    n.assert_on(1, "bye");
}

#[test]
fn an_update_crashed_before_the_switch_is_discarded() {
    for step in [
        "update:after-staging",
        "update:after-rename",
        "update:after-journal",
        "update:after-stop",
        "switch:after-publish",
    ] {
        let n = Node::installed(true);
        crash(step, || n.update("bye"));
        n.fake.take_calls();
        let messages = recover_all(&n.host).unwrap();
        assert_eq!(messages.len(), 1, "{step}: {messages:?}");
        n.assert_on(0, "hello");
        // The slot the update wrote is no rollback target.
        assert_eq!(n.entries(), ["web", "web.0"], "{step}");
        assert_eq!(n.state(), "active", "{step}");
        let calls = n.fake.take_calls();
        if step.starts_with("update:after-sta") || step == "update:after-rename" {
            // The host was never touched: nothing to ask systemd.
            assert_eq!(calls, Vec::<String>::new(), "{step}");
        } else {
            assert_eq!(
                calls,
                [
                    "reload",
                    "enable web.service",
                    "tmpfiles --create web.conf",
                    "reset-failed web.service",
                    "start web.service",
                ],
                "{step}"
            );
        }
        assert!(
            matches!(rollback(&n.host, NAME), Err(e) if e.to_string().contains("no other deployment"))
        );
    }
}

#[test]
fn an_update_crashed_after_the_swap_is_finished() {
    for step in ["switch:after-swap", "update:after-start"] {
        let n = Node::installed(true);
        crash(step, || n.update("bye"));
        n.fake.take_calls();
        let messages = recover_all(&n.host).unwrap();
        assert!(
            messages[0].contains("web is on slot 1 (web:1)"),
            "{step}: {messages:?}"
        );
        n.assert_on(1, "bye");
        assert_eq!(n.entries(), ["web", "web.0", "web.1"], "{step}");
        assert_eq!(started(&n.fake.take_calls()), 1, "{step}");
        assert_eq!(n.state(), "active", "{step}");
        // The old deployment is the rollback target.
        rollback(&n.host, NAME).unwrap();
        n.assert_on(0, "hello");
    }
}

#[test]
fn an_update_crash_is_recovered_by_the_next_update() {
    let n = Node::installed(true);
    crash("switch:after-publish", || n.update("bye"));
    let report = n.update("again").unwrap();
    assert!(
        report.messages[0].starts_with("recovered an interrupted switch"),
        "{:?}",
        report.messages
    );
    n.assert_on(1, "again");
}

#[test]
fn a_rollback_crashed_anywhere_is_recovered_and_can_be_asked_again() {
    for step in [
        "rollback:after-stop",
        "switch:after-publish",
        "switch:after-swap",
    ] {
        let n = Node::updated(true);
        crash(step, || rollback(&n.host, NAME));
        n.fake.take_calls();
        // The next rollback finishes the interrupted one or does it again:
        // either way it ends on the old slot, running.
        let report = rollback(&n.host, NAME).unwrap();
        assert_eq!(report.slot, 0, "{step}");
        n.assert_on(0, "hello");
        assert_eq!(n.entries(), ["web", "web.0", "web.1"], "{step}");
        assert_eq!(n.state(), "active", "{step}");
    }
}

#[test]
fn list_reports_each_state() {
    let n = Node::installed(true);
    for (systemd, state, shown) in [
        ("active", State::Running, "running"),
        ("inactive", State::Inactive, "inactive"),
        ("failed", State::Failed, "failed"),
        (
            "activating",
            State::Other("activating".into()),
            "activating",
        ),
    ] {
        n.fake.set_state(systemd);
        let rows = list(&n.host).unwrap();
        assert_eq!(rows[0].state, state);
        assert_eq!(
            serde_json::to_value(&rows[0]).unwrap()["state"],
            serde_json::json!(shown)
        );
        assert_eq!(rows[0].state.to_string(), shown);
    }
}
