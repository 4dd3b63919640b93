//! Where `tracer pg` probes a server binary: its USDT probes, or uprobes on PortalRun() without
//! them. Attached in every process running the binary (`--via probes`), or in one encrypted
//! backend alone, whose requests its socket hides: a uprobe opened for one process traps in
//! that process only, so the other backends pay nothing.

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf};

use anyhow::{Context, Result, bail};
use tracer_common::pg::{SITE_PROGRAMS, Site, site};

use super::{Protocol, servers::Target};
use crate::{loader::Probes, perf, processes, usdt::Binary};

/// The probe sites of one binary.
pub struct ProbeSites {
    /// Which file, wherever it is reached from.
    file: Option<(u64, u64)>,
    sites: Vec<(perf::Uprobe, Site, String)>,
    /// What was chosen, for the banner.
    pub used: String,
    /// Their slots in the kernel's site table, once there.
    slots: Vec<u32>,
}

/// Finds where to probe `target`: USDT probes where it has them, else uprobes on PortalRun.
pub fn plan(target: &Target, protocol: Protocol) -> Result<ProbeSites> {
    let binary =
        Binary::open(&target.path).with_context(|| format!("cannot read {}", target.shown))?;
    let query_string = binary
        .symbol("debug_query_string")
        .map_or(0, |(address, _)| address);
    let query = [
        ("query__start", site::QUERY_START),
        ("query__done", site::QUERY_DONE),
    ];
    let execute = [
        ("query__execute__start", site::EXECUTE_START),
        ("query__execute__done", site::EXECUTE_DONE),
    ];
    let (wanted, used) = match protocol {
        Protocol::Simple => (query.to_vec(), "USDT postgresql:query__start/done"),
        Protocol::Extended => (
            execute.to_vec(),
            "USDT postgresql:query__execute__start/done",
        ),
        Protocol::All => (
            [query, execute].concat(),
            "USDT postgresql:query__start/done and query__execute__start/done",
        ),
    };
    let file = processes::file_id(&target.path);
    let mut sites = Vec::new();
    for probe in binary.probes("postgresql")? {
        let Some(&(_, kind)) = wanted.iter().find(|(name, _)| *name == probe.name) else {
            continue;
        };
        let query = match kind {
            site::QUERY_START | site::QUERY_DONE => probe.arg(0)?,
            _ => Default::default(),
        };
        let uprobe = perf::Uprobe {
            path: target.path.clone(),
            offset: probe.file_offset,
            semaphore: probe.semaphore,
            retprobe: false,
        };
        let site = Site {
            kind,
            query,
            address: probe.address,
            query_string,
            ..Site::default()
        };
        sites.push((uprobe, site, format!("postgresql:{}", probe.name)));
    }
    let starts = |kind| sites.iter().any(|(_, site, _)| site.kind == kind);
    if starts(site::QUERY_START) || starts(site::EXECUTE_START) {
        return Ok(ProbeSites {
            file,
            sites,
            used: format!("{} ({used})", target.shown),
            slots: Vec::new(),
        });
    }
    // No USDT: a portal run per statement, from the exported PortalRun().
    let (address, offset) = binary.symbol("PortalRun").with_context(|| {
        format!(
            "{} is not a PostgreSQL server: it has neither postgresql USDT probes nor a PortalRun symbol",
            target.shown
        )
    })?;
    if protocol == Protocol::Simple {
        bail!(
            "{} has no postgresql:query__start/done USDT probes: only portal runs can be traced (--protocol extended)",
            target.shown
        );
    }
    let sites = [(site::EXECUTE_START, false), (site::EXECUTE_DONE, true)]
        .map(|(kind, retprobe)| {
            let uprobe = perf::Uprobe {
                path: target.path.clone(),
                offset,
                semaphore: 0,
                retprobe,
            };
            let site = Site {
                kind,
                address,
                query_string,
                ..Site::default()
            };
            (uprobe, site, "PortalRun".to_owned())
        })
        .into_iter()
        .collect();
    Ok(ProbeSites {
        file,
        sites,
        used: format!(
            "{} (no USDT probes: uprobes on PortalRun() entry and return)",
            target.shown
        ),
        slots: Vec::new(),
    })
}

/// The binaries planned, their sites in the kernel's table (a site's slot is its attach
/// cookie, or before 5.15 the number of its program), and the probes of single backends.
pub struct Sites {
    binaries: Vec<ProbeSites>,
    protocol: Protocol,
    cookies: bool,
    slots_used: u32,
    /// Probes attached in one backend alone, by pid: dropping them detaches them.
    backends: HashMap<u32, Vec<OwnedFd>>,
}

impl Sites {
    pub fn new(binaries: Vec<ProbeSites>, protocol: Protocol, cookies: bool) -> Self {
        Self {
            binaries,
            protocol,
            cookies,
            slots_used: 0,
            backends: HashMap::new(),
        }
    }

    /// What was chosen in each binary, for the banner.
    pub fn used(&self) -> Vec<&str> {
        self.binaries
            .iter()
            .map(|sites| sites.used.as_str())
            .collect()
    }

    /// Attaches every binary's sites in every process that runs it.
    pub fn attach_everywhere(&mut self, probes: &mut Probes) -> Result<()> {
        for index in 0..self.binaries.len() {
            self.register(probes, index)?;
            let sites = &self.binaries[index];
            for ((uprobe, _, name), &slot) in sites.sites.iter().zip(&sites.slots) {
                let attached = attach(probes, uprobe, slot, self.cookies, None)?;
                probes.keep(attached);
                let semaphore = if uprobe.semaphore != 0 {
                    ", semaphore"
                } else {
                    ""
                };
                probes.say(format_args!(
                    "{name} at {:#x} in {}{semaphore}",
                    uprobe.offset,
                    uprobe.path.display()
                ));
            }
        }
        Ok(())
    }

    /// Plans the sites of the binary `pid` runs, unless planned: done when a server starts,
    /// for its encrypted backends not to wait for the binary to be read.
    pub fn plan_binary_of(&mut self, pid: u32) -> Result<usize> {
        let exe = processes::exe(pid).with_context(|| format!("process {pid} exited"))?;
        let file = processes::file_id(&exe);
        if let Some(index) = self.binaries.iter().position(|sites| sites.file == file) {
            return Ok(index);
        }
        let target = Target {
            path: exe,
            shown: processes::shown(pid),
        };
        self.binaries.push(plan(&target, self.protocol)?);
        Ok(self.binaries.len() - 1)
    }

    /// Attaches the probes of the binary `pid` runs in that process alone.
    pub fn attach_backend(&mut self, probes: &mut Probes, pid: u32) -> Result<()> {
        let index = self.plan_binary_of(pid)?;
        self.register(probes, index)?;
        // The backend's own path to the binary: the one planned from may be gone.
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let sites = &self.binaries[index];
        let mut attached = Vec::new();
        for ((uprobe, _, _), &slot) in sites.sites.iter().zip(&sites.slots) {
            let uprobe = perf::Uprobe {
                path: exe.clone(),
                semaphore: 0,
                ..*uprobe
            };
            attached.extend(attach(probes, &uprobe, slot, self.cookies, Some(pid))?);
        }
        probes.say(format_args!(
            "backend {pid} is encrypted: {} probes in it alone",
            sites.sites.len()
        ));
        self.backends.insert(pid, attached);
        Ok(())
    }

    /// Detaches the probes of backends that exited.
    pub fn forget_exited(&mut self) {
        self.backends
            .retain(|pid, _| processes::exe(*pid).is_some());
    }

    /// Loads the probe programs ahead of the first encrypted backend, which must not wait for
    /// the verifier.
    pub fn load_programs(&self, probes: &mut Probes) -> Result<()> {
        if self.cookies {
            probes.load_uprobe("pg_probe")?;
        } else {
            for slot in 1..=SITE_PROGRAMS {
                probes.load_uprobe(&format!("pg_probe_{slot}"))?;
            }
        }
        Ok(())
    }

    /// Writes binary `index`'s sites into the kernel's table, once.
    fn register(&mut self, probes: &mut Probes, index: usize) -> Result<()> {
        let sites = &mut self.binaries[index];
        if !sites.slots.is_empty() {
            return Ok(());
        }
        let mut table: aya::maps::Array<_, Site> =
            aya::maps::Array::try_from(probes.map_mut("PG_SITES")?)?;
        for (_, site, _) in &sites.sites {
            let slot = self.slots_used + 1;
            if !self.cookies && slot > SITE_PROGRAMS {
                bail!(
                    "more than {SITE_PROGRAMS} probe sites on a kernel without attach cookies \
                     (before 5.15): try --via socket"
                );
            }
            table
                .set(slot, site, 0)
                .context("more probe sites than tracer has room for")?;
            self.slots_used = slot;
            sites.slots.push(slot);
        }
        Ok(())
    }
}

/// Attaches one site: the program for all sites with the site's slot as cookie or, without
/// cookies, the slot's own program.
fn attach(
    probes: &mut Probes,
    uprobe: &perf::Uprobe,
    slot: u32,
    cookies: bool,
    pid: Option<u32>,
) -> Result<Vec<OwnedFd>> {
    if cookies {
        probes.attach_uprobe_in("pg_probe", uprobe, slot.into(), pid)
    } else {
        probes.attach_uprobe_in(&format!("pg_probe_{slot}"), uprobe, 0, pid)
    }
}
