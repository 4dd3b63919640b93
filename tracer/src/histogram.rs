//! Latency distributions: recorded in `hdrhistogram`, printed as bcc's log2 histograms and a
//! percentiles line.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Nanosecond latencies: quantiles from hdrhistogram; count, sum, max and the log2 buckets
/// exact.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    total_ns: u64,
    max_ns: u64,
    /// bcc's log2 buckets of microseconds: index 0 holds 0 and 1, index i holds [2^i, 2^(i+1)).
    log2_us: [u64; 64],
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // 2 significant digits (1%) keeps a histogram at a few KiB, so tools can afford one
            // per query or per key; it grows to whatever values arrive.
            histogram: Histogram::new(2).expect("2 significant digits is valid"),
            total_ns: 0,
            max_ns: 0,
            log2_us: [0; 64],
        }
    }
}

/// The quantiles every summary shows.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

impl Latencies {
    pub fn record(&mut self, ns: u64) {
        // Only fails for values beyond 2^63 ns.
        let _ = self.histogram.record(ns);
        self.total_ns += ns;
        self.max_ns = self.max_ns.max(ns);
        let us = ns / 1000;
        self.log2_us[(u64::BITS - us.leading_zeros()).saturating_sub(1) as usize] += 1;
    }

    /// Adds `other`'s calls to these.
    pub fn add(&mut self, other: &Latencies) {
        // Only fails when other's values do not fit, which auto-resizing rules out.
        let _ = self.histogram.add(&other.histogram);
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        for (sum, count) in self.log2_us.iter_mut().zip(other.log2_us) {
            *sum += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// Within 1%, and never above the exact max.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile).min(self.max_ns)
    }

    /// The log2 buckets up to the highest one used.
    fn log2_buckets(&self) -> Vec<u64> {
        let used = self
            .log2_us
            .iter()
            .rposition(|&count| count > 0)
            .map_or(0, |i| i + 1);
        self.log2_us[..used].to_vec()
    }

    /// bcc's `print_log2_hist`, in microseconds.
    pub fn render_log2(&self) -> String {
        render_log2(&self.log2_buckets(), "usecs")
    }

    /// `p50 12.3us  p90 ...  max 4.10ms`
    pub fn percentiles_line(&self) -> String {
        let mut line = String::new();
        for (name, quantile) in QUANTILES {
            let _ = write!(line, "{name} {}  ", human_ns(self.quantile_ns(quantile)));
        }
        let _ = write!(line, "max {}", human_ns(self.max_ns()));
        line
    }

    /// The same facts for NDJSON.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: self.count(),
            total_us: us(self.total_ns),
            p50_us: us(self.quantile_ns(0.5)),
            p90_us: us(self.quantile_ns(0.9)),
            p99_us: us(self.quantile_ns(0.99)),
            p999_us: us(self.quantile_ns(0.999)),
            max_us: us(self.max_ns()),
            log2_usecs: self.log2_buckets(),
        }
    }
}

#[derive(Serialize, Debug)]
pub struct LatencySummary {
    pub count: u64,
    pub total_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Counts per log2 bucket: index 0 is 0-1 us, index i is [2^i, 2^(i+1)) us.
    pub log2_usecs: Vec<u64>,
}

/// An upper bound of the `quantile` of log2 buckets (bucket i holding [2^i, 2^(i+1))): the end
/// of the bucket where it falls.
pub fn log2_quantile(buckets: &[u64], quantile: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    let wanted = (total as f64 * quantile).ceil() as u64;
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= wanted.max(1) {
            return (1u64 << (i + 1)) - 1;
        }
    }
    0
}

/// bcc's log2 histogram layout: bucket 0 is 0-1, bucket i is [2^i, 2^(i+1)).
pub fn render_log2(buckets: &[u64], unit: &str) -> String {
    const STARS: u64 = 40;
    let max = buckets.iter().copied().max().unwrap_or(0);
    let mut out = format!("     {unit:<19} : count    distribution\n");
    for (i, &count) in buckets.iter().enumerate() {
        let (low, high) = if i == 0 {
            (0, 1)
        } else {
            (1u64 << i, (1u64 << (i + 1)) - 1)
        };
        let stars = (count * STARS).checked_div(max).unwrap_or(0) as usize;
        let _ = writeln!(
            out,
            "{low:>10} -> {high:<10} : {count:<8} |{:<40}|",
            "*".repeat(stars)
        );
    }
    out
}

/// A duration in the unit that keeps it readable: `850ns`, `12.3us`, `4.10ms`, `1.50s`.
pub fn human_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(us: &[u64]) -> Latencies {
        let mut latencies = Latencies::default();
        for &us in us {
            latencies.record(us * 1000);
        }
        latencies
    }

    #[test]
    fn buckets_like_bcc() {
        let latencies = latencies(&[0, 1, 2, 3, 4, 7, 8, 1000, 1023, 1024, 70_000]);
        let buckets = latencies.log2_buckets();
        assert_eq!(&buckets[..4], &[2, 2, 2, 1]);
        assert_eq!(buckets[9], 2, "1000 and 1023 us");
        assert_eq!(buckets[10], 1, "1024 us");
        assert_eq!(buckets[16], 1, "70 ms");
        assert_eq!(buckets.iter().sum::<u64>(), 11);
    }

    #[test]
    fn renders_bcc_layout() {
        let text = render_log2(&[1, 0, 4], "usecs");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "     usecs               : count    distribution");
        assert_eq!(
            lines[1],
            "         0 -> 1          : 1        |**********                              |"
        );
        assert_eq!(
            lines[2],
            "         2 -> 3          : 0        |                                        |"
        );
        assert_eq!(
            lines[3],
            "         4 -> 7          : 4        |****************************************|"
        );
    }

    #[test]
    fn summarises_exactly() {
        let latencies = latencies(&[10, 20, 30, 40, 5000]);
        assert_eq!(latencies.count(), 5);
        assert_eq!(latencies.total_ns(), 5_100_000);
        let summary = latencies.summary();
        assert_eq!(summary.max_us, 5000.0);
        assert!(
            (30.0..=30.3).contains(&summary.p50_us),
            "{}",
            summary.p50_us
        );
        assert!(latencies.percentiles_line().ends_with("max 5.00ms"));
    }

    #[test]
    fn bounds_quantiles_of_log2_buckets() {
        let buckets = [0, 0, 0, 90, 9, 1];
        assert_eq!(log2_quantile(&buckets, 0.5), 15);
        assert_eq!(log2_quantile(&buckets, 0.99), 31);
        assert_eq!(log2_quantile(&buckets, 1.0), 63);
        assert_eq!(log2_quantile(&[], 0.99), 0);
    }

    #[test]
    fn humanises_durations() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_100_000), "4.10ms");
        assert_eq!(human_ns(1_500_000_000), "1.50s");
    }
}
