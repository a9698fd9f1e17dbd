//! What socle asks of systemd, behind a trait so tests can run without one.
//!
//! The real implementation talks to the manager over D-Bus (the system bus,
//! or the user's session bus); `none` writes files and asks nothing.
//!
//! Starts and stops follow systemd's job to its end (the `JobRemoved`
//! signal and its result), as `systemctl` does: a unit whose start job is
//! still queued is never mistaken for one that failed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the systemd {bus} bus: {source} (use --systemd none to only write files)")]
    Connect {
        bus: &'static str,
        source: Box<zbus::Error>,
    },
    #[error("systemd {action} {unit}: {source}")]
    Call {
        action: &'static str,
        unit: String,
        source: Box<zbus::Error>,
    },
    #[error("systemd {action} {unit}: still {state} after {secs} s")]
    Timeout {
        action: &'static str,
        unit: String,
        state: String,
        secs: u64,
    },
}

type Result<T> = std::result::Result<T, SystemdError>;

/// How a job ended: the `result` of systemd's `JobRemoved` signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    Other(String),
}

impl JobResult {
    fn parse(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        })
    }
}

/// What a stop did, for the report of the operation that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    pub job: JobResult,
    /// systemd gave up waiting for the processes to end on SIGTERM within
    /// the unit's `TimeoutStopSec` and killed them (SIGKILL).
    pub killed_after: Option<Duration>,
}

/// Which systemd instance to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdMode {
    System,
    User,
    None,
}

pub trait Systemd {
    /// Makes systemd re-read unit files (`systemctl daemon-reload`).
    fn reload(&self) -> Result<()>;
    fn enable(&self, unit: &str) -> Result<()>;
    fn disable(&self, unit: &str) -> Result<()>;
    /// Starts the unit and follows the start job to its end, at most
    /// `timeout`: `None` when the job had not ended by then (for a
    /// `Type=notify` unit: no READY=1 yet).
    fn start(&self, unit: &str, timeout: Duration) -> Result<Option<JobResult>>;
    /// Stops a unit and follows the stop job to its end: the unit is then
    /// inactive or failed, and systemd has seen its cgroup empty.
    fn stop(&self, unit: &str) -> Result<StopOutcome>;
    /// Processes left in the unit's cgroup and its sub-cgroups, as
    /// `(pid, command line)`.
    fn unit_processes(&self, unit: &str) -> Result<Vec<(u32, String)>>;
    /// Sends `signal` to every process of the unit (`systemctl kill`).
    fn kill(&self, unit: &str, signal: i32) -> Result<()>;
    /// The service's `Result` (`success`, `exit-code`, `signal`, `timeout`,
    /// …): why it last failed; `None` when systemd is not consulted.
    fn service_result(&self, unit: &str) -> Result<Option<String>>;
    /// Forgets a unit's failed state and start-rate limit, so a start after
    /// a crash loop is not refused.
    fn reset_failed(&self, unit: &str) -> Result<()>;
    /// The unit's ActiveState (`active`, `inactive`, `failed`, …), or `None`
    /// when systemd is not consulted.
    fn active_state(&self, unit: &str) -> Result<Option<String>>;
}

/// Asks nothing: for tests and image builds.
pub struct NoSystemd;

impl Systemd for NoSystemd {
    fn reload(&self) -> Result<()> {
        Ok(())
    }
    fn enable(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn disable(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn start(&self, _: &str, _: Duration) -> Result<Option<JobResult>> {
        Ok(Some(JobResult::Done))
    }
    fn stop(&self, _: &str) -> Result<StopOutcome> {
        Ok(StopOutcome {
            job: JobResult::Done,
            killed_after: None,
        })
    }
    fn unit_processes(&self, _: &str) -> Result<Vec<(u32, String)>> {
        Ok(Vec::new())
    }
    fn kill(&self, _: &str, _: i32) -> Result<()> {
        Ok(())
    }
    fn service_result(&self, _: &str) -> Result<Option<String>> {
        Ok(None)
    }
    fn reset_failed(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn active_state(&self, _: &str) -> Result<Option<String>> {
        Ok(None)
    }
}

/// (type, file name, destination) of one change EnableUnitFiles made.
type UnitFileChange = (String, String, String);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn reload(&self) -> zbus::Result<()>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<UnitFileChange>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<UnitFileChange>>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "TimeoutStopUSec")]
    fn timeout_stop_usec(&self) -> zbus::Result<u64>;
}

/// systemd's manager over D-Bus.
pub struct DbusSystemd {
    conn: zbus::blocking::Connection,
}

/// The least a stop is waited for, and the most.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_STOP_WAIT: Duration = Duration::from_secs(600);

impl DbusSystemd {
    pub fn connect(user: bool) -> Result<DbusSystemd> {
        let (bus, conn) = if user {
            ("user", zbus::blocking::Connection::session())
        } else {
            ("system", zbus::blocking::Connection::system())
        };
        let conn = conn.map_err(|source| SystemdError::Connect {
            bus,
            source: Box::new(source),
        })?;
        Ok(DbusSystemd { conn })
    }

    fn manager(&self) -> zbus::Result<ManagerProxyBlocking<'static>> {
        ManagerProxyBlocking::new(&self.conn)
    }

    fn unit_path(&self, unit: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath> {
        self.manager()?.load_unit(unit)
    }

    fn state(&self, unit: &str) -> zbus::Result<String> {
        UnitProxyBlocking::builder(&self.conn)
            .path(self.unit_path(unit)?)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()?
            .active_state()
    }

    fn service(&self, unit: &str) -> zbus::Result<ServiceProxyBlocking<'static>> {
        ServiceProxyBlocking::builder(&self.conn)
            .path(self.unit_path(unit)?)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
    }

    /// Queues a job with `enqueue` and waits at most `timeout` for its
    /// `JobRemoved`. The signal is subscribed to before the job exists, so
    /// it cannot be missed; a job that outlives the wait is left running
    /// (the thread waiting for it ends with the job or the process).
    fn run_job(
        &self,
        action: &'static str,
        unit: &str,
        timeout: Duration,
        enqueue: impl FnOnce(
            &ManagerProxyBlocking<'static>,
        ) -> zbus::Result<zbus::zvariant::OwnedObjectPath>,
    ) -> Result<Option<JobResult>> {
        let call = |source: zbus::Error| SystemdError::Call {
            action,
            unit: unit.into(),
            source: Box::new(source),
        };
        let manager = self.manager().map_err(call)?;
        // Without a subscriber systemd may not send job signals at all.
        match manager.subscribe() {
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => {}
            other => other.map_err(call)?,
        }
        let removed = manager.receive_job_removed().map_err(call)?;
        let job = enqueue(&manager).map_err(call)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for signal in removed {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    let _ = tx.send(JobResult::parse(&args.result));
                    return;
                }
            }
        });
        Ok(rx.recv_timeout(timeout).ok())
    }
}

impl Systemd for DbusSystemd {
    fn reload(&self) -> Result<()> {
        self.manager()
            .and_then(|m| m.reload())
            .map_err(|source| SystemdError::Call {
                action: "daemon-reload",
                unit: String::new(),
                source: Box::new(source),
            })
    }

    fn enable(&self, unit: &str) -> Result<()> {
        self.manager()
            .and_then(|m| m.enable_unit_files(&[unit], false, true))
            .map(|_| ())
            .map_err(|source| SystemdError::Call {
                action: "enable",
                unit: unit.into(),
                source: Box::new(source),
            })
    }

    fn disable(&self, unit: &str) -> Result<()> {
        self.manager()
            .and_then(|m| m.disable_unit_files(&[unit], false))
            .map(|_| ())
            .map_err(|source| SystemdError::Call {
                action: "disable",
                unit: unit.into(),
                source: Box::new(source),
            })
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<Option<JobResult>> {
        self.run_job("start", unit, timeout, |m| m.start_unit(unit, "replace"))
    }

    fn stop(&self, unit: &str) -> Result<StopOutcome> {
        let call = |source: zbus::Error| SystemdError::Call {
            action: "stop",
            unit: unit.into(),
            source: Box::new(source),
        };
        let service = self.service(unit).map_err(call)?;
        // A stop is bounded by the unit itself: each of its phases (ExecStop,
        // SIGTERM, SIGKILL, ExecStopPost) gets at most TimeoutStopSec.
        let per_phase = Duration::from_micros(service.timeout_stop_usec().unwrap_or(0));
        let bound = per_phase
            .saturating_mul(6)
            .clamp(JOB_TIMEOUT, MAX_STOP_WAIT);
        let result_before = service.result().unwrap_or_default();
        let started = Instant::now();
        let job = self
            .run_job("stop", unit, bound, |m| m.stop_unit(unit, "replace"))?
            .ok_or_else(|| SystemdError::Timeout {
                action: "stop",
                unit: unit.into(),
                state: self.state(unit).unwrap_or_else(|_| "unknown".into()),
                secs: bound.as_secs(),
            })?;
        let result_after = service.result().unwrap_or_default();
        let killed = result_after == "timeout" && result_before != "timeout";
        Ok(StopOutcome {
            job,
            killed_after: killed.then(|| per_phase.min(started.elapsed())),
        })
    }

    fn unit_processes(&self, unit: &str) -> Result<Vec<(u32, String)>> {
        // systemd reads the unit's cgroup tree; right after a stop, the
        // container's child cgroup is being removed (runc delete in
        // ExecStopPost), and reading a cgroup as the kernel tears it down
        // fails with EIO. That cgroup is gone a moment later: ask again,
        // a bounded number of times.
        let mut eio_left = 20;
        loop {
            match self.manager().and_then(|m| m.get_unit_processes(unit)) {
                Ok(list) => return Ok(list.into_iter().map(|(_, pid, cmd)| (pid, cmd)).collect()),
                // A unit that is not loaded has no processes.
                Err(zbus::Error::MethodError(name, _, _))
                    if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
                {
                    return Ok(Vec::new())
                }
                Err(zbus::Error::MethodError(name, _, _))
                    if name.as_str() == "org.freedesktop.DBus.Error.IOError" && eio_left > 0 =>
                {
                    eio_left -= 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(SystemdError::Call {
                        action: "list processes of",
                        unit: unit.into(),
                        source: Box::new(source),
                    })
                }
            }
        }
    }

    fn kill(&self, unit: &str, signal: i32) -> Result<()> {
        self.manager()
            .and_then(|m| m.kill_unit(unit, "all", signal))
            .map_err(|source| SystemdError::Call {
                action: "kill",
                unit: unit.into(),
                source: Box::new(source),
            })
    }

    fn service_result(&self, unit: &str) -> Result<Option<String>> {
        self.service(unit)
            .and_then(|s| s.result())
            .map(Some)
            .map_err(|source| SystemdError::Call {
                action: "query",
                unit: unit.into(),
                source: Box::new(source),
            })
    }

    fn reset_failed(&self, unit: &str) -> Result<()> {
        match self.manager().and_then(|m| m.reset_failed_unit(unit)) {
            Ok(()) => Ok(()),
            // A unit that is not failed (or not loaded) has nothing to reset.
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(source) => Err(SystemdError::Call {
                action: "reset-failed",
                unit: unit.into(),
                source: Box::new(source),
            }),
        }
    }

    fn active_state(&self, unit: &str) -> Result<Option<String>> {
        self.state(unit)
            .map(Some)
            .map_err(|source| SystemdError::Call {
                action: "query",
                unit: unit.into(),
                source: Box::new(source),
            })
    }
}

/// Opens the systemd connection the user chose.
pub fn connect(mode: SystemdMode) -> Result<Box<dyn Systemd>> {
    Ok(match mode {
        SystemdMode::System => Box::new(DbusSystemd::connect(false)?),
        SystemdMode::User => Box::new(DbusSystemd::connect(true)?),
        SystemdMode::None => Box::new(NoSystemd),
    })
}
