//! How long work reports what it is doing, and the notes a user should see
//! while it runs. The library only calls this trait; each front decides how
//! to show it (the command line: bars on a terminal, one JSON object per
//! line with `--json`; a daemon: signals).

/// Called from the layer threads of a pull, and by [`crate::node`] around
/// an operation.
pub trait Progress: Sync {
    /// The image is known: its layers (digest, compressed size).
    fn resolved(&self, _source: &str, _name: &str, _manifest: &str, _layers: &[(String, u64)]) {}
    /// Something the user should know that does not stop the work (an
    /// unqualified name resolved, a mirror used): a warning.
    fn note(&self, _message: &str) {}
    /// Something done on the way the user did not ask for (a permission
    /// restricted): a note.
    fn info(&self, _message: &str) {}
    /// What the operation is waiting for, said before it waits.
    fn status(&self, _message: &str) {}
    fn layer_present(&self, _digest: &str, _size: u64) {}
    fn layer_started(&self, _digest: &str, _size: u64) {}
    /// `done` bytes of the layer read so far.
    fn layer_bytes(&self, _digest: &str, _done: u64) {}
    fn layer_done(&self, _digest: &str, _size: u64, _seconds: f64) {}
    /// The pull ended (well or not): clear anything drawn.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}
