//! perf_event_open and the bpf() calls aya 0.14 does not expose for it: uprobes with a
//! semaphore (`ref_ctr_offset`) attached through a BPF link with a cookie, per-task counters,
//! and a perf event array with a slot per backend counter (aya caps those at one per CPU).

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use perf_event_open_sys::bindings::{self, perf_event_attr};

/// A uprobe or uretprobe on a file, as the kernel's `uprobe` PMU takes it.
pub struct Uprobe {
    pub path: PathBuf,
    /// File offset of the instruction.
    pub offset: u64,
    /// File offset of the USDT semaphore, which the kernel then keeps incremented in every
    /// process mapping the file, those started later included; 0 for none.
    pub semaphore: u64,
    pub retprobe: bool,
}

/// Opens the uprobe in process `pid` alone (its breakpoints and semaphore are installed there
/// only), or with `None` in every process.
pub fn open_uprobe(uprobe: &Uprobe, pid: Option<u32>) -> Result<OwnedFd> {
    let pmu = |file: &str| {
        std::fs::read_to_string(format!("/sys/bus/event_source/devices/uprobe/{file}"))
    };
    let pmu_type: u32 = pmu("type")
        .context("this kernel has no uprobe PMU")?
        .trim()
        .parse()?;
    // `config:N`: the bit that makes a uretprobe.
    let retprobe_bit: u32 = pmu("format/retprobe")?
        .trim()
        .strip_prefix("config:")
        .context("unexpected uprobe retprobe format")?
        .parse()?;
    let path = CString::new(uprobe.path.as_os_str().as_encoded_bytes())?;
    let mut attr = new_attr();
    attr.type_ = pmu_type;
    attr.config = (uprobe.retprobe as u64) << retprobe_bit | uprobe.semaphore << 32;
    attr.__bindgen_anon_3.config1 = path.as_ptr() as u64;
    attr.__bindgen_anon_4.config2 = uprobe.offset;
    // pid -1 needs a cpu; the program runs whichever CPU the probe fires on.
    let (pid, cpu) = pid.map_or((-1, 0), |pid| (pid as i32, -1));
    open(&mut attr, pid, cpu).with_context(|| {
        format!(
            "cannot place a uprobe at {:#x} in {}",
            uprobe.offset,
            uprobe.path.display()
        )
    })
}

/// Attaches a loaded kprobe-type program to a perf event: through a BPF link carrying `cookie`
/// (Linux 5.15+), whose fd the caller keeps (closing it detaches), or where links for perf
/// events do not exist and no cookie is needed, the older way: the event holds the program
/// until it is closed (`None`).
pub fn attach(program: BorrowedFd, event: &OwnedFd, cookie: u64) -> Result<Option<OwnedFd>> {
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PERF_EVENT: u32 = 41;
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        bpf_cookie: u64,
        _rest: [u64; 6],
    }
    let attr = LinkCreate {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: event.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        flags: 0,
        bpf_cookie: cookie,
        _rest: [0; 6],
    };
    match bpf(BPF_LINK_CREATE, &attr) {
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(err) if cookie == 0 && err.raw_os_error() == Some(libc::EINVAL) => {
            let fd = program.as_raw_fd() as u32;
            if unsafe { perf_event_open_sys::ioctls::SET_BPF(event.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error())
                    .context("cannot attach a BPF program to a uprobe");
            }
            Ok(None)
        }
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Err(err).context(
            "this kernel has no BPF links for perf events (Linux 5.15+), which carry the \
             probe's cookie",
        ),
        Err(err) => Err(err).context("cannot attach a BPF program to a uprobe"),
    }
}

/// A `BPF_MAP_TYPE_PERF_EVENT_ARRAY` of `slots` entries.
pub fn create_event_array(name: &str, slots: u32) -> Result<OwnedFd> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
        _rest: [u32; 12],
    }
    let mut map_name = [0u8; 16];
    let len = name.len().min(15);
    map_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: slots,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
        _rest: [0; 12],
    };
    let fd = bpf(BPF_MAP_CREATE, &attr).context("cannot create a perf event array")?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a BPF object at `path` in a bpffs.
pub fn pin(fd: &OwnedFd, path: &Path) -> Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let path_c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let attr = ObjPin {
        pathname: path_c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    bpf(BPF_OBJ_PIN, &attr).with_context(|| format!("cannot pin a map at {}", path.display()))?;
    Ok(())
}

/// Stores `event` at `index` of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
pub fn store_event(map: BorrowedFd, index: u32, event: &OwnedFd) -> Result<()> {
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    let value = event.as_raw_fd() as u32;
    bpf(BPF_MAP_UPDATE_ELEM, &map_elem(map, &index, &value))
        .context("cannot store a perf counter")?;
    Ok(())
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_elem(map: BorrowedFd, key: &u32, value: &u32) -> MapElem {
    MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const u32 as u64,
        value: value as *const u32 as u64,
        flags: 0,
    }
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<i32> {
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

/// Counters a query can be charged with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Counter {
    /// Last-level cache references (hardware).
    LlcReferences,
    /// Last-level cache misses (hardware).
    LlcMisses,
    PageFaults,
    ContextSwitches,
    CpuMigrations,
}

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::LlcReferences => "llc-references",
            Counter::LlcMisses => "llc-misses",
            Counter::PageFaults => "page-faults",
            Counter::ContextSwitches => "context-switches",
            Counter::CpuMigrations => "cpu-migrations",
        }
    }

    /// The `task_struct` members whose sum the kernel keeps as this count for every task (the
    /// software counters), so that it can be read without a perf event.
    pub fn task_members(self) -> Option<&'static [&'static str]> {
        match self {
            Counter::PageFaults => Some(&["min_flt", "maj_flt"]),
            Counter::ContextSwitches => Some(&["nvcsw", "nivcsw"]),
            Counter::CpuMigrations => Some(&["se.nr_migrations"]),
            Counter::LlcReferences | Counter::LlcMisses => None,
        }
    }

    fn type_and_config(self) -> (u32, u64) {
        use bindings::*;
        match self {
            Counter::LlcReferences => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_REFERENCES as u64),
            Counter::LlcMisses => (PERF_TYPE_HARDWARE, PERF_COUNT_HW_CACHE_MISSES as u64),
            Counter::PageFaults => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS as u64),
            Counter::ContextSwitches => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CONTEXT_SWITCHES as u64),
            Counter::CpuMigrations => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_MIGRATIONS as u64),
        }
    }

    /// Opens the counter for one thread, following it across CPUs.
    pub fn open(self, tid: u32) -> io::Result<OwnedFd> {
        let (type_, config) = self.type_and_config();
        let mut attr = new_attr();
        attr.type_ = type_;
        attr.config = config;
        open(&mut attr, tid as i32, -1)
    }
}

fn new_attr() -> perf_event_attr {
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.size = size_of::<perf_event_attr>() as u32;
    attr
}

fn open(attr: &mut perf_event_attr, pid: i32, cpu: i32) -> io::Result<OwnedFd> {
    let flags = bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong;
    let fd = unsafe { perf_event_open_sys::perf_event_open(attr, pid, cpu, -1, flags) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_counters_count_this_thread() {
        let tid = unsafe { libc::gettid() } as u32;
        let fd = Counter::PageFaults
            .open(tid)
            .expect("software counters exist everywhere");
        // Fault in fresh pages.
        let pages = vec![1u8; 64 << 20];
        std::hint::black_box(&pages);
        let mut count = 0u64;
        let read = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        assert_eq!(read, 8);
        assert!(count >= 1000, "{count} page faults for 64 MiB");
    }
}
