//! kswapd against the watermarks. An allocation that finds a zone's free pages under its `low`
//! watermark wakes the node's kswapd, which reclaims until free memory is back over `high`; one
//! that finds them under `min` in every zone it may use reclaims itself (direct reclaim). So a
//! task stalled in direct reclaim while kswapd was awake means kswapd did not keep ahead, and
//! the gap between `min` and `low` (`vm.min_free_kbytes`, `vm.watermark_scale_factor`) is what
//! gives it room to.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::maps::Array;
use serde::Serialize;
use tracer_common::direct_reclaim::{KswapdNode, KswapdWoken, MAX_NODES, Throttled};

use crate::{histogram::human_ns, loader::Tracepoint, output, watermarks::Watermarks};

/// kswapd's wake-ups, sleeps and reclaim passes.
pub const TRACEPOINTS: &[Tracepoint] = &[
    classic(
        "mm_vmscan_wakeup_kswapd",
        "kswapd_woken",
        &[("nid", 8, 4), ("zid", 12, 4), ("order", 16, 4)],
    ),
    classic("mm_vmscan_kswapd_wake", "kswapd_wake", &[("nid", 8, 4)]),
    classic("mm_vmscan_kswapd_sleep", "kswapd_sleep", &[("nid", 8, 4)]),
    classic(
        "mm_vmscan_lru_shrink_inactive",
        "kswapd_shrink",
        &[
            ("nid", 8, 4),
            ("nr_scanned", 16, 8),
            ("nr_reclaimed", 24, 8),
        ],
    ),
];

/// Reclaim throttling, from Linux 5.16.
pub const THROTTLING: &[Tracepoint] = &[classic(
    "mm_vmscan_throttled",
    "reclaim_throttled",
    &[
        ("nid", 8, 4),
        ("usec_timeout", 12, 4),
        ("usec_delayed", 16, 4),
        ("reason", 20, 4),
    ],
)];

const fn classic(
    name: &'static str,
    program: &'static str,
    fields: &'static [(&'static str, usize, usize)],
) -> Tracepoint {
    Tracepoint {
        category: "vmscan",
        name,
        program,
        args: None,
        fields,
    }
}

/// `enum vmscan_throttle_state`, whose bit the tracepoint's `reason` sets.
const THROTTLE_REASONS: [&str; 4] = ["writeback", "isolated", "noprogress", "congested"];

/// The nodes this machine may have (`/sys/devices/system/node/possible`, e.g. `0-3`), as many
/// as the kernel side follows.
pub fn node_count() -> u32 {
    let possible = std::fs::read_to_string("/sys/devices/system/node/possible").unwrap_or_default();
    let last = possible
        .trim()
        .rsplit(['-', ','])
        .next()
        .and_then(|last| last.parse::<u32>().ok())
        .unwrap_or(0);
    (last + 1).min(MAX_NODES)
}

/// Reads the kernel's per-node counters and keeps what they were, for the next window's share.
pub struct Nodes {
    seen: Vec<KswapdNode>,
}

impl Nodes {
    pub fn new() -> Self {
        let count = node_count() as usize;
        Self {
            seen: vec![KswapdNode::default(); count],
        }
    }

    /// Adds to `totals` what each node's kswapd did since the last read.
    pub fn collect(&mut self, map: &mut aya::maps::Map, totals: &mut Totals) -> Result<()> {
        let nodes: Array<_, KswapdNode> = Array::try_from(map)?;
        let now = output::monotonic_ns();
        for (nid, seen) in (0u32..).zip(&mut self.seen) {
            let node = nodes.get(&nid, 0).context("read KSWAPD_NODES")?;
            totals.wakes += node.wakes - seen.wakes;
            totals.scanned += node.scanned - seen.scanned;
            totals.reclaimed += node.reclaimed - seen.reclaimed;
            let awake = |node: &KswapdNode| {
                let running = if node.woke_ns != 0 {
                    now.saturating_sub(node.woke_ns)
                } else {
                    0
                };
                node.awake_ns + running
            };
            totals.awake_ns += awake(&node).saturating_sub(awake(seen));
            // What counted as running is in this window now.
            *seen = KswapdNode {
                awake_ns: awake(&node),
                woke_ns: 0,
                ..node
            };
        }
        Ok(())
    }
}

/// kswapd and throttling over a window.
#[derive(Default)]
pub struct Totals {
    pub wakes: u64,
    pub awake_ns: u64,
    pub scanned: u64,
    pub reclaimed: u64,
    /// Wake-up requests by (pid, comm) of the allocating task, and by allocation order.
    pub woken_by: BTreeMap<(u32, String), u64>,
    pub woken_for_order: BTreeMap<i32, u64>,
    pub throttled: ThrottleTotals,
}

#[derive(Default, Serialize)]
pub struct ThrottleTotals {
    pub waits: u64,
    pub delayed_ms: f64,
    /// Waits by reason.
    pub reasons: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn woken(&mut self, woken: &KswapdWoken) {
        let comm = output::comm(&woken.task.comm);
        *self.woken_by.entry((woken.task.pid, comm)).or_default() += 1;
        *self.woken_for_order.entry(woken.order).or_default() += 1;
    }

    pub fn throttled(&mut self, throttled: &Throttled) {
        let throttle = &mut self.throttled;
        throttle.waits += 1;
        throttle.delayed_ms += f64::from(throttled.usec_delayed.max(0)) / 1000.0;
        for (bit, reason) in THROTTLE_REASONS.iter().enumerate() {
            if throttled.reason & (1 << bit) != 0 {
                *throttle.reasons.entry(reason).or_default() += 1;
            }
        }
    }

    /// Whether anything happened worth a line.
    pub fn any(&self) -> bool {
        self.wakes > 0 || !self.woken_by.is_empty() || self.throttled.waits > 0
    }

    /// kswapd's line, and throttling's where the kernel shows it.
    pub fn render(&self, throttling: bool, out: &mut String) {
        let askers = super::compaction::busiest(&self.woken_by);
        let woken_by = if askers.is_empty() {
            String::new()
        } else {
            let orders: Vec<String> = self
                .woken_for_order
                .iter()
                .map(|(order, count)| format!("order {order}: {count}"))
                .collect();
            format!("; woken by {askers} ({})", orders.join(", "))
        };
        out.push_str(&format!(
            "kswapd (background): ran {} times, awake {}, scanned {} pages, reclaimed {}{woken_by}\n",
            self.wakes,
            human_ns(self.awake_ns),
            self.scanned,
            self.reclaimed,
        ));
        if throttling {
            let throttle = &self.throttled;
            let reasons: Vec<String> = throttle
                .reasons
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            out.push_str(&format!(
                "Reclaim throttled: {} waits, {:.1} ms{}\n",
                throttle.waits,
                throttle.delayed_ms,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", reasons.join(", "))
                }
            ));
        }
    }

    pub fn json(&self, throttling: bool) -> KswapdJson<'_> {
        KswapdJson {
            wakes: self.wakes,
            awake_ms: self.awake_ns as f64 / 1e6,
            pages_scanned: self.scanned,
            pages_reclaimed: self.reclaimed,
            woken_by: self
                .woken_by
                .iter()
                .map(|((pid, comm), count)| WakerJson {
                    pid: *pid,
                    comm: comm.clone(),
                    count: *count,
                })
                .collect(),
            woken_for_order: self
                .woken_for_order
                .iter()
                .map(|(order, count)| (order.to_string(), *count))
                .collect(),
            throttled: throttling.then_some(&self.throttled),
        }
    }
}

#[derive(Serialize)]
pub struct KswapdJson<'a> {
    wakes: u64,
    awake_ms: f64,
    pages_scanned: u64,
    pages_reclaimed: u64,
    woken_by: Vec<WakerJson>,
    woken_for_order: BTreeMap<String, u64>,
    /// Absent where the kernel cannot show throttling (before 5.16).
    #[serde(skip_serializing_if = "Option::is_none")]
    throttled: Option<&'a ThrottleTotals>,
}

#[derive(Serialize)]
struct WakerJson {
    pid: u32,
    comm: String,
    count: u64,
}

/// What the numbers say about the watermarks, when they say something: global direct reclaim
/// while kswapd was awake means kswapd could not keep free memory above `min`.
pub fn verdict(stalls: u64, while_awake: u64, watermarks: &Watermarks) -> Option<String> {
    if stalls == 0 || while_awake * 2 < stalls {
        return None;
    }
    let gap: u64 = watermarks
        .zones
        .iter()
        .map(|zone| zone.low.saturating_sub(zone.min))
        .sum();
    let setting = |value: Option<u64>| value.map_or("?".to_owned(), |v| v.to_string());
    Some(format!(
        "free memory fell under the min watermark and global direct reclaim began {stalls} \
         times, {while_awake} of them while kswapd was awake: kswapd could not keep ahead (it \
         wakes {gap} pages above min); raise vm.min_free_kbytes ({}) or \
         vm.watermark_scale_factor ({}) so that it starts earlier",
        setting(watermarks.min_free_kbytes),
        setting(watermarks.watermark_scale_factor),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermarks::Zone;

    #[test]
    fn the_verdict_speaks_only_when_kswapd_was_awake_for_most_stalls() {
        let watermarks = Watermarks {
            min_free_kbytes: Some(67584),
            watermark_scale_factor: Some(10),
            zones: vec![zone(10, 13), zone(2116, 2888), zone(14769, 20163)],
            ..Watermarks::default()
        };
        assert_eq!(verdict(0, 0, &watermarks), None);
        assert_eq!(verdict(10, 4, &watermarks), None);
        let said = verdict(10, 9, &watermarks).unwrap();
        assert!(said.contains("began 10 times, 9 of them"), "{said}");
        assert!(said.contains("6169 pages above"), "{said}");
        assert!(said.contains("vm.min_free_kbytes (67584)"), "{said}");
    }

    fn zone(min: u64, low: u64) -> Zone {
        Zone {
            min,
            low,
            ..Zone::default()
        }
    }
}
