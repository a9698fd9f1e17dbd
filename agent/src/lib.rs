//! socle: OCI images → OSTree store → read-only deployments → systemd units running runc.
//!
//! Data flows forward along the path of one component:
//! `reference` → `oci` (media types, digests, platforms) → `archive`
//! (local sources) or `registry` → `pull` (with `progress`) → `store` →
//! `deploy` (with `exports`, `template`, `runtime`) → `systemd`. `node` holds the use cases every
//! front shares; the command line (`src/cli/`, part of the binary, not of
//! this library) only parses arguments, calls `node` and prints.

pub mod archive;
pub mod builder;
pub mod danger;
pub mod declaration;
pub mod deploy;
pub mod escape;
pub mod exports;
pub mod failpoint;
pub mod fsck;
pub mod limits;
pub mod lint;
pub mod node;
pub mod oci;
pub mod permissions;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod systemd;
pub mod template;
