//! etcd backend for `registry-core`: leases, keep-alive and watch from a revision.
//!
//! The implementation arrives with its own issue; this crate is a placeholder in the workspace.
