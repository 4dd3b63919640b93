#![no_std]
// Exists so tracer's build script can depend on this crate and be rebuilt when it changes.
