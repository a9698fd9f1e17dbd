//! Crash points for tests: `SOCLE_FAILPOINT=STEP` makes socle kill itself
//! with SIGKILL when it reaches `failpoint("STEP")`, as a crash would (the
//! page cache survives: this proves recovery from a killed socle, not from
//! a power cut). Every step name is a string literal at its call site, so
//! `tests/crash.rs` can find them all in the source and check that each has
//! a crash test.
//!
//! Unit tests "crash" in-process instead: [`crash_at`] arms a step for the
//! calling thread, and reaching it unwinds with a [`Crash`] panic, which
//! `crash_at` catches; the test then runs recovery in the same process.

/// Kills the process with SIGKILL if `SOCLE_FAILPOINT` names `step`.
pub fn failpoint(step: &str) {
    #[cfg(test)]
    if ARMED.with(|a| a.borrow().as_deref() == Some(step)) {
        std::panic::panic_any(Crash(step.to_string()));
    }
    if std::env::var("SOCLE_FAILPOINT").is_ok_and(|v| v == step) {
        // The tests read this line to tell a failpoint from another death.
        eprintln!("socle: failpoint {step}: killing myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
thread_local! {
    static ARMED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The panic payload of an in-process crash at a step.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Crash(pub(crate) String);

/// Runs `f` with `step` armed: `Err(Crash)` when `f` reached it (and was cut
/// short there), `Ok` with its result when it never did. Other panics go on.
#[cfg(test)]
pub(crate) fn crash_at<T>(step: &str, f: impl FnOnce() -> T) -> Result<T, Crash> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // A crash is expected: keep the default hook for every other panic.
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Crash>().is_none() {
                default(info)
            }
        }));
    });
    ARMED.with(|a| *a.borrow_mut() = Some(step.to_string()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ARMED.with(|a| *a.borrow_mut() = None);
    match outcome {
        Ok(v) => Ok(v),
        Err(payload) => match payload.downcast::<Crash>() {
            Ok(crash) => Err(*crash),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}
