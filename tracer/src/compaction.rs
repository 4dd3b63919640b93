//! What the kernel's compaction tracepoints say, as this kernel numbers it: shared by
//! `direct-reclaim` (each try, zone by zone) and the per-query tools (compaction inside each
//! query).

use anyhow::{Result, bail};
use tracer_common::query::CompactionStatuses;

use crate::{flags::Names, tracefs::Tracefs};

/// The names the kernel gives compaction's statuses and zones, from its tracepoint formats.
pub struct Statuses {
    names: Names,
    zones: Names,
    skipped: i32,
}

impl Statuses {
    /// Errs on a kernel without compaction's tracepoints (built without CONFIG_COMPACTION).
    pub fn read(tracefs: &Tracefs) -> Result<Self> {
        let end = tracefs.format("compaction", "mm_compaction_end")?;
        let suitable = tracefs.format("compaction", "mm_compaction_suitable")?;
        let names = Names::from_print_fmt(&end.print_fmt, "__print_symbolic", "status");
        let Some(skipped) = names.value("skipped") else {
            bail!("compaction:mm_compaction_end names no \"skipped\" status on this kernel");
        };
        Ok(Self {
            zones: Names::from_print_fmt(&suitable.print_fmt, "__print_symbolic", "idx"),
            skipped: skipped as i32,
            names,
        })
    }

    pub fn name(&self, status: i32) -> String {
        self.names.symbol32(status as u32)
    }

    /// The status named `name`, if the kernel has one.
    pub fn value(&self, name: &str) -> Option<i32> {
        self.names.value(name).map(|value| value as i32)
    }

    pub fn is(&self, status: i32, name: &str) -> bool {
        self.value(name) == Some(status)
    }

    /// A try's status when every zone was skipped: no stall, as the kernel counts them.
    pub fn skipped(&self) -> i32 {
        self.skipped
    }

    pub fn zone(&self, index: i32) -> String {
        self.zones.symbol(index as u64)
    }

    /// What the per-query programs need to tell a stall.
    pub fn kernel_side(&self) -> CompactionStatuses {
        CompactionStatuses {
            skipped: self.skipped,
            // Without a name for it, a value no status has.
            proceed: self.value("continue").unwrap_or(i32::MIN),
        }
    }
}
