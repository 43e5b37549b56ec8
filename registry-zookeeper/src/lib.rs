//! ZooKeeper backend for `registry-core`: ephemeral nodes, sessions and persistent watches.
//!
//! The implementation arrives with its own issue; this crate is a placeholder in the workspace.
