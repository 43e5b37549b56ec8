//! Runnable examples. The crate docs are the project README, so its code blocks are compiled by
//! `cargo test --doc`.
#![doc = include_str!("../../README.md")]

pub mod exit;
pub mod greeter;
pub mod user;
pub mod volo_greeter;
