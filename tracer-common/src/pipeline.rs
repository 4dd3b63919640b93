//! `tracer pipeline` (hidden, for `cargo xtask bench events`): the ring-buffer pipeline at its
//! limit, one record per `getppid()` of the process traced.

use crate::record::{self, records, tool};

/// The kind of a [`Sample`] record.
pub const SAMPLE: u32 = record::kind(tool::PIPELINE, 1);

/// One traced system call: who made it. (No timestamp: `bpf_ktime_get_ns()` alone costs about
/// as much as the rest of the program in a VM, which the benchmark reports apart.)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// [`SAMPLE`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub _pad: u32,
}

plain_old_data!(Sample);
records!(tool::PIPELINE => Sample);
