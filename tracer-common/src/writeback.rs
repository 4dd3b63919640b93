//! `tracer writeback`: writeback works of the flusher threads and dirty throttling of writers.

use crate::task::Task;

/// Bytes of a backing device's name kept (the kernel's own trace records keep 32).
pub const BDI_NAME_LEN: usize = 32;

/// What a record is; every record starts with one.
pub mod kind {
    /// `writeback:writeback_start`, a [`super::Work`].
    pub const START: u32 = crate::record::kind(crate::record::tool::WRITEBACK, 1);
    /// `writeback:writeback_written`, a [`super::Work`].
    pub const WRITTEN: u32 = crate::record::kind(crate::record::tool::WRITEBACK, 2);
    /// `writeback:balance_dirty_pages`, a [`super::Throttle`].
    pub const THROTTLE: u32 = crate::record::kind(crate::record::tool::WRITEBACK, 3);
}

/// One pass of a flusher thread over a writeback work (`wb_writeback()` traces a start and a
/// written record per pass).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Work {
    /// [`kind::START`] or [`kind::WRITTEN`].
    pub kind: u32,
    /// `enum wb_reason`.
    pub reason: u32,
    pub task: Task,
    pub time_ns: u64,
    /// Pages the work still may write: it drops by what the pass wrote.
    pub nr_pages: i64,
    /// Inode number of the writeback's memory cgroup (cgroup writeback), or of the root.
    pub cgroup_ino: u64,
    /// The superblock's device, or 0 when the work covers the whole device.
    pub sb_dev: u32,
    pub _pad: u32,
    pub bdi: [u8; BDI_NAME_LEN],
}

/// A task made to sleep in `balance_dirty_pages()` because it dirtied pages faster than they
/// could be written.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Throttle {
    /// [`kind::THROTTLE`].
    pub kind: u32,
    pub _pad: u32,
    pub task: Task,
    pub time_ns: u64,
    pub pause_ns: u64,
    pub cgroup_ino: u64,
    pub bdi: [u8; BDI_NAME_LEN],
}

/// Offsets for the BTF tracepoints, which receive kernel structs rather than trace records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WritebackLayout {
    /// `wb_writeback_work.nr_pages`
    pub work_nr_pages: u32,
    /// `wb_writeback_work.sb`
    pub work_sb: u32,
    /// `wb_writeback_work.reason`
    pub work_reason: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `bdi_writeback.bdi`
    pub wb_bdi: u32,
    /// `backing_dev_info.dev_name`
    pub bdi_dev_name: u32,
    /// `bdi_writeback.memcg_css`, or `u32::MAX` without cgroup writeback.
    pub wb_memcg_css: u32,
    /// Nanoseconds per jiffy: `balance_dirty_pages` hands the pause over in jiffies.
    pub jiffy_ns: u32,
}

plain_old_data!(Work, Throttle, WritebackLayout);
crate::record::records!(crate::record::tool::WRITEBACK => Work, Throttle);
