//! What the fuzz targets (`tracer/fuzz/`) drive: each entry takes bytes as a tenant could shape
//! them and runs one of the parsers `tracer serve` feeds with them, asserting what must hold
//! whatever the input. A panic (an assertion included) is a finding.

use std::{path::PathBuf, time::Duration};

use crate::{
    cgroup, flags::Names, kernel_btf::KernelBtf, metrics, mysql, pg::wire::Statements, sql,
    tracefs::Format, usdt, workload,
};

/// Query texts of both dialects: normalizing is stable, and splitting gives pieces of the
/// text.
pub fn sql(data: &[u8]) {
    let text = sql::text(data);
    for dialect in [sql::Dialect::Postgres, sql::Dialect::Mysql] {
        let mut normalizer = sql::Normalizer::new(dialect);
        let once = normalizer.normalize(&text).to_owned();
        let twice = normalizer.normalize(&once).to_owned();
        assert_eq!(once, twice, "normalizing again changed {text:?}");
        for statement in sql::statements(&text, dialect) {
            let at = statement.as_ptr() as usize - text.as_ptr() as usize;
            assert!(at + statement.len() <= text.len());
        }
    }
}

/// A backend's first receive of a request, cut anywhere (the first byte says whether it is
/// whole).
pub fn pg_wire(data: &[u8]) {
    let Some((&complete, bytes)) = data.split_first() else {
        return;
    };
    let mut statements = Statements::default();
    for query in statements.request(1, bytes, complete & 1 == 1, |text| sql::text(text).into()) {
        if let crate::pg::wire::Query::Simple(text) = query {
            let at = text.as_ptr() as usize - bytes.as_ptr() as usize;
            assert!(at + text.len() <= bytes.len(), "a text past the bytes read");
        }
    }
}

/// A `COM_QUERY` payload, with or without query attributes: the text is the payload's tail.
pub fn mysql_wire(data: &[u8]) {
    let text = mysql::wire::query_text(data);
    assert!(
        data.ends_with(text),
        "a text that is not the payload's tail"
    );
}

/// USDT argument specs, as in `.note.stapsdt`.
pub fn usdt_args(data: &[u8]) {
    for spec in sql::text(data).split_whitespace() {
        let _ = usdt::parse_arg(spec);
    }
}

/// An ELF binary: its probes, symbols and their demangled names.
pub fn elf(data: &[u8]) {
    let Ok(binary) = usdt::Binary::from_bytes(data) else {
        return;
    };
    for provider in ["postgresql", "mysql", ""] {
        if let Ok(probes) = binary.probes(provider) {
            for probe in probes {
                for index in 0..4 {
                    let _ = probe.arg(index);
                }
            }
        }
    }
    let _ = binary.find_symbol(|name| {
        let _ = mysql::demangled(name);
        false
    });
    if let Some((_, offset)) = binary.symbol("main") {
        binary.entry_probe_offset(offset);
    }
}

/// A mangled C++ name.
pub fn demangle(data: &[u8]) {
    let _ = mysql::demangled(&sql::text(data));
}

/// BTF (`TRACER_BTF` names the file), and the lookups tracer makes in it.
pub fn btf(data: &[u8]) {
    let Ok(btf) = KernelBtf::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = btf.member_offset("task_struct", "cgroups");
    let _ = btf.member_offset("cgroup", "self.parent");
    let _ = btf.array_stride("task_struct", "comm");
    let _ = btf.enum_value("memory_cgrp_id");
    let _ = btf.tracepoint_args("sched_switch");
    let _ = btf.has_ring_buffer();
    let _ = btf.tracepoint_index(&["sched_switch", "mm_vmscan_direct_reclaim_begin"]);
}

/// A tracepoint's `format` file, and the flag names in its print fmt.
pub fn tracefs_format(data: &[u8]) {
    let format = Format::parse(&sql::text(data));
    let _ = format.expect_fields(&[("gfp_flags", 16, 8), ("order", 8, 4)]);
    let names = Names::from_print_fmt(&format.print_fmt, "__print_flags", "gfp_flags");
    let _ = (
        names.flags(0x400cc0),
        names.symbol(1),
        names.value("GFP_KERNEL"),
    );
}

/// Cgroup paths and mountinfo lines.
pub fn cgroup_path(data: &[u8]) {
    let text = sql::text(data);
    for line in text.lines() {
        let _ = workload::parse(line);
        let _ = cgroup::parse_mountinfo_line(line);
    }
}

/// What container names are read from: docker's `config.v2.json`, podman's
/// `containers.json` and kubelet's log links and pod directories.
pub fn container_metadata(data: &[u8]) {
    let _ = workload::docker_name_in(data);
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let _ = workload::podman_name_in(data, id);
    let name = sql::text(data);
    let _ = workload::kubelet_log_name(&name, &format!("-{id}.log"));
    let _ = workload::pod_dir_name(&name, "_0f0f0f0f-0000-1111-2222-333333333333");
}

/// Label values from cgroup paths and query texts: whatever they hold, every line of the
/// exposition stays one valid sample or comment.
pub fn metrics_labels(data: &[u8]) {
    let text = sql::text(data);
    let (cgroup, query) = text.split_once('\0').unwrap_or((&text, &text));
    let root = PathBuf::from("/nonexistent/tracer-fuzz");
    let mut metrics = metrics::Metrics::new(
        16,
        Duration::ZERO,
        root.clone(),
        workload::Workloads::with_root(root),
    );
    let events = metrics.counters::<metrics::ToolLabel>("tracer_fuzz_events", "Events");
    let labels = metrics.labeler().labels(cgroup);
    events
        .get(
            metrics::ToolLabel {
                tool: query.to_owned(),
            },
            labels.clone(),
        )
        .inc();
    let queries = metrics.top_histograms("tracer_fuzz_query", "Queries", 4, Vec::new());
    let mut key = String::new();
    metrics::top_key(&mut key, query, query, query);
    queries.observe(1, || labels, &key, 0.001, []);
    for exposition in [metrics.openmetrics(), metrics.prometheus_text()] {
        for line in exposition.lines() {
            assert!(
                line.starts_with('#') || is_sample(line),
                "not a sample: {line:?}"
            );
        }
    }
}

/// Whether `line` is one sample of the text formats: a metric name, maybe labels whose values
/// are quoted with only `\\`, `\"` and `\n` escapes in them, and a value.
fn is_sample(line: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_end = line.find(|c| !is_name(c)).unwrap_or(line.len());
    let mut rest = &line[name_end..];
    if name_end == 0 {
        return false;
    }
    if let Some(mut labels) = rest.strip_prefix('{') {
        while !labels.starts_with('}') {
            let Some((key, value)) = labels.split_once("=\"") else {
                return false;
            };
            if key.is_empty() || !key.chars().all(is_name) {
                return false;
            }
            let mut chars = value.char_indices();
            let end = loop {
                match chars.next() {
                    None => return false,
                    Some((_, '\\')) if matches!(chars.next(), Some((_, '\\' | '"' | 'n'))) => {}
                    Some((_, '\\')) => return false,
                    Some((at, '"')) => break at,
                    Some(_) => {}
                }
            };
            labels = &value[end + 1..];
            labels = labels.strip_prefix(',').unwrap_or(labels);
        }
        rest = &labels[1..];
    }
    let Some(value) = rest.strip_prefix(' ') else {
        return false;
    };
    matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok()
}
