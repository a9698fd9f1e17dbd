//! The last operation on each container and how it ended, for `status`:
//! `STATE/last/NAME.json`, written after an install, update, rollback,
//! uninstall or apply step that changed the container's deployments.

use super::Node;
use crate::deploy::{fsops, Host};

/// The last operation on a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastOperation {
    /// `install`, `update`, `rollback`, `uninstall`.
    pub operation: String,
    pub ok: bool,
    /// The report's status, or the error.
    pub message: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Node {
    /// Runs `operation` on container `name` and records how it ended, when
    /// it changed the container's deployments. One that changed nothing (a
    /// refused input, a name that is not installed, an update with nothing
    /// new) leaves the record, like the rest of the node, as it was.
    /// Failing to record is not the operation's failure.
    pub(super) fn tracked<T>(
        &self,
        name: &str,
        operation: &str,
        run: impl FnOnce() -> anyhow::Result<T>,
        message: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<T> {
        if crate::deploy::check_installed_name(name).is_err() {
            return run();
        }
        let before = self.fingerprint(name);
        let result = run();
        if self.fingerprint(name) == before {
            return result;
        }
        let last = LastOperation {
            operation: operation.into(),
            ok: result.is_ok(),
            message: match &result {
                Ok(v) => message(v),
                Err(e) => super::one_line(e),
            },
            at: crate::deploy::now_rfc3339(),
        };
        let file = self.host_without_systemd().last_operation(name);
        if let (Some(dir), Ok(json)) = (file.parent(), serde_json::to_vec(&last)) {
            let _ =
                std::fs::create_dir_all(dir).and_then(|_| fsops::write_atomic(&file, &json, 0o600));
        }
        result
    }

    /// What identifies a container's deployments: the current slot and the
    /// id of the deployment in each slot.
    fn fingerprint(&self, name: &str) -> (Option<u32>, Option<String>, Option<String>) {
        let host = self.host_without_systemd();
        let id = |slot| host.read_info(name, slot).ok().map(|i| i.id);
        (host.current_slot(name), id(0), id(1))
    }
}

/// The last operation recorded for `name`.
pub(super) fn last(host: &Host, name: &str) -> Option<LastOperation> {
    let text = std::fs::read_to_string(host.last_operation(name)).ok()?;
    serde_json::from_str(&text).ok()
}
