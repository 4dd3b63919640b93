//! Diagnostics of the kernel side's cold paths (a map out of room, a read that failed), through
//! aya-log: `tracer -v` prints them; without -v userspace sets their level to off at load, so
//! each costs one branch. Never on a hot path.

/// A warning: `cold_warn!("pg: no room for thread {}", tid)`.
macro_rules! cold_warn {
    ($($arg:tt)+) => {
        // aya-log's macros take a context they do not use yet.
        aya_log_ebpf::warn!(&(), $($arg)+)
    };
}
