//! Test support (never published): real servers as child processes.
