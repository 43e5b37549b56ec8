//! Redis backend for `registry-core`: key expiry and a change feed.
//!
//! The implementation arrives with its own issue; this crate is a placeholder in the workspace.
