//! Encrypted connections read where OpenSSL hands over their plaintext: uprobes at the entry
//! and return of `SSL_read()` and the entry of `SSL_write()`, in the libssl a server maps.
//! Only threads that speak TLS call them, so plaintext connections take no trap; and being in
//! place before a connection begins, they see its first query.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{loader::Probes, perf, processes, usdt::Binary};

/// A tool's programs, at `SSL_read()`'s entry and return and at `SSL_write()`'s entry.
pub struct Programs {
    pub read: &'static str,
    pub read_return: &'static str,
    pub write: &'static str,
}

/// The probes of one tool, by server.
pub struct OpensslProbes {
    programs: Programs,
    /// Servers whose TLS connections the probes read, each with what it alone holds attached
    /// (dropped: detached).
    servers: HashMap<u32, Vec<OwnedFd>>,
    /// libssl files probed in every process that maps them.
    everywhere: Vec<(u64, u64)>,
    /// Servers just started, whose loader may not have mapped their libssl yet: since when.
    starting: Vec<(u32, bool, Instant)>,
}

/// How long a server just started may take to map its libssl.
const STARTING: Duration = Duration::from_secs(5);

impl OpensslProbes {
    pub fn new(programs: Programs) -> Self {
        Self {
            programs,
            servers: HashMap::new(),
            everywhere: Vec::new(),
            starting: Vec::new(),
        }
    }

    /// Loads the programs, for attaching not to wait for the verifier.
    pub fn load(&self, probes: &mut Probes) -> Result<()> {
        for program in [
            self.programs.read,
            self.programs.read_return,
            self.programs.write,
        ] {
            probes.load_uprobe(program)?;
        }
        Ok(())
    }

    /// Probes the libssl server `pid` maps: in `pid` alone, or in every process that maps it
    /// (a server whose connections are served by processes it forks).
    pub fn attach(&mut self, probes: &mut Probes, pid: u32, every_process: bool) -> Result<()> {
        if self.servers.contains_key(&pid) {
            return Ok(());
        }
        let library = libssl_of(pid)?;
        let file = processes::file_id(&library).context("cannot read its libssl")?;
        if every_process && self.everywhere.contains(&file) {
            self.servers.insert(pid, Vec::new());
            return Ok(());
        }
        let binary = Binary::open(&library)?;
        let only = (!every_process).then_some(pid);
        let mut attached = Vec::new();
        for (function, program, retprobe) in [
            ("SSL_read", self.programs.read, false),
            ("SSL_read", self.programs.read_return, true),
            ("SSL_write", self.programs.write, false),
        ] {
            let Some((_, offset)) = binary.symbol(function) else {
                bail!("its libssl has no {function}()");
            };
            // Past an endbr64 (sid's libssl has one), which both would single-step: the return
            // address is where a return probe expects it there too.
            let uprobe = perf::Uprobe {
                path: library.clone(),
                offset: binary.entry_probe_offset(offset),
                semaphore: 0,
                retprobe,
            };
            attached.extend(probes.attach_uprobe_in(program, &uprobe, 0, only)?);
        }
        if every_process {
            self.everywhere.push(file);
            probes.keep(std::mem::take(&mut attached));
        }
        self.servers.insert(pid, attached);
        Ok(())
    }

    /// [`Self::attach`], saying what came of it: `-v` names the server probed, and a server
    /// that cannot be is named on stderr with why and what reads it instead.
    pub fn probe(&mut self, probes: &mut Probes, pid: u32, every_process: bool) {
        match self.attach(probes, pid, every_process) {
            Ok(()) => say_attached(probes, pid),
            Err(err) => say_unread(pid, &err),
        }
    }

    /// The same for a server that has just exec'd, whose loader may still be mapping its
    /// libraries: tried now and at each [`Self::retry`] until it maps its libssl.
    pub fn attach_starting(&mut self, probes: &mut Probes, pid: u32, every_process: bool) {
        self.starting.push((pid, every_process, Instant::now()));
        self.retry(probes);
    }

    /// Tries the servers still starting again; says which could not be probed, and why.
    pub fn retry(&mut self, probes: &mut Probes) {
        let starting = std::mem::take(&mut self.starting);
        for (pid, every_process, since) in starting {
            match self.attach(probes, pid, every_process) {
                Ok(()) => say_attached(probes, pid),
                // Gone: nothing left to say of it.
                Err(_) if processes::exe(pid).is_none() => {}
                Err(_) if since.elapsed() < STARTING => {
                    self.starting.push((pid, every_process, since));
                }
                Err(err) => say_unread(pid, &err),
            }
        }
    }

    /// Whether the probes read server `pid`'s encrypted connections.
    pub fn covers(&self, pid: u32) -> bool {
        self.servers.contains_key(&pid)
    }

    /// Lets the probes of servers that exited go.
    pub fn forget_exited(&mut self) {
        self.servers.retain(|&pid, _| processes::exe(pid).is_some());
    }
}

/// What -v says of a server probed.
fn say_attached(probes: &Probes, pid: u32) {
    probes.say(format_args!(
        "server {pid}: encrypted connections through uprobes on SSL_read() and SSL_write()"
    ));
}

/// What a server whose encrypted connections the probes cannot read is told.
fn say_unread(pid: u32, err: &anyhow::Error) {
    eprintln!(
        "tracer: server {pid}: {err:#}: its encrypted connections go to probes in the server, \
         which may come after their first queries"
    );
}

/// The libssl process `pid` maps, as a path that reaches it from here: its `map_files` link
/// (a chroot's or a container's file, whatever path the process knows it by), or where that
/// cannot be opened (without CAP_SYS_ADMIN), the path it shows through the process's root.
fn libssl_of(pid: u32) -> Result<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("cannot read process {pid}'s mappings"))?;
    let (range, path) = maps
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let path = Path::new(fields.nth(4)?);
            let name = path.file_name()?.to_str()?;
            name.starts_with("libssl.so").then_some((range, path))
        })
        .context("it maps no libssl (OpenSSL linked in statically, or another TLS library)")?;
    let link = PathBuf::from(format!("/proc/{pid}/map_files/{range}"));
    if std::fs::File::open(&link).is_ok() {
        return Ok(link);
    }
    let inside = path.strip_prefix("/").unwrap_or(path);
    Ok(Path::new(&format!("/proc/{pid}/root")).join(inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_libssl_a_process_maps() {
        let err = libssl_of(std::process::id()).unwrap_err();
        assert!(format!("{err:#}").contains("maps no libssl"), "{err:#}");
        // Python's ssl module maps one.
        let mut python = std::process::Command::new("python3")
            .args(["-c", "import ssl, sys; print(flush=True); sys.stdin.read()"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(python.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        let binary = libssl_of(python.id()).and_then(|library| Binary::open(&library));
        drop(python.stdin.take());
        python.wait().unwrap();
        let binary = binary.unwrap();
        assert!(binary.symbol("SSL_read").is_some());
        assert!(binary.symbol("SSL_write").is_some());
    }
}
