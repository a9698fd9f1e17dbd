//! Tier 2: the store life cycle (images tag/delete/prune/verify/update).

mod common;
