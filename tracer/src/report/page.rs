//! The report as one HTML file with everything inline: it opens from a mail attachment or a
//! ticket, with no network.

use std::fmt::Write as _;

use super::{
    draw::{self, Axis},
    timeline::{Timeline, clock},
};

const STYLE: &str = "
body { font: 14px system-ui, sans-serif; margin: 16px 24px; color: #222; max-width: 1000px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 18px 0 2px; }
.window { color: #555; margin: 0 0 8px; }
ul { margin: 4px 0; padding-left: 20px; }
li.mark.oom_kill::marker { color: #d62728; }
svg { display: block; }
svg .label { font: 11px system-ui, sans-serif; fill: #444; }
svg .grid { stroke: #000; stroke-opacity: 0.08; }
svg .series { fill: none; stroke-width: 1.5; }
svg .cells rect { fill: #c2410c; }
svg .mark-line { stroke-width: 1.5; }
svg .oom_kill .mark-line { stroke: #d62728; }
svg .trigger .mark-line { stroke: #222; stroke-dasharray: 4 3; }
svg .threshold .mark-line { stroke: #e8a200; }
li.mark.threshold::marker { color: #e8a200; }
svg .mark-hit { stroke: transparent; stroke-width: 9; }
table { border-collapse: collapse; margin-top: 4px; }
th, td { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; font-size: 13px; }
th { border-bottom: 1px solid #999; }
td.query { font-family: ui-monospace, monospace; max-width: 420px; overflow-wrap: anywhere; }
";

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

pub fn page(timeline: &Timeline, title: &str) -> String {
    let axis = Axis {
        from: timeline.from,
        to: timeline.to,
    };
    let mut html = String::new();
    let seconds = (timeline.to - timeline.from).round();
    // Writing to a String cannot fail.
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tracer report: {title}</title><style>{STYLE}</style></head><body>\n\
         <h1>tracer report: {title}</h1>\n\
         <p class=\"window\">{} to {} UTC ({seconds} s); hover a line or a cell for its details.</p>\n",
        clock(timeline.from),
        clock(timeline.to),
        title = escape(title),
    );
    if !timeline.marks.is_empty() {
        html.push_str("<ul class=\"marks\">\n");
        for mark in &timeline.marks {
            let _ = write!(
                html,
                "<li class=\"mark {}\">{} {}",
                mark.kind,
                clock(mark.time),
                escape(&mark.label)
            );
            for detail in &mark.details {
                let _ = write!(html, "; {}", escape(detail));
            }
            html.push_str("</li>\n");
        }
        html.push_str("</ul>\n");
    }
    if !timeline.findings.is_empty() {
        html.push_str("<h2>Findings</h2>\n<ul class=\"findings\">\n");
        for finding in &timeline.findings {
            let _ = write!(
                html,
                "<li>{} {}",
                clock(finding.first),
                escape(&finding.text)
            );
            if finding.times > 1 {
                let _ = write!(
                    html,
                    " (said {} times; numbers of the first)",
                    finding.times
                );
            }
            html.push_str("</li>\n");
        }
        html.push_str("</ul>\n");
    }
    for chart in &timeline.charts {
        let _ = writeln!(
            html,
            "<h2>{} ({})</h2>\n{}",
            escape(&chart.title),
            chart.unit,
            draw::line_chart(chart, &axis, &timeline.marks)
        );
    }
    for heatmap in &timeline.heatmaps {
        let _ = writeln!(
            html,
            "<h2>{}, per second (darker: more)</h2>\n{}",
            escape(&heatmap.title),
            draw::heatmap(heatmap, &axis, &timeline.marks)
        );
    }
    for table in &timeline.tables {
        let _ = write!(html, "<h2>{}</h2>\n<table><tr>", escape(&table.title));
        for column in &table.header {
            let _ = write!(html, "<th>{column}</th>");
        }
        html.push_str("</tr>\n");
        for row in &table.rows {
            html.push_str("<tr>");
            for (column, cell) in table.header.iter().zip(row) {
                let class = if *column == "QUERY" {
                    " class=\"query\""
                } else {
                    ""
                };
                let _ = write!(html, "<td{class}>{}</td>", escape(cell));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}
