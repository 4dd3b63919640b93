//! `tracer writeback`: passes of flusher threads over writeback works, and dirty throttling.

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    task::Task,
    writeback::{BDI_NAME_LEN, Throttle, Work, WritebackLayout, kind},
};

use crate::{
    events,
    kernel::{read, read_bytes, read_ptr},
    task,
};

#[unsafe(no_mangle)]
static WRITEBACK_LAYOUT: Global<WritebackLayout> = Global::new(unsafe { core::mem::zeroed() });

/// Name and cgroup of a `struct bdi_writeback *`.
#[inline(always)]
fn describe_wb(layout: &WritebackLayout, wb: *const u8, bdi: &mut [u8; BDI_NAME_LEN]) -> u64 {
    match read_ptr(wb, layout.wb_bdi) {
        Some(info) => read_bytes(info, layout.bdi_dev_name, bdi),
        None => bdi.fill(0),
    }
    if layout.wb_memcg_css == u32::MAX {
        return 0;
    }
    let task_layout = task::layout();
    read_ptr(wb, layout.wb_memcg_css)
        .and_then(|css| read_ptr(css, task_layout.css_cgroup))
        .map_or(0, |cgroup| task::cgroup_id(&task_layout, cgroup))
}

#[inline(always)]
fn emit_work(kind: u32, task: Task, fill: impl FnOnce(&mut Work)) {
    if let Some(mut entry) = events::reserve::<Work>() {
        // SAFETY: every field is written before submit, by `fill` or here.
        let work = unsafe { &mut *entry.as_mut_ptr() };
        work.kind = kind;
        work.task = task;
        work.time_ns = unsafe { bpf_ktime_get_ns() };
        work._pad = 0;
        fill(work);
        entry.submit(0);
    }
}

#[inline(always)]
fn work_btf(kind: u32, ctx: &BtfTracePointContext) {
    let Some(task) = task::current() else {
        return;
    };
    let layout = WRITEBACK_LAYOUT.load();
    let (wb, work_ptr): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    emit_work(kind, task, |work| {
        work.reason = read(work_ptr, layout.work_reason).unwrap_or(u32::MAX);
        work.nr_pages = read(work_ptr, layout.work_nr_pages).unwrap_or(0);
        work.sb_dev = read_ptr(work_ptr, layout.work_sb)
            .and_then(|sb| read(sb, layout.sb_dev))
            .unwrap_or(0);
        work.cgroup_ino = describe_wb(&layout, wb, &mut work.bdi);
    });
}

// Classic `writeback_work_class` record layout, checked by userspace against the format file.
const NAME: usize = 8;
const NR_PAGES: usize = 40;
const SB_DEV: usize = 48;
const REASON: usize = 68;
const WORK_CGROUP_INO: usize = 72;

#[inline(always)]
fn work_classic(kind: u32, ctx: &TracePointContext) {
    let Some(task) = task::current() else {
        return;
    };
    emit_work(kind, task, |work| unsafe {
        work.reason = ctx.read_at::<i32>(REASON).map_or(u32::MAX, |r| r as u32);
        work.nr_pages = ctx.read_at(NR_PAGES).unwrap_or(0);
        work.sb_dev = ctx.read_at(SB_DEV).unwrap_or(0);
        work.cgroup_ino = ctx.read_at(WORK_CGROUP_INO).unwrap_or(0);
        work.bdi = ctx.read_at(NAME).unwrap_or([0; BDI_NAME_LEN]);
    });
}

#[btf_tracepoint(function = "writeback_start")]
pub fn writeback_start(ctx: BtfTracePointContext) -> i32 {
    work_btf(kind::START, &ctx);
    0
}

#[btf_tracepoint(function = "writeback_written")]
pub fn writeback_written(ctx: BtfTracePointContext) -> i32 {
    work_btf(kind::WRITTEN, &ctx);
    0
}

#[tracepoint(category = "writeback", name = "writeback_start")]
pub fn writeback_start_tp(ctx: TracePointContext) -> u32 {
    work_classic(kind::START, &ctx);
    0
}

#[tracepoint(category = "writeback", name = "writeback_written")]
pub fn writeback_written_tp(ctx: TracePointContext) -> u32 {
    work_classic(kind::WRITTEN, &ctx);
    0
}

/// Only pauses the task will sleep: `balance_dirty_pages()` also traces non-positive ones,
/// which it does not sleep for.
#[inline(always)]
fn throttle(task: Task, pause_ns: u64, fill: impl FnOnce(&mut Throttle)) {
    if let Some(mut entry) = events::reserve::<Throttle>() {
        // SAFETY: every field is written before submit, by `fill` or here.
        let throttle = unsafe { &mut *entry.as_mut_ptr() };
        throttle.kind = kind::THROTTLE;
        throttle._pad = 0;
        throttle.task = task;
        throttle.time_ns = unsafe { bpf_ktime_get_ns() };
        throttle.pause_ns = pause_ns;
        fill(throttle);
        entry.submit(0);
    }
}

/// Arguments: wb, dtc, dirty_ratelimit, task_ratelimit, dirtied, period, pause (jiffies), start.
#[btf_tracepoint(function = "balance_dirty_pages")]
pub fn balance_dirty_pages(ctx: BtfTracePointContext) -> i32 {
    let pause: i64 = ctx.arg(6);
    if pause <= 0 {
        return 0;
    }
    let Some(task) = task::current() else {
        return 0;
    };
    let layout = WRITEBACK_LAYOUT.load();
    let wb: *const u8 = ctx.arg(0);
    throttle(task, pause as u64 * layout.jiffy_ns as u64, |throttle| {
        throttle.cgroup_ino = describe_wb(&layout, wb, &mut throttle.bdi);
    });
    0
}

const BDI: usize = 8;
/// Milliseconds: the classic record converts jiffies itself.
const PAUSE_MS: usize = 112;
const THROTTLE_CGROUP_INO: usize = 136;

#[tracepoint(category = "writeback", name = "balance_dirty_pages")]
pub fn balance_dirty_pages_tp(ctx: TracePointContext) -> u32 {
    let pause_ms: i64 = unsafe { ctx.read_at(PAUSE_MS) }.unwrap_or(0);
    if pause_ms <= 0 {
        return 0;
    }
    let Some(task) = task::current() else {
        return 0;
    };
    throttle(task, pause_ms as u64 * 1_000_000, |throttle| unsafe {
        throttle.cgroup_ino = ctx.read_at(THROTTLE_CGROUP_INO).unwrap_or(0);
        throttle.bdi = ctx.read_at(BDI).unwrap_or([0; BDI_NAME_LEN]);
    });
    0
}
