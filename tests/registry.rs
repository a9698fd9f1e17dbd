//! Tier 2: pulls from a real registry (Debian docker-registry on 127.0.0.1).

mod common;
