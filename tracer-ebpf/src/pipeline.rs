//! `tracer pipeline` (hidden, for `cargo xtask bench events`): a record per `getppid()` of the
//! process traced, through the ring buffer every tool uses, as hot paths send them (no wake-up:
//! userspace drains on its timer); and an empty program on the same tracepoint, whose run time
//! is the kernel's own cost of running one.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::pipeline::{SAMPLE, Sample};

use crate::{events, task};

#[tracepoint(category = "syscalls", name = "sys_enter_getppid")]
pub fn pipeline_sample_tp(_ctx: TracePointContext) -> u32 {
    if let Some((pid, tid)) = task::current_ids() {
        events::emit_quietly(Sample {
            kind: SAMPLE,
            pid,
            tid,
            _pad: 0,
        });
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_getppid")]
pub fn pipeline_empty_tp(_ctx: TracePointContext) -> u32 {
    0
}
