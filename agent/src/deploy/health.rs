//! The health gate of an update: the unit must become active (for
//! `Type=notify` units systemd only says so after READY=1, which runc passes
//! through from the container), stay active for a settle period, and pass
//! the image's probe if it declares one.
//!
//! The probe is `healthCheck` in `/exports/manifest.json`, rendered with the
//! deployment's values:
//!
//! ```json
//! "healthCheck": {"command": ["/bin/wget", "-qO-", "http://127.0.0.1:$PORT/"]}
//! "healthCheck": {"port": "$PORT"}
//! ```
//!
//! `command` runs inside the container (`runc exec`) and must exit 0;
//! `port` must accept a TCP connection on 127.0.0.1.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::seams::{Clock, Runtime};
use crate::template::{self, Values};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Command(Vec<String>),
    Port(u16),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckSpec {
    command: Option<Vec<String>>,
    port: Option<serde_json::Value>,
}

/// Renders the image's `healthCheck` with the deployment's values.
pub fn render_probe(spec: &serde_json::Value, values: &Values) -> anyhow::Result<Probe> {
    const FILE: &str = "manifest.json healthCheck";
    let spec: HealthCheckSpec = serde_json::from_value(spec.clone()).map_err(|e| {
        anyhow::anyhow!("{FILE}: {e} (expected {{\"command\": [...]}} or {{\"port\": N}})")
    })?;
    match (spec.command, spec.port) {
        (Some(cmd), None) if !cmd.is_empty() => Ok(Probe::Command(
            cmd.iter()
                .map(|a| template::substitute(a, values, FILE))
                .collect::<Result<_, _>>()?,
        )),
        (None, Some(port)) => {
            let text = match port {
                serde_json::Value::String(s) => template::substitute(&s, values, FILE)?,
                other => other.to_string(),
            };
            let port = text
                .parse()
                .map_err(|_| anyhow::anyhow!("{FILE}: port {text:?} is not a TCP port number"))?;
            Ok(Probe::Port(port))
        }
        _ => {
            anyhow::bail!("{FILE}: give exactly one of \"command\" (a non-empty list) or \"port\"")
        }
    }
}

impl Probe {
    /// One try; `Err` says what failed.
    pub fn check(&self, runtime: &dyn Runtime, container: &str) -> Result<(), String> {
        match self {
            Probe::Port(port) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .map(|_| ())
                    .map_err(|e| format!("probe: port {port} refuses connections ({e})"))
            }
            Probe::Command(cmd) => runtime
                .exec(container, cmd)
                .map_err(|e| format!("probe: {e}")),
        }
    }
}

/// What the gate asks of the unit.
pub trait UnitState {
    /// ActiveState, or None when no systemd is consulted.
    fn active_state(&self) -> Result<Option<String>, String>;
}

/// Called once the unit's start job ended with `done`: waits until the unit
/// has been active for `settle` without interruption and the probe (if any)
/// passed, within `timeout`. Any other state is a failure: the unit has
/// started, so it can only have died since.
pub fn wait_healthy(
    unit: &str,
    state: &dyn UnitState,
    probe: Option<(&Probe, &dyn Runtime, &str)>,
    settle: Duration,
    timeout: Duration,
    clock: &dyn Clock,
) -> Result<(), String> {
    let deadline = clock.now() + timeout;
    let mut active_since: Option<Instant> = None;
    let mut probe_passed = probe.is_none();
    let mut last_probe_error = String::new();
    loop {
        let state = match state.active_state()? {
            Some(s) => s,
            None => return Ok(()), // no systemd to ask: nothing to gate on
        };
        match state.as_str() {
            "active" | "reloading" => {
                let since = *active_since.get_or_insert_with(|| clock.now());
                if let (false, Some((p, runtime, name))) = (probe_passed, probe) {
                    match p.check(runtime, name) {
                        Ok(()) => probe_passed = true,
                        Err(e) => last_probe_error = e,
                    }
                }
                if probe_passed && clock.now().duration_since(since) >= settle {
                    return Ok(());
                }
            }
            // Activating again after being active: it died and is restarting.
            other if active_since.is_some() => {
                return Err(format!("{unit} left the active state ({other})"))
            }
            other => return Err(format!("{unit} is {other} right after it started")),
        }
        if clock.now() >= deadline {
            return Err(if !probe_passed && active_since.is_some() {
                format!("{last_probe_error} (for {} s)", timeout.as_secs())
            } else {
                format!(
                    "{unit} did not stay active for {} s within {} s (state: {state})",
                    settle.as_secs(),
                    timeout.as_secs()
                )
            });
        }
        clock.sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::fakes::Fake;
    use std::cell::RefCell;

    struct Script(RefCell<Vec<&'static str>>);
    impl UnitState for Script {
        fn active_state(&self) -> Result<Option<String>, String> {
            let mut s = self.0.borrow_mut();
            let next = if s.len() > 1 { s.remove(0) } else { s[0] };
            Ok(Some(next.to_string()))
        }
    }

    fn values() -> Values {
        Values::from([("PORT".to_string(), "8081".to_string())])
    }

    #[test]
    fn probes_render_with_values() {
        let p = render_probe(&serde_json::json!({"port": "$PORT"}), &values()).unwrap();
        assert_eq!(p, Probe::Port(8081));
        let p = render_probe(
            &serde_json::json!({"command": ["wget", "http://127.0.0.1:$PORT/"]}),
            &values(),
        )
        .unwrap();
        assert_eq!(
            p,
            Probe::Command(vec!["wget".into(), "http://127.0.0.1:8081/".into()])
        );
        let e = render_probe(&serde_json::json!({"port": "$NOPE"}), &values()).unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
        let e = render_probe(&serde_json::json!({"http": "x"}), &values()).unwrap_err();
        assert!(e.to_string().contains("healthCheck"), "{e}");
    }

    #[test]
    fn a_unit_that_fails_is_not_healthy() {
        let s = Script(RefCell::new(vec!["active", "failed"]));
        let e = wait_healthy(
            "x.service",
            &s,
            None,
            Duration::from_secs(60),
            Duration::from_secs(5),
            &Fake::new(),
        )
        .unwrap_err();
        assert!(e.contains("failed"), "{e}");
    }

    #[test]
    fn a_unit_that_restarts_is_not_healthy() {
        let s = Script(RefCell::new(vec!["active", "activating"]));
        let e = wait_healthy(
            "x.service",
            &s,
            None,
            Duration::from_secs(60),
            Duration::from_secs(5),
            &Fake::new(),
        )
        .unwrap_err();
        assert!(e.contains("left the active state"), "{e}");
    }

    #[test]
    fn a_unit_already_dead_after_its_start_is_not_healthy() {
        for state in ["inactive", "failed", "activating"] {
            let s = Script(RefCell::new(vec![state]));
            let e = wait_healthy(
                "x.service",
                &s,
                None,
                Duration::ZERO,
                Duration::from_secs(5),
                &Fake::new(),
            )
            .unwrap_err();
            assert!(e.contains("right after it started"), "{state}: {e}");
        }
    }

    #[test]
    fn a_unit_that_stays_active_is_healthy() {
        let s = Script(RefCell::new(vec!["active"]));
        wait_healthy(
            "x.service",
            &s,
            None,
            Duration::ZERO,
            Duration::from_secs(5),
            &Fake::new(),
        )
        .unwrap();
    }

    #[test]
    fn a_closed_port_fails_the_probe() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Script(RefCell::new(vec!["active"]));
        let probe = Probe::Port(port);
        let e = wait_healthy(
            "x.service",
            &s,
            Some((&probe, &Fake::new(), "x")),
            Duration::ZERO,
            Duration::from_millis(600),
            &Fake::new(),
        )
        .unwrap_err();
        assert!(e.contains("refuses connections"), "{e}");
    }
}
