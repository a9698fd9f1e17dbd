//! The one sequence that makes a slot the deployment the host runs:
//! publish its files → swap the pointer → daemon-reload → enable →
//! `systemd-tmpfiles --create`. Install, update, rollback, recovery and
//! fsck's repair all go through it; only whether the pointer moves (and
//! where a crash test may stop) differs.

use super::{publish, unit_name, Host, Info};

/// What happens to the pointer between publishing and systemd.
pub(super) enum Pointer<'a> {
    /// It already names the slot (recovery and repair of a current slot).
    Kept,
    /// It is swapped to the slot; each hook runs right after its step (the
    /// callers' failpoints, kept as literals where they are called).
    Swap {
        after_publish: &'a dyn Fn(),
        after_swap: &'a dyn Fn(),
    },
}

/// Makes `slot` of `name` (described by `info`) current on the host. Host
/// files `previous` recorded are replaced or removed unless edited (see
/// `publish`). Returns messages for the user.
pub(super) fn make_current(
    host: &Host,
    name: &str,
    slot: u32,
    info: &Info,
    previous: Option<&Info>,
    pointer: Pointer,
) -> anyhow::Result<Vec<String>> {
    let messages = publish(host, name, &host.slot_dir(name, slot), info, previous)?;
    if let Pointer::Swap {
        after_publish,
        after_swap,
    } = pointer
    {
        after_publish();
        host.point_at(name, slot)?;
        after_swap();
    }
    host.systemd.reload()?;
    if info.has_container_service {
        host.systemd.enable(&unit_name(name))?;
    }
    host.run_tmpfiles("--create", &host.tmpfiles_path(name))?;
    Ok(messages)
}
