//! Starting a tool: check the user's input and privileges, read the kernel, load and attach.

use anyhow::Result;

use crate::{
    cgroup,
    loader::{self, Kernel, Probes, Settings, Tracepoint},
    options::TraceOptions,
};

/// A tool's attached kernel programs and what it needs to make sense of their records.
pub struct Session {
    pub kernel: Kernel,
    pub probes: Probes,
    /// Paths for the cgroup ids in records.
    pub cgroups: cgroup::Names,
}

impl Session {
    pub fn start(options: &TraceOptions, tracepoints: &[Tracepoint]) -> Result<Self> {
        let scope = options.scope()?;
        loader::require_privileges()?;
        let kernel = Kernel::inspect()?;
        let settings = Settings {
            filter: scope.filter,
            cgroup_layout: scope.hierarchy.layout(&kernel.btf)?,
        };
        let mut probes = Probes::load(&settings, options.verbose)?;
        probes.attach_tracepoints(&kernel, tracepoints, options.attach)?;
        Ok(Self {
            kernel,
            probes,
            cgroups: cgroup::Names::new(&scope.hierarchy),
        })
    }
}
