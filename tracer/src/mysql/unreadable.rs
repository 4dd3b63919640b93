//! Connections whose commands cannot be read off their socket: encrypted (TLS), or in the
//! compressed protocol. The kernel's socket programs tell each once. By default a server's
//! TLS connections are read where OpenSSL hands over their plaintext ([`crate::tls`]), in
//! place from the start; where that cannot be, and for compressed connections, probes on
//! `dispatch_command()` then take that server's unreadable connections. A uprobe is installed
//! in a whole address space, so once a server has one, all its threads trap at each command
//! (the probe program returns at once for the others): the price is paid only by servers that
//! have such connections. Those probes take some milliseconds to attach: the connection that
//! asked for them may have run commands before, unseen, and is counted as late.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use tracer_common::mysql::{Unreadable, unreadable};

use super::Via;
use crate::{
    loader::Probes,
    output, perf, processes,
    query::Aside,
    tls::{self, OpensslProbes},
};

/// The programs at `SSL_read()` and `SSL_write()`.
pub const TLS_PROGRAMS: tls::Programs = tls::Programs {
    read: "mysql_tls_read",
    read_return: "mysql_tls_read_return",
    write: "mysql_tls_write",
};

/// The probe programs, at entry and at return of `dispatch_command()`.
pub const PROGRAMS: [(&str, bool); 2] =
    [("mysql_dispatch", false), ("mysql_dispatch_return", true)];

/// Attaches the probes at entry and return of `dispatch_command()`, at `offset` in `path`, in
/// process `pid` alone (`None`: every process); dropping what it returns detaches them.
pub fn attach_dispatch(
    probes: &mut Probes,
    path: &Path,
    offset: u64,
    pid: Option<u32>,
) -> Result<Vec<OwnedFd>> {
    let mut attached = Vec::new();
    for (program, retprobe) in PROGRAMS {
        let uprobe = perf::Uprobe {
            path: path.to_path_buf(),
            offset,
            semaphore: 0,
            retprobe,
        };
        attached.extend(probes.attach_uprobe_in(program, &uprobe, 0, pid)?);
    }
    Ok(attached)
}

pub struct UnreadableConnections {
    via: Via,
    /// Servers whose TLS connections OpenSSL's probes read.
    tls: OpensslProbes,
    /// Where `dispatch_command()` is in each server binary, by file.
    sites: Vec<((u64, u64), u64)>,
    /// Probes attached in one server alone, by pid, and when they were in place
    /// (CLOCK_MONOTONIC): dropping them detaches them.
    probed_servers: HashMap<u32, (u64, Vec<OwnedFd>)>,
    /// Records of the batch, acted on after it.
    pending: Vec<Unreadable>,
    /// Since tracer started: connections read through OpenSSL, those read by probes, those
    /// whose server's probes came after them, and those unseen.
    through_tls: u64,
    probed: u64,
    late: u64,
    unseen: u64,
}

impl UnreadableConnections {
    /// `sites`: the binaries traced, each with where its `dispatch_command()` is; `tls`: the
    /// servers' OpenSSL probes.
    pub fn new(
        via: Via,
        sites: impl IntoIterator<Item = (PathBuf, u64)>,
        tls: OpensslProbes,
    ) -> Self {
        let sites = sites
            .into_iter()
            .filter_map(|(path, offset)| Some((processes::file_id(&path)?, offset)))
            .collect();
        Self {
            via,
            tls,
            sites,
            probed_servers: HashMap::new(),
            pending: Vec::new(),
            through_tls: 0,
            probed: 0,
            late: 0,
            unseen: 0,
        }
    }

    /// Server `pid`, started since tracer, runs `exe` with `dispatch_command()` at `offset`:
    /// its connections the socket cannot read are taken as those of the servers at start.
    pub fn add_server(&mut self, probes: &mut Probes, pid: u32, exe: &Path, offset: u64) {
        if let Some(file) = processes::file_id(exe)
            && !self.sites.iter().any(|(site, _)| *site == file)
        {
            self.sites.push((file, offset));
        }
        if self.via == Via::Auto {
            self.tls.attach_starting(probes, pid, false);
        }
    }

    pub fn record(&mut self, connection: Unreadable) {
        self.pending.push(connection);
    }

    /// Takes the batch's unreadable connections: through probes in their server, or counted
    /// unseen.
    pub fn after_batch(&mut self, probes: &mut Probes) {
        self.tls.retry(probes);
        for connection in std::mem::take(&mut self.pending) {
            let server = (connection.pid != 0)
                .then_some(connection.pid)
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
            match connection.why {
                unreadable::ENCRYPTED if server.is_some_and(|pid| self.tls.covers(pid)) => {
                    self.through_tls += 1;
                    continue;
                }
                // OpenSSL's probes hand over what only the server's can read.
                unreadable::COMPRESSED_IN_TLS => {
                    self.through_tls = self.through_tls.saturating_sub(1)
                }
                _ => {}
            }
            // A connection seen before its server's probes were in place may have run
            // commands unseen.
            let taken = match (self.via, server) {
                (Via::Auto, Some(pid)) => match self.probed_servers.get(&pid) {
                    Some((since, _)) => Ok(connection.at_ns < *since),
                    None => self.probe_server(probes, pid).map(|()| true),
                },
                (Via::Auto, None) => Err(anyhow::anyhow!("its server exited")),
                _ => Err(anyhow::anyhow!(
                    "--via socket cannot read its commands (the default --via auto reads such \
                     connections)"
                )),
            };
            match taken {
                Ok(late) => {
                    self.probed += 1;
                    self.late += late as u64;
                }
                Err(err) => {
                    let why = match connection.why {
                        unreadable::ENCRYPTED => "encrypted",
                        _ => "compressed",
                    };
                    let message = format_args!(
                        "a connection of MySQL thread {} is {why}: {err:#}",
                        connection.tid
                    );
                    match self.unseen {
                        0 => eprintln!("tracer: {message}"),
                        _ => probes.say(message),
                    }
                    self.unseen += 1;
                }
            }
        }
    }

    /// Attaches `dispatch_command()`'s probes in server `pid` alone.
    fn probe_server(&mut self, probes: &mut Probes, pid: u32) -> Result<()> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let file = processes::file_id(&exe);
        let Some(&(_, offset)) = self.sites.iter().find(|(site, _)| Some(*site) == file) else {
            bail!("process {pid} runs no binary tracer read");
        };
        let attached = attach_dispatch(probes, &exe, offset, Some(pid))?;
        probes.say(format_args!(
            "server {pid} has an encrypted or compressed connection: dispatch_command() probes \
             in it alone"
        ));
        self.probed_servers
            .insert(pid, (output::monotonic_ns(), attached));
        Ok(())
    }

    /// Lets the probes of servers that exited go.
    pub fn forget_exited(&mut self) {
        self.tls.forget_exited();
        self.probed_servers
            .retain(|pid, _| processes::exe(*pid).is_some());
    }

    /// The summary's lines about them (none with probes everywhere).
    pub fn asides(&self) -> Vec<Aside> {
        if self.via == Via::Probes {
            return Vec::new();
        }
        let (probed, late, unseen) = (self.probed, self.late, self.unseen);
        let mut asides = vec![Aside {
            field: "unreadable_connections",
            count: unseen,
            text: format!("unseen: the commands of {unseen} encrypted or compressed connections"),
        }];
        if self.via == Via::Auto {
            let through_tls = self.through_tls;
            asides.splice(
                0..0,
                [
                    Aside {
                        field: "tls_connections",
                        count: through_tls,
                        text: format!("{through_tls} encrypted through OpenSSL's probes"),
                    },
                    Aside {
                        field: "probed_connections",
                        count: probed,
                        text: format!("{probed} encrypted or compressed connections through probes"),
                    },
                    Aside {
                        field: "late_connections",
                        count: late,
                        text: format!(
                            "{late} of them before their server's probes (commands before may be missing)"
                        ),
                    },
                ],
            );
        }
        asides
    }
}
