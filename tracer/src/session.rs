//! Starting tools: check the user's input and privileges, read the kernel, load the kernel
//! programs (a command with an object of its own loads that one; otherwise the object that
//! holds every tool's), attach, and hand each tool its userspace half.
//!
//! A command starts one tool and fails if it cannot attach; `tracer serve` starts several
//! through the same [`Plan`]s and goes on without those that cannot.

use anyhow::{Context as _, Result};

use crate::{
    cgroup::Hierarchy,
    event_loop::{self, Tool},
    loader::{self, AttachMode, Kernel, Loading, Probes, Setting, Settings, Tracepoint},
    options::TraceOptions,
    output::Output,
};

/// A tool before anything is loaded: what it attaches to and sets in the kernel programs, and
/// how it becomes a running [`Tool`]. Each tool module has one, which its command and `tracer
/// serve` both start.
pub trait Plan {
    /// The tool's name, as its command spells it.
    fn name(&self) -> &'static str;
    /// Which tool its ring-buffer records name (`tracer_common::record::tool`).
    fn records(&self) -> u32;
    fn tracepoints(&self) -> Vec<Tracepoint>;
    /// The tool's programs alone (`tracer-ebpf/src/objects/`), loaded when it runs by itself:
    /// starting up parses and creates nothing else. `None`: it needs the whole object.
    fn object(&self) -> Option<&'static [u8]> {
        None
    }
    /// The tool's own load-time settings, computed from the kernel.
    fn settings(&self, _kernel: &Kernel) -> Result<Vec<Setting>> {
        Ok(Vec::new())
    }
    /// Once loaded, before anything is attached: fills the maps its programs read from their
    /// first run (the servers to trace).
    fn prepare(&self, _probes: &mut Probes) -> Result<()> {
        Ok(())
    }
    /// Once its tracepoints are attached: attaches anything else and builds the userspace half.
    fn start(self: Box<Self>, context: &mut Context) -> Result<Box<dyn Tool>>;
}

/// What a tool gets to start with.
pub struct Context<'a> {
    pub kernel: &'a Kernel,
    pub probes: &'a mut Probes,
    /// The cgroup hierarchy task records are attributed in.
    pub hierarchy: &'a Hierarchy,
}

impl Context<'_> {
    /// Attaches a part a tool can do without where the kernel has it; says so where not.
    pub fn attach_or_say(&mut self, tracepoints: &[Tracepoint], what: &str) -> bool {
        let attached =
            self.probes
                .attach_tracepoints(self.kernel, tracepoints, AttachMode::Classic, None);
        if let Err(error) = &attached {
            eprintln!("tracer: {what} not traced: {error:#}");
            self.probes.detach(tracepoints);
        }
        attached.is_ok()
    }
}

/// The loaded object.
pub struct Session {
    pub probes: Probes,
}

/// Tools that could not start, by name, and why.
pub type Failed = Vec<(&'static str, anyhow::Error)>;

/// Runs one tool as a command: it starts or tracer fails, and runs until the options say stop.
pub fn run(options: &TraceOptions, plan: Box<dyn Plan>, event_mode: bool) -> Result<()> {
    let (mut session, mut tools, _) = Session::start(options, vec![plan], true)?;
    let mut tool = tools.pop().context("no tool started")?.tool;
    let mut out = Output::stdout(options.json);
    event_loop::run(
        &mut session.probes,
        tool.as_mut(),
        options.timing(),
        event_mode,
        &mut out,
    )
}

/// A tool that started.
pub struct Started {
    pub name: &'static str,
    /// Which tool its records name.
    pub records: u32,
    pub tool: Box<dyn Tool>,
}

impl Session {
    /// Checks, loads and attaches every plan. With `strict`, the first tool that cannot start
    /// fails the whole; without, it is reported among the failed and the others go on.
    pub fn start(
        options: &TraceOptions,
        plans: Vec<Box<dyn Plan>>,
        strict: bool,
    ) -> Result<(Self, Vec<Started>, Failed)> {
        let scope = options.scope()?;
        loader::require_privileges()?;
        // The object loads in a thread while this one reads the kernel: see Loading.
        let loading = Loading::begin(options.verbose);
        let kernel = Kernel::inspect()?;
        let mut failed = Vec::new();
        let mut ready = Vec::new();
        let mut tool_settings = Vec::new();
        for plan in plans {
            match plan.settings(&kernel) {
                Ok(settings) => {
                    tool_settings.extend(settings);
                    ready.push(plan);
                }
                Err(error) if strict => return Err(error),
                Err(error) => failed.push((plan.name(), error)),
            }
        }
        let mut task_layout = scope.hierarchy.task_layout(&kernel.btf)?;
        crate::pidns::apply(&mut task_layout, &kernel.btf)?;
        let object = match ready.as_slice() {
            [only] => only.object(),
            _ => None,
        };
        let settings = Settings {
            object: object.unwrap_or(loader::ALL_TOOLS),
            filter: scope.filter,
            task_layout,
            tool: loader::merge_settings(tool_settings),
        };
        let loading = loading.load(settings);
        let tracepoints: Vec<Tracepoint> =
            ready.iter().flat_map(|plan| plan.tracepoints()).collect();
        let index = loader::tracepoint_index(&kernel, &tracepoints, options.attach)?;
        let mut probes = loading.finish()?;
        let mut started = Vec::new();
        // Programs tools share (pg's and mysql's reclaim charging) are attached once.
        let mut attached: Vec<&'static str> = Vec::new();
        for plan in ready {
            let (name, records) = (plan.name(), plan.records());
            let plan_tracepoints: Vec<Tracepoint> = plan
                .tracepoints()
                .into_iter()
                .filter(|tp| !attached.contains(&tp.program))
                .collect();
            let result = plan
                .prepare(&mut probes)
                .and_then(|()| {
                    probes.attach_tracepoints(
                        &kernel,
                        &plan_tracepoints,
                        options.attach,
                        index.as_ref(),
                    )
                })
                .and_then(|()| {
                    plan.start(&mut Context {
                        kernel: &kernel,
                        probes: &mut probes,
                        hierarchy: &scope.hierarchy,
                    })
                });
            match result {
                Ok(tool) => {
                    attached.extend(plan_tracepoints.iter().map(|tp| tp.program));
                    started.push(Started {
                        name,
                        records,
                        tool,
                    });
                }
                Err(error) if strict => return Err(error),
                Err(error) => {
                    probes.detach(&plan_tracepoints);
                    failed.push((name, error));
                }
            }
        }
        Ok((Self { probes }, started, failed))
    }
}
