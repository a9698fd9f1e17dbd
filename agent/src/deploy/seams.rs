//! What deployments ask of the world besides systemd and the file system,
//! each behind a narrow trait with one real implementation, so the engine
//! can be driven by recording fakes in unit tests (`deploy::fakes`): the OCI
//! runtime, `systemd-tmpfiles`, the journal and the clock.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The OCI runtime, as deploy uses it outside the unit (the unit runs it
/// itself, from the command lines `runtime.rs` renders).
pub trait Runtime {
    /// Whether the runtime knows the container (`runc state ID` succeeds).
    fn has(&self, id: &str) -> bool;
    /// `runc delete --force ID`; whether it succeeded.
    fn delete_force(&self, id: &str) -> bool;
    /// Runs `cmd` inside the container (`runc exec ID CMD…`); `Err` says how
    /// it failed, for the probe's message.
    fn exec(&self, id: &str, cmd: &[String]) -> Result<(), String>;
}

/// `systemd-tmpfiles`.
pub trait Tmpfiles {
    /// Runs `systemd-tmpfiles ACTION FILE` with `root` as the file system root.
    fn run(&self, action: &str, root: &Path, file: &Path) -> anyhow::Result<()>;
}

/// The journal, read to explain a failed start.
pub trait Journal {
    /// The unit's last log lines, joined with ` | `; empty when there are none.
    fn last_lines(&self, unit: &str) -> String;
}

/// Time, as the waits of the health gate and of a stop see it.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
    /// Seconds since the epoch, for the `created` time of a deployment.
    fn unix_secs(&self) -> u64;
}

/// The runtime binary at `path` (`runc`, or `--runtime`).
pub struct RuntimeCli {
    pub path: String,
}

impl Runtime for RuntimeCli {
    fn has(&self, id: &str) -> bool {
        self.succeeds(&["state", id])
    }

    fn delete_force(&self, id: &str) -> bool {
        self.succeeds(&["delete", "--force", id])
    }

    fn exec(&self, id: &str, cmd: &[String]) -> Result<(), String> {
        let out = Command::new(&self.path)
            .args(["exec", id])
            .args(cmd)
            .output()
            .map_err(|e| format!("running {} exec: {e}", self.path))?;
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(format!(
            "`{}` exited with {} ({})",
            cmd.join(" "),
            out.status,
            text.lines().last().unwrap_or("")
        ))
    }
}

impl RuntimeCli {
    fn succeeds(&self, args: &[&str]) -> bool {
        Command::new(&self.path)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// The `systemd-tmpfiles` on `PATH`.
pub struct SystemdTmpfiles;

impl Tmpfiles for SystemdTmpfiles {
    fn run(&self, action: &str, root: &Path, file: &Path) -> anyhow::Result<()> {
        let mut cmd = Command::new("systemd-tmpfiles");
        cmd.arg(action);
        if root != Path::new("/") {
            cmd.arg(format!("--root={}", root.display()));
        }
        cmd.arg(file);
        let out = cmd
            .output()
            .with_context(|| format!("running systemd-tmpfiles {action} {}", file.display()))?;
        if !out.status.success() {
            bail!(
                "systemd-tmpfiles {action} {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// `journalctl`.
pub struct Journalctl;

impl Journal for Journalctl {
    fn last_lines(&self, unit: &str) -> String {
        Command::new("journalctl")
            .args(["--no-pager", "-o", "cat", "-n", "8", "-u"])
            .arg(unit)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    }
}

/// The system's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }

    fn unix_secs(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
