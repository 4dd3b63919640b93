//! `tracer kvm-exit`: why guests leave the CPU, and for how long.
//!
//! Exits can come by the million per second, so the kernel side counts them in per-CPU maps
//! that userspace reads each interval; records go through the ring buffer only in event mode.

/// `kvm_exit`'s `isa` field.
pub const ISA_VMX: u32 = 1;
pub const ISA_SVM: u32 = 2;

/// Log2 buckets of exit handling time, in nanoseconds.
pub const HISTOGRAM_BUCKETS: usize = 40;

/// A VM exit reason on one vCPU thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitKey {
    /// The VM (the VMM process).
    pub pid: u32,
    /// The vCPU thread.
    pub tid: u32,
    pub isa: u32,
    pub reason: u32,
}

/// Exits of one [`ExitKey`], per CPU; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitStats {
    pub exits: u64,
    /// Exits whose next VM entry was seen, and the time until it.
    pub handled: u64,
    pub handling_ns: u64,
    /// `handling_log2[i]` counts handling times in [2^i, 2^(i+1)) ns (0 and 1 in bucket 0).
    pub handling_log2: [u64; HISTOGRAM_BUCKETS],
}

/// Exits to the VMM in userspace (`kvm_userspace_exit`) of one reason on one vCPU thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserspaceKey {
    pub pid: u32,
    pub tid: u32,
    /// A `KVM_EXIT_*` reason, or [`UserspaceKey::ERROR`] / [`UserspaceKey::RESTART`] when
    /// KVM_RUN failed.
    pub reason: u32,
    pub _pad: u32,
}

impl UserspaceKey {
    pub const ERROR: u32 = u32::MAX;
    /// KVM_RUN interrupted by a signal (-EINTR).
    pub const RESTART: u32 = u32::MAX - 1;
}

/// Port I/O emulated for a VM (`kvm_pio`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PioKey {
    pub pid: u32,
    pub port: u32,
    /// 1 for writes (out), 0 for reads (in).
    pub write: u32,
    pub size: u32,
}

/// MMIO emulated for a VM (`kvm_mmio`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MmioKey {
    pub pid: u32,
    /// 0 unsatisfied read, 1 read, 2 write, as `kvm_mmio` says.
    pub kind: u32,
    pub gpa: u64,
    pub len: u32,
    pub _pad: u32,
}

/// Per vCPU thread: its vCPU id and the exit it is handling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vcpu {
    /// From `kvm_exit` / `kvm_entry`; [`Vcpu::UNKNOWN`] until one of them fires.
    pub id: u32,
    pub _pad: u32,
    /// The exit awaiting its entry, and when it happened (0: none).
    pub exit: ExitKey,
    pub exit_ns: u64,
}

impl Vcpu {
    pub const UNKNOWN: u32 = u32::MAX;
}

/// Settings of the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmConfig {
    /// Only this vCPU id, or [`Vcpu::UNKNOWN`] for all.
    pub vcpu: u32,
    /// 1: also send a record per exit, userspace exit and access.
    pub events: u32,
    /// `kvm_vcpu.vcpu_id`, for the BTF `kvm_entry`.
    pub vcpu_id_offset: u32,
    pub _pad: u32,
}

/// What an event-mode record is; every record starts with one.
pub mod kind {
    /// A [`super::ExitEvent`].
    pub const EXIT: u32 = crate::record::kind(crate::record::tool::KVM_EXIT, 1);
    /// A [`super::AccessEvent`] for `kvm_userspace_exit`.
    pub const USERSPACE: u32 = crate::record::kind(crate::record::tool::KVM_EXIT, 2);
    /// A [`super::AccessEvent`] for `kvm_pio`.
    pub const PIO: u32 = crate::record::kind(crate::record::tool::KVM_EXIT, 3);
    /// A [`super::AccessEvent`] for `kvm_mmio`.
    pub const MMIO: u32 = crate::record::kind(crate::record::tool::KVM_EXIT, 4);
}

/// A handled VM exit (event mode), sent at the next entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub kind: u32,
    pub vcpu: u32,
    pub exit: ExitKey,
    pub time_ns: u64,
    pub handling_ns: u64,
}

/// An exit to userspace, a port access or an MMIO access (event mode).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AccessEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// Userspace exit reason; port; or MMIO kind.
    pub what: u32,
    /// Port access: 1 for a write. MMIO: length.
    pub detail: u32,
    /// Port access: size.
    pub size: u32,
    /// MMIO: guest physical address.
    pub gpa: u64,
    pub time_ns: u64,
}

plain_old_data!(
    ExitKey,
    ExitStats,
    UserspaceKey,
    PioKey,
    MmioKey,
    Vcpu,
    KvmConfig,
    ExitEvent,
    AccessEvent
);
crate::record::records!(crate::record::tool::KVM_EXIT => ExitEvent, AccessEvent);
