//! Charts as SVG on one shared time axis: the same moment sits at the same x in every chart,
//! and every chart carries the marks. Hover details are SVG `<title>`s, so the page needs no
//! script to be read; each element says what it is in `class` and `data-` attributes.

use svg::{
    Document,
    node::element::{Group, Line, Polyline, Rectangle, Text, Title},
};

use super::timeline::{Chart, Heatmap, Mark, Time, clock};

pub const WIDTH: f64 = 960.0;
/// Room for the value labels on the left and the legend on the right.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 10.0;
/// Room for the time labels.
const BOTTOM: f64 = 22.0;
const LINE_CHART_HEIGHT: f64 = 160.0;
const HEATMAP_ROW: f64 = 10.0;
/// Heatmap columns at most: a column per second up to it, else per several.
const MOST_COLUMNS: usize = 360;
const PALETTE: [&str; 9] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f",
];

/// The time axis every chart shares.
pub struct Axis {
    pub from: Time,
    pub to: Time,
}

impl Axis {
    fn x(&self, time: Time) -> f64 {
        LEFT + (time - self.from) / (self.to - self.from) * (WIDTH - LEFT - RIGHT)
    }
}

/// Rounded to a tenth of a pixel: enough, and half the bytes of full precision.
fn px(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn frame(axis: &Axis, height: f64, class: &str) -> Document {
    Document::new()
        .set("width", WIDTH)
        .set("height", height)
        .set("viewBox", (0, 0, WIDTH, height))
        .set("class", class)
        .set("data-from", axis.from)
        .set("data-to", axis.to)
        .set("data-left", LEFT)
        .set("data-right", WIDTH - RIGHT)
}

fn label(x: f64, y: f64, anchor: &str, content: impl Into<String>) -> Text {
    Text::new(content)
        .set("x", px(x))
        .set("y", px(y))
        .set("text-anchor", anchor)
        .set("class", "label")
}

/// Time ticks at a round step, about eight across, with their grid lines.
fn time_ticks(axis: &Axis, bottom: f64) -> Group {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    let span = axis.to - axis.from;
    let step = STEPS
        .into_iter()
        .find(|step| span / step <= 8.0)
        .unwrap_or(span / 8.0);
    let mut group = Group::new().set("class", "time-axis");
    let mut tick = (axis.from / step).ceil() * step;
    while tick <= axis.to {
        let x = px(axis.x(tick));
        group = group
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", TOP)
                    .set("y2", bottom)
                    .set("class", "grid"),
            )
            .add(label(x, bottom + 15.0, "middle", clock(tick)));
        tick += step;
    }
    group
}

/// A round number at or above `max`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&nice| nice >= max)
        .unwrap_or(10.0 * magnitude)
}

/// A value as short as a label needs: 1.5k, 12, 0.25.
fn short(value: f64) -> String {
    let trimmed = |value: f64, decimals: usize| {
        let text = format!("{value:.decimals$}");
        match text.contains('.') {
            true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
            false => text,
        }
    };
    match value {
        v if v >= 1e6 => format!("{}M", trimmed(v / 1e6, 2)),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{}k", trimmed(v / 1e3, 1)),
        v if v >= 10.0 => format!("{v:.0}"),
        v => trimmed(v, 2),
    }
}

/// Microseconds as a person reads them: 16us, 4ms, 1.1s.
fn duration(us: f64) -> String {
    match us {
        us if us >= 1e6 => format!("{}s", short(us / 1e6)),
        us if us >= 1e3 => format!("{}ms", short(us / 1e3)),
        us => format!("{}us", short(us)),
    }
}

/// Each mark as a line across the chart, with its details on hover.
fn marks(axis: &Axis, marks: &[Mark], bottom: f64) -> Group {
    let mut group = Group::new();
    for mark in marks {
        let x = px(axis.x(mark.time));
        let line = |class: &str| {
            Line::new()
                .set("x1", x)
                .set("x2", x)
                .set("y1", TOP)
                .set("y2", bottom)
                .set("class", class)
        };
        let mut details = mark.label.clone();
        for detail in &mark.details {
            details.push('\n');
            details.push_str(detail);
        }
        group = group.add(
            Group::new()
                .set("class", format!("mark {}", mark.kind))
                .set("data-time", mark.time)
                .set("data-x", x)
                .add(Title::new(format!("{} {details}", clock(mark.time))))
                .add(line("mark-line"))
                // Wide and clear, so that the pointer finds it.
                .add(line("mark-hit")),
        );
    }
    group
}

pub fn line_chart(chart: &Chart, axis: &Axis, events: &[Mark]) -> Document {
    let height = LINE_CHART_HEIGHT;
    let bottom = height - BOTTOM;
    let max = chart
        .series
        .iter()
        .flat_map(|series| series.values.iter().copied())
        .fold(0.0, f64::max);
    let max = nice_ceiling(max);
    let y = |value: f64| bottom - value / max * (bottom - TOP);
    let mut document = frame(axis, height, "chart")
        .set("data-title", chart.title.as_str())
        .set("data-seconds", chart.times.len());
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        document = document
            .add(
                Line::new()
                    .set("x1", LEFT)
                    .set("x2", WIDTH - RIGHT)
                    .set("y1", px(y(value)))
                    .set("y2", px(y(value)))
                    .set("class", "grid"),
            )
            .add(label(LEFT - 4.0, y(value) + 4.0, "end", short(value)));
    }
    document = document.add(time_ticks(axis, bottom));
    for (index, series) in chart.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let points: Vec<String> = chart
            .times
            .iter()
            .zip(&series.values)
            .map(|(&time, &value)| format!("{},{}", px(axis.x(time)), px(y(value))))
            .collect();
        let legend_y = TOP + 8.0 + 15.0 * index as f64;
        let name: String = series.name.chars().take(26).collect();
        document = document
            .add(
                Polyline::new()
                    .set("points", points.join(" "))
                    .set("stroke", color)
                    .set("class", "series")
                    .set("data-name", series.name.as_str())
                    .add(Title::new(series.name.as_str())),
            )
            .add(
                Rectangle::new()
                    .set("x", WIDTH - RIGHT + 12.0)
                    .set("y", legend_y - 8.0)
                    .set("width", 10)
                    .set("height", 10)
                    .set("fill", color),
            )
            .add(
                label(WIDTH - RIGHT + 26.0, legend_y + 1.0, "start", name)
                    .add(Title::new(series.name.as_str())),
            );
    }
    document.add(marks(axis, events, bottom))
}

pub fn heatmap(heatmap: &Heatmap, axis: &Axis, events: &[Mark]) -> Document {
    let occupied = |bucket: usize| heatmap.counts.iter().any(|c| c.get(bucket) > Some(&0));
    let width = heatmap.counts.iter().map(Vec::len).max().unwrap_or(0);
    let lowest = (0..width).find(|&b| occupied(b)).unwrap_or(0);
    let highest = (0..width).rev().find(|&b| occupied(b)).unwrap_or(0);
    let rows = highest - lowest + 1;
    let bottom = TOP + HEATMAP_ROW * rows as f64;
    let height = bottom + BOTTOM;
    // Columns of several seconds where there are more seconds than room.
    let per_column = heatmap.times.len().div_ceil(MOST_COLUMNS).max(1);
    let step = match heatmap.times.as_slice() {
        [first, second, ..] => second - first,
        _ => 1.0,
    };
    let columns: Vec<(Time, Time, Vec<u64>)> = heatmap
        .times
        .chunks(per_column)
        .zip(heatmap.counts.chunks(per_column))
        .map(|(times, counts)| {
            let mut sum = vec![0u64; width];
            for (bucket, count) in counts.iter().flat_map(|c| c.iter().enumerate()) {
                sum[bucket] += count;
            }
            (times[0] - step, times[times.len() - 1], sum)
        })
        .collect();
    let most = columns
        .iter()
        .flat_map(|(_, _, sum)| sum.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let bound = |bucket: usize| {
        let value = if bucket == 0 {
            0.0
        } else {
            (1u64 << bucket) as f64
        };
        match heatmap.unit {
            "us" => duration(value),
            "ns" if value < 1e3 => format!("{}ns", short(value)),
            "ns" => duration(value / 1e3),
            unit => format!("{}{unit}", short(value)),
        }
    };
    let mut document = frame(axis, height, "heatmap")
        .set("data-title", heatmap.title.as_str())
        .set("data-seconds", heatmap.times.len())
        .set("data-columns", columns.len());
    for bucket in lowest..=highest {
        let row_bottom = bottom - HEATMAP_ROW * (bucket - lowest) as f64;
        if (bucket - lowest) % 2 == 0 || rows <= 6 {
            document = document.add(label(LEFT - 4.0, row_bottom - 1.0, "end", bound(bucket)));
        }
    }
    document = document.add(time_ticks(axis, bottom));
    let mut cells = Group::new().set("class", "cells");
    for (start, end, counts) in &columns {
        let (x0, x1) = (px(axis.x(*start)), px(axis.x(*end)));
        for (bucket, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let shade = (count as f64).ln_1p() / (most as f64).ln_1p();
            let top = bottom - HEATMAP_ROW * (bucket - lowest + 1) as f64;
            let what = format!(
                "{} to {}: {count} in [{}, {})",
                clock(*start),
                clock(*end),
                bound(bucket),
                bound(bucket + 1),
            );
            cells = cells.add(
                Rectangle::new()
                    .set("x", x0)
                    .set("y", px(top))
                    .set("width", px((x1 - x0).max(0.5)))
                    .set("height", HEATMAP_ROW)
                    .set("fill-opacity", px(0.15 + 0.85 * shade))
                    .add(Title::new(what)),
            );
        }
    }
    document.add(cells).add(marks(axis, events, bottom))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ceilings_and_short_labels() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(186.2), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2000.0), "2k");
        assert_eq!(short(50_000.0), "50k");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(duration(16.0), "16us");
        assert_eq!(duration(4096.0), "4.1ms");
        assert_eq!(duration(2_097_152.0), "2.1s");
    }
}
