//! Counters charged to each query: the kernel's own per-task counts where it keeps them, else
//! perf events opened per server thread.

use std::{collections::HashMap, os::fd::OwnedFd, path::Path};

use anyhow::{Context, Result, bail};
use tracer_common::query::{COUNTER_SLOTS, MAX_COUNTERS};

use crate::{
    kernel_btf::KernelBtf,
    loader::Probes,
    perf::{self, Counter},
};

pub fn real_parent(btf: &KernelBtf) -> Result<u32> {
    btf.member_offset("task_struct", "real_parent")
}

/// Whether `counters` are read through perf events opened per backend: hardware ones are, and
/// then all of them; software ones alone are read where the kernel keeps them in every task,
/// which costs nothing between queries (a perf event is switched at every context switch).
pub fn needs_perf_events(counters: &[Counter]) -> bool {
    counters
        .iter()
        .any(|counter| counter.task_members().is_none())
}

/// Where the kernel keeps each of `counters` in `task_struct`.
pub fn task_counters(btf: &KernelBtf, counters: &[Counter]) -> Result<[[u32; 2]; MAX_COUNTERS]> {
    let mut fields = [[0; 2]; MAX_COUNTERS];
    for (offsets, counter) in fields.iter_mut().zip(counters) {
        let members = counter.task_members().unwrap_or_default();
        for (offset, member) in offsets.iter_mut().zip(members) {
            *offset = btf.member_offset("task_struct", member)?;
        }
    }
    Ok(fields)
}

/// The counters that can be read once loaded: per-thread perf events need the tool's own
/// event array, which needs a private mount namespace (see `loader::Setting::OwnMap`).
pub fn usable(counters: Vec<Counter>, probes: &Probes) -> Vec<Counter> {
    if !needs_perf_events(&counters) || probes.own_maps {
        return counters;
    }
    eprintln!(
        "tracer: per-query counters need a private mount namespace (CAP_SYS_ADMIN): leaving them out"
    );
    Vec::new()
}

/// The counters to use: the user's, else LLC where the CPU exposes a PMU, else software ones.
pub fn choose_counters(requested: &[Counter]) -> Result<Vec<Counter>> {
    let tid = unsafe { libc::gettid() } as u32;
    if !requested.is_empty() {
        for counter in requested {
            counter
                .open(tid)
                .with_context(|| format!("counter {} is not available here", counter.name()))?;
        }
        return Ok(requested.to_vec());
    }
    match Counter::LlcReferences.open(tid) {
        Ok(_) => Ok(vec![Counter::LlcReferences, Counter::LlcMisses]),
        Err(err) => {
            eprintln!(
                "tracer: no hardware PMU here ({err}): counting page-faults, context-switches and cpu-migrations per query instead of LLC"
            );
            Ok(vec![
                Counter::PageFaults,
                Counter::ContextSwitches,
                Counter::CpuMigrations,
            ])
        }
    }
}

/// Per-query counters. Those the kernel keeps in every task are read there; the others are
/// per-thread perf events, opened when a backend runs its first traced query and closed when
/// it is gone. Either way they count the backend thread itself wherever it runs, so a query
/// that moves to another CPU is still charged exactly its own events.
pub struct BackendCounters {
    pub kinds: Vec<Counter>,
    /// Whether they are perf events opened per backend (see [`needs_perf_events`]).
    per_backend_events: bool,
    open: HashMap<u32, (u32, Vec<OwnedFd>)>,
    free_slots: Vec<u32>,
}

impl BackendCounters {
    pub fn new(kinds: Vec<Counter>) -> Self {
        let per_backend = kinds.len().max(1) as u32;
        Self {
            free_slots: (0..COUNTER_SLOTS / per_backend)
                .rev()
                .map(|slot| slot * per_backend)
                .collect(),
            per_backend_events: needs_perf_events(&kinds),
            kinds,
            open: HashMap::new(),
        }
    }

    pub fn add(&mut self, probes: &mut Probes, tid: u32) -> Result<()> {
        if !self.per_backend_events || self.open.contains_key(&tid) {
            return Ok(());
        }
        self.forget_exited(probes)?;
        let Some(first) = self.free_slots.pop() else {
            return Ok(()); // More backends than slots: the rest go without counters.
        };
        let mut fds = Vec::new();
        for counter in &self.kinds {
            match counter.open(tid) {
                Ok(fd) => fds.push(fd),
                // The backend is already gone.
                Err(_) => {
                    self.free_slots.push(first);
                    return Ok(());
                }
            }
        }
        {
            let events = probes.map_mut("QUERY_COUNTERS")?;
            let map_fd = perf_map_fd(events)?;
            for (i, fd) in fds.iter().enumerate() {
                perf::store_event(map_fd, first + i as u32, fd)?;
            }
        }
        let mut slots: aya::maps::HashMap<_, u32, u32> =
            aya::maps::HashMap::try_from(probes.map_mut("QUERY_COUNTER_SLOTS")?)?;
        slots.insert(tid, first, 0)?;
        self.open.insert(tid, (first, fds));
        Ok(())
    }

    fn forget_exited(&mut self, probes: &mut Probes) -> Result<()> {
        let gone: Vec<u32> = self
            .open
            .keys()
            .copied()
            .filter(|tid| !Path::new(&format!("/proc/{tid}")).exists())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let mut slots: aya::maps::HashMap<_, u32, u32> =
            aya::maps::HashMap::try_from(probes.map_mut("QUERY_COUNTER_SLOTS")?)?;
        for tid in gone {
            let _ = slots.remove(&tid);
            if let Some((first, _fds)) = self.open.remove(&tid) {
                self.free_slots.push(first);
            }
        }
        Ok(())
    }
}

fn perf_map_fd(map: &aya::maps::Map) -> Result<std::os::fd::BorrowedFd<'_>> {
    use std::os::fd::AsFd;
    match map {
        aya::maps::Map::PerfEventArray(data) => Ok(data.fd().as_fd()),
        _ => bail!("QUERY_COUNTERS is not a perf event array"),
    }
}
