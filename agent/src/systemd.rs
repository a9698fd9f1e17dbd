//! What socle asks of systemd, behind a trait so tests can run without one.
//!
//! The real implementation talks to the manager over D-Bus (the system bus,
//! or the user's session bus); `none` writes files and asks nothing.

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

/// Which systemd instance to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// Queues a start of the unit; callers that care poll `active_state`
    /// (the update's health gate does, with the user's timeout).
    fn start(&self, unit: &str) -> Result<()>;
    /// Stops a unit and waits until it is inactive or failed.
    fn stop(&self, unit: &str) -> Result<()>;
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
    fn start(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn stop(&self, _: &str) -> Result<()> {
        Ok(())
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
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

/// systemd's manager over D-Bus.
pub struct DbusSystemd {
    conn: zbus::blocking::Connection,
}

/// How long start and stop may take before socle stops waiting.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

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

    fn manager(&self) -> zbus::Result<ManagerProxyBlocking<'_>> {
        ManagerProxyBlocking::new(&self.conn)
    }

    fn state(&self, unit: &str) -> zbus::Result<String> {
        let path = self.manager()?.load_unit(unit)?;
        UnitProxyBlocking::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()?
            .active_state()
    }

    fn wait_while(&self, action: &'static str, unit: &str, busy: &[&str]) -> Result<()> {
        let start = Instant::now();
        loop {
            let state = self.state(unit).map_err(|source| SystemdError::Call {
                action,
                unit: unit.into(),
                source: Box::new(source),
            })?;
            if !busy.contains(&state.as_str()) {
                return Ok(());
            }
            if start.elapsed() > JOB_TIMEOUT {
                return Err(SystemdError::Timeout {
                    action,
                    unit: unit.into(),
                    state,
                    secs: JOB_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

    fn start(&self, unit: &str) -> Result<()> {
        self.manager()
            .and_then(|m| m.start_unit(unit, "replace"))
            .map(|_| ())
            .map_err(|source| SystemdError::Call {
                action: "start",
                unit: unit.into(),
                source: Box::new(source),
            })
    }

    fn stop(&self, unit: &str) -> Result<()> {
        self.manager()
            .and_then(|m| m.stop_unit(unit, "replace"))
            .map_err(|source| SystemdError::Call {
                action: "stop",
                unit: unit.into(),
                source: Box::new(source),
            })?;
        self.wait_while(
            "stop",
            unit,
            &["active", "deactivating", "activating", "reloading"],
        )
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
