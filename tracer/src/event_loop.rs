//! The loop every tool runs: drain the ring buffer on tokio, print a summary per interval, stop on
//! the deadline, the count, Ctrl-C or SIGTERM, and report records the kernel could not deliver.

use std::{
    io::Write as _,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Interval, MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    loader::{KernelLogReader, Probes},
    metrics::Metrics,
    options::Timing,
    output::Output,
};

/// A tool's userspace half.
pub trait Tool {
    /// Says tracing has begun (tests and scripts wait for the "Tracing" line on stderr) and
    /// prints column headers; called once signals are handled.
    fn start(&mut self, out: &mut Output) -> Result<()>;
    /// Handles one ring-buffer record.
    fn record(&mut self, data: &[u8], out: &mut Output) -> Result<()>;
    /// Prints the summary of the window that just ended and starts a new one.
    fn summary(&mut self, window: &Window, out: &mut Output) -> Result<()>;
    /// Runs after each batch of records, with the probes at hand (to update maps).
    fn after_batch(&mut self, _probes: &mut Probes) -> Result<()> {
        Ok(())
    }
    /// Reads what the kernel side aggregated in maps, right before each summary.
    fn collect(&mut self, _probes: &mut Probes) -> Result<()> {
        Ok(())
    }
    /// `tracer serve`: registers the tool's metrics, which it keeps up to date from then on.
    fn register_metrics(&mut self, _metrics: &mut Metrics) {}
}

/// A ring-buffer record as the kernel side wrote it.
pub fn read_record<T: aya::Pod>(data: &[u8]) -> Result<T> {
    if data.len() < size_of::<T>() {
        bail!(
            "short record: {} bytes, expected {}",
            data.len(),
            size_of::<T>()
        );
    }
    // SAFETY: `T` is plain data and the slice is long enough; the ring buffer does not promise
    // alignment beyond 8 bytes, hence the unaligned read.
    Ok(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// The stretch of time a summary covers.
pub struct Window {
    /// When it ended.
    pub end: SystemTime,
    pub length: Duration,
    /// Records the kernel side dropped in it because the ring buffer was full.
    pub lost: u64,
    /// Whether tracing ends with it: what is still open will not close.
    pub last: bool,
}

/// Records handled per wake-up before timers and signals get a look in.
const BATCH: usize = 4096;
/// How often the ring buffer is drained without a wake-up: hot paths submit records without
/// waking us (a wake-up per record would cost more than the record). Each wake-up has a cost of
/// its own (tens of microseconds in a VM): `tracer pg` at 3000 queries/s spent 2.8 us per query
/// draining every 10 ms. Its ring buffer holds a second of 40k queries/s.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Runs `tool` until the timing says stop or a signal arrives; the final summary is printed
/// either way. With `event_mode`, lost records are also reported as they happen.
pub fn run(
    probes: &mut Probes,
    tool: &mut dyn Tool,
    timing: Timing,
    event_mode: bool,
    out: &mut Output,
) -> Result<()> {
    run_beside(
        probes,
        tool,
        timing,
        event_mode,
        out,
        std::future::pending(),
    )
}

/// [`run`], with `beside` running on the same thread (it may spawn local tasks); its error
/// stops the loop.
pub fn run_beside(
    probes: &mut Probes,
    tool: &mut dyn Tool,
    timing: Timing,
    event_mode: bool,
    out: &mut Output,
    beside: impl Future<Output = Result<()>>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(
        &runtime,
        drive(probes, tool, timing, event_mode, out, beside),
    )
}

async fn drive(
    probes: &mut Probes,
    tool: &mut dyn Tool,
    timing: Timing,
    event_mode: bool,
    out: &mut Output,
    beside: impl Future<Output = Result<()>>,
) -> Result<()> {
    let mut beside = std::pin::pin!(beside);
    // SAFETY: the ring buffer owns its map fd and keeps it open for as long as it lives.
    let mut events =
        unsafe { AsyncFd::register_with_interest(probes.take_events()?, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
    let mut kernel_log = match probes.take_kernel_log() {
        // SAFETY: the reader owns its ring buffer's fd and keeps it open while it lives.
        Some(reader) => Some(
            unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
                .map_err(|err| err.into_parts().1)?,
        ),
        None => None,
    };
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tool.start(out)?;
    out.flush()?;
    let start = tokio::time::Instant::now();
    let deadline = timing.duration.map(|duration| start + duration);
    let mut intervals = timing.interval.map(|every| {
        let mut ticks = interval_at(start + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks
    });
    let mut lost_checks = tokio::time::interval(Duration::from_secs(1));
    let mut drains = tokio::time::interval(DRAIN_EVERY);
    drains.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut window_start = Instant::now();
    let mut lost_before = 0;
    let mut lost_reported = 0;
    let mut summaries = 0;

    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                // Drained below; readiness comes back with the next wake-up.
                guard?.clear_ready();
                drain_yielding(&mut events, tool, probes, out).await?;
            }
            _ = drains.tick() => {
                drain_yielding(&mut events, tool, probes, out).await?;
            }
            _ = tick(&mut intervals) => {
                drain_yielding(&mut events, tool, probes, out).await?;
                tool.collect(probes)?;
                let lost = probes.lost()?;
                tool.summary(&window(window_start, lost - lost_before, false), out)?;
                out.flush()?;
                (window_start, lost_before) = (Instant::now(), lost);
                summaries += 1;
                if timing.count.is_some_and(|count| summaries >= count) {
                    return Ok(());
                }
            }
            _ = lost_checks.tick(), if event_mode => {
                let lost = probes.lost()?;
                if lost > lost_reported {
                    report_lost(lost - lost_reported, out)?;
                    lost_reported = lost;
                }
            }
            guard = readable(&mut kernel_log) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            result = &mut beside => {
                result?;
                break;
            }
            _ = until(deadline) => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drain(&mut events, tool, out)?;
    tool.collect(probes)?;
    let lost = probes.lost()?;
    if event_mode && lost > lost_reported {
        report_lost(lost - lost_reported, out)?;
    }
    tool.summary(&window(window_start, lost - lost_before, true), out)?;
    out.flush()?;
    Ok(())
}

/// Drains the ring buffer a batch at a time, letting the tasks beside (serve's HTTP) run
/// between batches: under a flood the kernel refills it as fast as it is read.
async fn drain_yielding(
    events: &mut AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tool: &mut dyn Tool,
    probes: &mut Probes,
    out: &mut Output,
) -> Result<()> {
    loop {
        let ring = events.get_mut();
        let mut handled = 0;
        while handled < BATCH {
            let Some(record) = ring.next() else { break };
            tool.record(&record, out)?;
            handled += 1;
        }
        tool.after_batch(probes)?;
        out.flush()?;
        if handled < BATCH {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
}

fn drain(
    events: &mut AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tool: &mut dyn Tool,
    out: &mut Output,
) -> Result<()> {
    while let Some(record) = events.get_mut().next() {
        tool.record(&record, out)?;
    }
    Ok(())
}

fn window(start: Instant, lost: u64, last: bool) -> Window {
    Window {
        end: SystemTime::now(),
        length: start.elapsed(),
        lost,
        last,
    }
}

/// The kernel side's diagnostics, ready to read; never without -v.
async fn readable(
    reader: &mut Option<AsyncFd<KernelLogReader>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, KernelLogReader>> {
    match reader {
        Some(reader) => reader.readable_mut().await,
        None => std::future::pending().await,
    }
}

async fn tick(intervals: &mut Option<Interval>) {
    match intervals {
        Some(intervals) => {
            intervals.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[derive(Serialize)]
struct LostRecord {
    r#type: &'static str,
    count: u64,
}

fn report_lost(count: u64, out: &mut Output) -> Result<()> {
    if out.json {
        out.json_line(&LostRecord {
            r#type: "lost",
            count,
        })?;
    } else {
        eprintln!("tracer: lost {count} events: the ring buffer was full");
    }
    Ok(())
}
