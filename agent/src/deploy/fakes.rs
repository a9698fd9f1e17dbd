//! Recording fakes of everything a `Host` asks (systemd, the runtime,
//! systemd-tmpfiles, the journal, the clock), for unit tests of the engine.
//! One `World` answers for all of them, so a test scripts the answers in
//! one place and reads every call, in order, from one list.
//!
//! systemd is modelled just enough for the engine: a unit has a state that
//! a done start makes `active`, a failed start `failed`, a start still
//! running `activating`, and a stop `inactive`; scripted `states` (and
//! `after_start`, once a start is done) are answered first, one per question. The clock only moves when something
//! sleeps, so the gate's waits cost nothing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::seams::{Clock, Journal, Runtime, Tmpfiles};
use super::Host;
use crate::systemd::{JobResult, StopOutcome, Systemd, SystemdError};

#[derive(Default)]
pub(crate) struct World {
    calls: RefCell<Vec<String>>,
    /// The unit's state as the model has it; `inactive` when unset.
    pub(crate) unit_state: RefCell<Option<String>>,
    /// ActiveState answers given before the model's, one per question.
    pub(crate) states: RefCell<VecDeque<&'static str>>,
    /// ActiveState answers given (before the model's) once the next start
    /// is done, one per question: what the unit does while the gate watches.
    pub(crate) after_start: RefCell<VecDeque<&'static str>>,
    /// How start jobs end, one per start; `done` when empty. `None`: still
    /// running at the deadline.
    pub(crate) start: RefCell<VecDeque<Option<JobResult>>>,
    /// The service's `Result` after a failed start.
    pub(crate) result: Cell<Option<&'static str>>,
    /// Processes left after a stop, one answer per question; none when empty.
    pub(crate) processes: RefCell<VecDeque<Vec<(u32, String)>>>,
    /// The next question for the unit's processes fails (as systemd does
    /// with EIO reading a cgroup the kernel tears down).
    pub(crate) processes_fail: Cell<bool>,
    /// The stop job had to SIGKILL after this long.
    pub(crate) killed_after: Cell<Option<Duration>>,
    /// Probe (`runtime exec`) results, one per try; success when empty.
    pub(crate) probes: RefCell<VecDeque<Result<(), String>>>,
    /// The runtime still knows the container.
    pub(crate) runc_has: Cell<bool>,
    /// Time slept so far.
    pub(crate) slept: Cell<Duration>,
    epoch: Option<Instant>,
}

/// A handle on the shared `World`, boxed into each field of a `Host`.
#[derive(Clone)]
pub(crate) struct Fake(pub(crate) Rc<World>);

impl Fake {
    pub(crate) fn new() -> Fake {
        Fake(Rc::new(World {
            epoch: Some(Instant::now()),
            ..Default::default()
        }))
    }

    /// A host whose directories are under `root` and whose every question
    /// goes to this fake.
    pub(crate) fn host(&self, root: &Path) -> Host {
        Host {
            systemd: Box::new(self.clone()),
            runc: Box::new(self.clone()),
            tmpfiles: Box::new(self.clone()),
            journal: Box::new(self.clone()),
            clock: Box::new(self.clone()),
            ..Host::new(
                root.join("state"),
                root.join("units"),
                root.join("tmpfiles.d"),
                root.join("host"),
                "/usr/bin/runc".into(),
                Box::new(crate::systemd::NoSystemd),
            )
        }
    }

    pub(crate) fn set_state(&self, state: &str) {
        *self.0.unit_state.borrow_mut() = Some(state.to_string());
    }

    /// The calls recorded since the last `take_calls`.
    pub(crate) fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.calls.borrow_mut())
    }

    fn call(&self, what: String) {
        self.0.calls.borrow_mut().push(what);
    }
}

impl Systemd for Fake {
    fn reload(&self) -> Result<(), SystemdError> {
        self.call("reload".into());
        Ok(())
    }
    fn enable(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("enable {unit}"));
        Ok(())
    }
    fn disable(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("disable {unit}"));
        Ok(())
    }
    fn start(&self, unit: &str, _: Duration) -> Result<Option<JobResult>, SystemdError> {
        self.call(format!("start {unit}"));
        let job = self
            .0
            .start
            .borrow_mut()
            .pop_front()
            .unwrap_or(Some(JobResult::Done));
        if job == Some(JobResult::Done) {
            let then = std::mem::take(&mut *self.0.after_start.borrow_mut());
            self.0.states.borrow_mut().extend(then);
        }
        self.set_state(match job {
            Some(JobResult::Done) => "active",
            Some(_) => "failed",
            None => "activating",
        });
        Ok(job)
    }
    fn stop(&self, unit: &str) -> Result<StopOutcome, SystemdError> {
        self.call(format!("stop {unit}"));
        self.set_state("inactive");
        Ok(StopOutcome {
            job: JobResult::Done,
            killed_after: self.0.killed_after.get(),
        })
    }
    fn unit_processes(&self, unit: &str) -> Result<Vec<(u32, String)>, SystemdError> {
        if self.0.processes_fail.take() {
            return Err(SystemdError::Call {
                action: "list processes of",
                unit: unit.into(),
                source: Box::new(zbus::Error::Failure("Input/output error".into())),
            });
        }
        Ok(self
            .0
            .processes
            .borrow_mut()
            .pop_front()
            .unwrap_or_default())
    }
    fn kill(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        self.call(format!("kill {unit} {signal}"));
        Ok(())
    }
    fn service_result(&self, _: &str) -> Result<Option<String>, SystemdError> {
        Ok(self.0.result.get().map(str::to_string))
    }
    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        self.call(format!("reset-failed {unit}"));
        Ok(())
    }
    fn active_state(&self, _: &str) -> Result<Option<String>, SystemdError> {
        let scripted = self.0.states.borrow_mut().pop_front();
        Ok(Some(match scripted {
            Some(s) => s.to_string(),
            None => self
                .0
                .unit_state
                .borrow()
                .clone()
                .unwrap_or_else(|| "inactive".into()),
        }))
    }
}

impl Runtime for Fake {
    fn has(&self, id: &str) -> bool {
        self.call(format!("runc state {id}"));
        self.0.runc_has.get()
    }
    fn delete_force(&self, id: &str) -> bool {
        self.call(format!("runc delete --force {id}"));
        self.0.runc_has.set(false);
        true
    }
    fn exec(&self, id: &str, cmd: &[String]) -> Result<(), String> {
        self.call(format!("runc exec {id} {}", cmd.join(" ")));
        self.0.probes.borrow_mut().pop_front().unwrap_or(Ok(()))
    }
}

impl Tmpfiles for Fake {
    fn run(&self, action: &str, _: &Path, file: &Path) -> anyhow::Result<()> {
        let file = file.file_name().unwrap_or_default().to_string_lossy();
        self.call(format!("tmpfiles {action} {file}"));
        Ok(())
    }
}

impl Journal for Fake {
    fn last_lines(&self, _: &str) -> String {
        "the last words".into()
    }
}

impl Clock for Fake {
    fn now(&self) -> Instant {
        self.0.epoch.expect("made by Fake::new") + self.0.slept.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.slept.set(self.0.slept.get() + d);
    }
    fn unix_secs(&self) -> u64 {
        1_795_708_799 + self.0.slept.get().as_secs()
    }
}
