//! The free pool and the watermarks kswapd and the allocator hold it to, as `/proc` has them.

use serde::Serialize;

/// The free pool and its watermarks as the kernel has them now.
#[derive(Debug, Default, Serialize)]
pub struct Watermarks {
    pub min_free_kbytes: Option<u64>,
    pub watermark_scale_factor: Option<u64>,
    /// Absent before Linux 5.0.
    pub watermark_boost_factor: Option<u64>,
    pub zones: Vec<Zone>,
}

/// One zone with memory, in pages (`/proc/zoneinfo`; `min`, `low` and `high` include any
/// boost in force).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Zone {
    pub node: u32,
    pub zone: String,
    pub free: u64,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    pub boost: u64,
    pub managed: u64,
}

impl Watermarks {
    pub fn read() -> Self {
        let sysctl = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
                .ok()
                .and_then(|value| value.trim().parse().ok())
        };
        Self {
            min_free_kbytes: sysctl("min_free_kbytes"),
            watermark_scale_factor: sysctl("watermark_scale_factor"),
            watermark_boost_factor: sysctl("watermark_boost_factor"),
            zones: zones(&std::fs::read_to_string("/proc/zoneinfo").unwrap_or_default()),
        }
    }

    pub fn render(&self, out: &mut String) {
        let zones: Vec<String> = self
            .zones
            .iter()
            .map(|zone| {
                format!(
                    "node {} {} free {} min {} low {} high {}",
                    zone.node, zone.zone, zone.free, zone.min, zone.low, zone.high
                )
            })
            .collect();
        let setting = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
        out.push_str(&format!(
            "Watermarks (pages): {}; vm.min_free_kbytes {}, vm.watermark_scale_factor {}, \
             vm.watermark_boost_factor {}\n",
            zones.join("; "),
            setting(self.min_free_kbytes),
            setting(self.watermark_scale_factor),
            setting(self.watermark_boost_factor),
        ));
    }
}

/// The zones of `/proc/zoneinfo` that manage memory.
fn zones(zoneinfo: &str) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    for line in zoneinfo.lines() {
        if let Some(rest) = line.strip_prefix("Node ") {
            let Some((node, zone)) = rest.split_once(", zone") else {
                continue;
            };
            zones.push(Zone {
                node: node.trim().parse().unwrap_or(0),
                zone: zone.trim().to_owned(),
                ..Zone::default()
            });
            continue;
        }
        let Some(zone) = zones.last_mut() else {
            continue;
        };
        let mut words = line.split_whitespace();
        let (name, value) = match (words.next(), words.next(), words.next()) {
            (Some("pages"), Some("free"), Some(value)) => ("free", value),
            (Some(name), Some(value), None) => (name, value),
            _ => continue,
        };
        let Ok(value) = value.parse() else {
            continue;
        };
        // Per-node stats come before a node's first zone's own lines and name none of these.
        match name {
            "free" => zone.free = value,
            "min" => zone.min = value,
            "low" => zone.low = value,
            "high" => zone.high = value,
            "boost" => zone.boost = value,
            "managed" => zone.managed = value,
            _ => {}
        }
    }
    zones.retain(|zone| zone.managed > 0);
    zones
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONEINFO: &str = "Node 0, zone      DMA\n  per-node stats\n      nr_inactive_anon 734\n      \
        nr_mapped    2947\n  pages free     3840\n        boost    0\n        min      10\n        \
        low      13\n        high     16\n        spanned  4095\n        managed  3840\n        \
        protection: (0, 2997, 24068, 24068, 24068)\nNode 0, zone   Normal\n  pages free     4955066\n        \
        boost    12\n        min      14769\n        low      20163\n        high     25557\n        \
        managed  5394258\nNode 0, zone  Movable\n  pages free     0\n        min      32\n        \
        low      32\n        high     32\n        managed  0\n";

    #[test]
    fn zones_with_memory_are_read_with_their_watermarks() {
        let zones = zones(ZONEINFO);
        assert_eq!(zones.len(), 2, "{zones:?}");
        assert_eq!(
            zones[1],
            Zone {
                node: 0,
                zone: "Normal".into(),
                free: 4955066,
                min: 14769,
                low: 20163,
                high: 25557,
                boost: 12,
                managed: 5394258,
            }
        );
        assert_eq!((zones[0].zone.as_str(), zones[0].min), ("DMA", 10));
    }
}
