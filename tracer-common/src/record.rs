//! Ring-buffer records of every tool share one ring buffer (`tracer serve` runs all tools from
//! one loaded object): each record begins with a `u32` kind whose high bits name its tool.

/// Tools whose kernel side sends records; also the index of each tool's lost-record counter.
pub mod tool {
    pub const DIRECT_RECLAIM: u32 = 1;
    pub const WRITEBACK: u32 = 2;
    pub const OOM: u32 = 3;
    pub const KVM_EXIT: u32 = 4;
    pub const PG: u32 = 5;
    pub const PIPELINE: u32 = 6;
    pub const MYSQL: u32 = 7;
}

/// Slots of the per-tool lost-record counter: room for tools to come.
pub const TOOL_SLOTS: u32 = 16;

const TOOL_SHIFT: u32 = 8;

/// The kind of record `what` of `tool`.
pub const fn kind(tool: u32, what: u32) -> u32 {
    (tool << TOOL_SHIFT) | what
}

/// The tool a record of `kind` belongs to.
pub const fn tool_of(kind: u32) -> u32 {
    kind >> TOOL_SHIFT
}

/// A fixed-size record type and the tool that sends it.
pub trait Record {
    const TOOL: u32;
}

macro_rules! records {
    ($tool:expr => $($ty:ty),* $(,)?) => {
        $(impl $crate::record::Record for $ty { const TOOL: u32 = $tool; })*
    };
}
pub(crate) use records;
