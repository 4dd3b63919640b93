//! writeback's programs alone: what `tracer writeback` loads, so that starting it parses,
//! relocates and creates no other tool's programs and maps.
#![no_std]
#![no_main]
// Not every tool uses all of the shared machinery.
#![allow(dead_code, unused_macros, unused_imports)]

include!("shared.rs");

#[path = "../writeback.rs"]
mod writeback;
