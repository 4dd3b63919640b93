//! `tracer kvm-exit`: VM exits and their handling time, exits to the VMM, port and MMIO
//! accesses, counted in per-CPU maps.

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{HashMap, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::kvm_exit::{
    AccessEvent, ExitEvent, ExitKey, ExitStats, HISTOGRAM_BUCKETS, KvmConfig, MmioKey, PioKey,
    UserspaceKey, Vcpu, kind,
};

use crate::{events, kernel::read, task};

#[unsafe(no_mangle)]
static KVM_CONFIG: Global<KvmConfig> = Global::new(unsafe { core::mem::zeroed() });

#[map]
static KVM_EXITS: PerCpuHashMap<ExitKey, ExitStats> =
    PerCpuHashMap::with_max_entries(8192, events::NO_PREALLOC);

#[map]
static KVM_USERSPACE: PerCpuHashMap<UserspaceKey, u64> =
    PerCpuHashMap::with_max_entries(4096, events::NO_PREALLOC);

#[map]
static KVM_PIO: PerCpuHashMap<PioKey, u64> =
    PerCpuHashMap::with_max_entries(4096, events::NO_PREALLOC);

#[map]
static KVM_MMIO: PerCpuHashMap<MmioKey, u64> =
    PerCpuHashMap::with_max_entries(4096, events::NO_PREALLOC);

/// vCPU threads: their vCPU id and the exit they are handling.
#[map]
static KVM_VCPUS: HashMap<u32, Vcpu> = HashMap::with_max_entries(8192, events::NO_PREALLOC);

static ZERO_STATS: ExitStats = unsafe { core::mem::zeroed() };

/// Whether the `--vcpu` filter keeps vCPU `id`.
#[inline(always)]
fn vcpu_kept(id: u32) -> bool {
    let wanted = KVM_CONFIG.load().vcpu;
    wanted == Vcpu::UNKNOWN || wanted == id
}

/// The vCPU id of thread `tid`, as the last exit or entry on it told.
#[inline(always)]
fn vcpu_of(tid: u32) -> u32 {
    unsafe { KVM_VCPUS.get(tid) }.map_or(Vcpu::UNKNOWN, |vcpu| vcpu.id)
}

#[inline(always)]
fn count<K>(map: &PerCpuHashMap<K, u64>, key: &K) {
    match map.get_ptr_mut(key) {
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = map.insert(key, 1, 0);
        }
    }
}

/// A new entry, inserted from the zeroed static: the stack could not hold its value.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a copy would go on the stack"
)]
fn insert_zeroed(key: &ExitKey) {
    if KVM_EXITS.insert(key, &ZERO_STATS, 0).is_err() {
        cold_warn!("kvm-exit: no room for the exits of thread {}", key.tid);
    }
}

#[inline(always)]
fn exit(reason: u32, isa: u32, vcpu: u32) {
    let Some((pid, tid)) = task::current_ids() else {
        return;
    };
    if !vcpu_kept(vcpu) {
        return;
    }
    let key = ExitKey {
        pid,
        tid,
        isa,
        reason,
    };
    let stats = match KVM_EXITS.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            insert_zeroed(&key);
            let Some(stats) = KVM_EXITS.get_ptr_mut(key) else {
                return;
            };
            stats
        }
    };
    unsafe { (*stats).exits += 1 };
    let now = unsafe { bpf_ktime_get_ns() };
    // Updated in place: an insert would allocate, and this runs for every exit.
    match KVM_VCPUS.get_ptr_mut(tid) {
        Some(state) => {
            let state = unsafe { &mut *state };
            (state.id, state.exit, state.exit_ns) = (vcpu, key, now);
        }
        None => {
            let state = Vcpu {
                id: vcpu,
                _pad: 0,
                exit: key,
                exit_ns: now,
            };
            let _ = KVM_VCPUS.insert(tid, state, 0);
        }
    }
}

/// The vCPU enters the guest again: the exit it was handling is done.
#[inline(always)]
fn entry(vcpu: u32) {
    let tid = task::current_tid();
    if tid == 0 {
        // Outside tracer's pid namespace.
        return;
    }
    let Some(state) = KVM_VCPUS.get_ptr_mut(tid) else {
        // A vCPU whose exits the filters leave out, or one not seen exiting yet.
        let _ = KVM_VCPUS.insert(
            tid,
            Vcpu {
                id: vcpu,
                ..unsafe { core::mem::zeroed() }
            },
            0,
        );
        return;
    };
    let state = unsafe { &mut *state };
    state.id = vcpu;
    if state.exit_ns == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let handling_ns = now - state.exit_ns;
    state.exit_ns = 0;
    if let Some(stats) = KVM_EXITS.get_ptr_mut(state.exit) {
        let stats = unsafe { &mut *stats };
        stats.handled += 1;
        stats.handling_ns += handling_ns;
        let bucket = (64 - handling_ns.leading_zeros()).saturating_sub(1) as usize;
        if let Some(slot) = stats
            .handling_log2
            .get_mut(bucket.min(HISTOGRAM_BUCKETS - 1))
        {
            *slot += 1;
        }
    }
    if KVM_CONFIG.load().events != 0 {
        events::emit(ExitEvent {
            kind: kind::EXIT,
            vcpu,
            exit: state.exit,
            time_ns: now,
            handling_ns,
        });
    }
}

#[inline(always)]
fn access(kind: u32, what: u32, detail: u32, size: u32, gpa: u64) -> Option<(u32, u32)> {
    let (pid, tid) = task::current_ids()?;
    if !vcpu_kept(vcpu_of(tid)) {
        return None;
    }
    if KVM_CONFIG.load().events != 0 {
        events::emit(AccessEvent {
            kind,
            pid,
            tid,
            what,
            detail,
            size,
            gpa,
            time_ns: unsafe { bpf_ktime_get_ns() },
        });
    }
    Some((pid, tid))
}

#[inline(always)]
fn userspace_exit(reason: u32, errno: i32) {
    let reason = match errno {
        0.. => reason,
        -4 => UserspaceKey::RESTART,
        _ => UserspaceKey::ERROR,
    };
    if let Some((pid, tid)) = access(kind::USERSPACE, reason, 0, 0, 0) {
        count(
            &KVM_USERSPACE,
            &UserspaceKey {
                pid,
                tid,
                reason,
                _pad: 0,
            },
        );
    }
}

#[inline(always)]
fn pio(write: u32, port: u32, size: u32) {
    if let Some((pid, _)) = access(kind::PIO, port, write, size, 0) {
        count(
            &KVM_PIO,
            &PioKey {
                pid,
                port,
                write,
                size,
            },
        );
    }
}

#[inline(always)]
fn mmio(kind: u32, len: u32, gpa: u64) {
    if let Some((pid, _)) = access(kind::MMIO, kind, len, 0, gpa) {
        count(
            &KVM_MMIO,
            &MmioKey {
                pid,
                kind,
                gpa,
                len,
                _pad: 0,
            },
        );
    }
}

// `kvm_exit` hands BTF programs the vCPU only; the reason would take the vendor module's
// structures. Its classic record has it all.
const EXIT_REASON: usize = 8;
const EXIT_ISA: usize = 24;
const EXIT_VCPU_ID: usize = 56;

#[tracepoint(category = "kvm", name = "kvm_exit")]
pub fn kvm_exit_tp(ctx: TracePointContext) -> u32 {
    let field = |offset: usize| -> u32 { unsafe { ctx.read_at(offset) }.unwrap_or(0) };
    exit(field(EXIT_REASON), field(EXIT_ISA), field(EXIT_VCPU_ID));
    0
}

/// Arguments: the vCPU, and whether the entry exits at once.
#[btf_tracepoint(function = "kvm_entry")]
pub fn kvm_entry(ctx: BtfTracePointContext) -> i32 {
    let vcpu: *const u8 = ctx.arg(0);
    entry(read(vcpu, KVM_CONFIG.load().vcpu_id_offset).unwrap_or(Vcpu::UNKNOWN));
    0
}

const ENTRY_VCPU_ID: usize = 8;

#[tracepoint(category = "kvm", name = "kvm_entry")]
pub fn kvm_entry_tp(ctx: TracePointContext) -> u32 {
    entry(unsafe { ctx.read_at(ENTRY_VCPU_ID) }.unwrap_or(Vcpu::UNKNOWN));
    0
}

#[btf_tracepoint(function = "kvm_userspace_exit")]
pub fn kvm_userspace_exit(ctx: BtfTracePointContext) -> i32 {
    userspace_exit(ctx.arg(0), ctx.arg(1));
    0
}

const USERSPACE_REASON: usize = 8;
const USERSPACE_ERRNO: usize = 12;

#[tracepoint(category = "kvm", name = "kvm_userspace_exit")]
pub fn kvm_userspace_exit_tp(ctx: TracePointContext) -> u32 {
    let reason = unsafe { ctx.read_at(USERSPACE_REASON) }.unwrap_or(0);
    userspace_exit(reason, unsafe { ctx.read_at(USERSPACE_ERRNO) }.unwrap_or(0));
    0
}

/// Arguments: rw, port, size, count, data.
#[btf_tracepoint(function = "kvm_pio")]
pub fn kvm_pio(ctx: BtfTracePointContext) -> i32 {
    pio(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

const PIO_RW: usize = 8;
const PIO_PORT: usize = 12;
const PIO_SIZE: usize = 16;

#[tracepoint(category = "kvm", name = "kvm_pio")]
pub fn kvm_pio_tp(ctx: TracePointContext) -> u32 {
    let field = |offset: usize| -> u32 { unsafe { ctx.read_at(offset) }.unwrap_or(0) };
    pio(field(PIO_RW), field(PIO_PORT), field(PIO_SIZE));
    0
}

/// Arguments: type, len, gpa, val.
#[btf_tracepoint(function = "kvm_mmio")]
pub fn kvm_mmio(ctx: BtfTracePointContext) -> i32 {
    mmio(
        ctx.arg::<i32>(0) as u32,
        ctx.arg::<i32>(1) as u32,
        ctx.arg(2),
    );
    0
}

const MMIO_TYPE: usize = 8;
const MMIO_LEN: usize = 12;
const MMIO_GPA: usize = 16;

#[tracepoint(category = "kvm", name = "kvm_mmio")]
pub fn kvm_mmio_tp(ctx: TracePointContext) -> u32 {
    let kind = unsafe { ctx.read_at(MMIO_TYPE) }.unwrap_or(0);
    let len = unsafe { ctx.read_at(MMIO_LEN) }.unwrap_or(0);
    mmio(kind, len, unsafe { ctx.read_at(MMIO_GPA) }.unwrap_or(0));
    0
}
