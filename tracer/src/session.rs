//! Starting a tool: check the user's input and privileges, read the kernel, load and attach.

use anyhow::Result;

use crate::{
    cgroup,
    loader::{self, Kernel, Loading, Probes, Setting, Settings, Tracepoint},
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
    /// Checks, loads and attaches. `settings` computes the tool's own load-time settings from
    /// the kernel.
    pub fn start(
        options: &TraceOptions,
        tracepoints: &[Tracepoint],
        settings: impl FnOnce(&Kernel) -> Result<Vec<Setting>>,
    ) -> Result<Self> {
        let scope = options.scope()?;
        loader::require_privileges()?;
        // The object loads in a thread while this one reads the kernel: see Loading.
        let loading = Loading::begin(options.verbose);
        let kernel = Kernel::inspect()?;
        let settings = Settings {
            filter: scope.filter,
            task_layout: scope.hierarchy.task_layout(&kernel.btf)?,
            tool: settings(&kernel)?,
        };
        let loading = loading.load(settings);
        let index = loader::tracepoint_index(&kernel, tracepoints, options.attach)?;
        let mut probes = loading.finish()?;
        probes.attach_tracepoints(&kernel, tracepoints, options.attach, index.as_ref())?;
        Ok(Self {
            kernel,
            probes,
            cgroups: cgroup::Names::new(&scope.hierarchy),
        })
    }
}
