//! Crash points for tests: `SOCLE_FAILPOINT=STEP` makes socle kill itself
//! with SIGKILL when it reaches `failpoint("STEP")`, as a crash would (the
//! page cache survives: this proves recovery from a killed socle, not from
//! a power cut). Every step name is a string literal at its call site, so
//! `tests/crash.rs` can find them all in the source and check that each has
//! a crash test.

/// Kills the process with SIGKILL if `SOCLE_FAILPOINT` names `step`.
pub fn failpoint(step: &str) {
    if std::env::var("SOCLE_FAILPOINT").is_ok_and(|v| v == step) {
        // The tests read this line to tell a failpoint from another death.
        eprintln!("socle: failpoint {step}: killing myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
