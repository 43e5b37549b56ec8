//! (config module: being written)
