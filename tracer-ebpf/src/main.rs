//! tracer's kernel programs: one module per tool, plus the machinery they share. This object
//! holds every tool, for `serve` and the query tools; `src/objects/` holds one per tool alone.
#![no_std]
#![no_main]

include!("objects/shared.rs");

mod arch;
mod usdt;

mod direct_reclaim;
mod kvm_exit;
mod mysql;
mod oom;
mod pg;
mod pipeline;
mod query;
mod socket;
mod tls;
mod writeback;
