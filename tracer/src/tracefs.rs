//! tracefs: which tracepoints this kernel has, and the layout of their records.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub struct Tracefs {
    root: PathBuf,
}

/// One field of a classic tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// A tracepoint's `format` file.
#[derive(Debug)]
pub struct Format {
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Tracefs {
    /// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere usual.
    /// `TRACER_TRACEFS` names another place (say, the host's tracefs inside a container).
    pub fn locate() -> Result<Self> {
        if let Some(root) = std::env::var_os("TRACER_TRACEFS") {
            return Self::at(PathBuf::from(root));
        }
        for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            if let Ok(tracefs) = Self::at(root.into()) {
                return Ok(tracefs);
            }
        }
        mount("/sys/kernel/tracing").context(
            "tracefs is not mounted and mounting it failed; \
             mount it with: mount -t tracefs tracefs /sys/kernel/tracing",
        )?;
        Self::at("/sys/kernel/tracing".into())
    }

    fn at(root: PathBuf) -> Result<Self> {
        if !root.join("events").is_dir() {
            bail!("tracefs is not available at {}", root.display());
        }
        Ok(Self { root })
    }

    /// The format of `category:name`, or a plain error when this kernel lacks the tracepoint.
    pub fn format(&self, category: &str, name: &str) -> Result<Format> {
        let path = self.event_dir(category, name).join("format");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("this kernel has no tracepoint {category}:{name}"))?;
        Ok(Format::parse(&text))
    }

    fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }
}

fn mount(target: &str) -> std::io::Result<()> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("no NUL in constant");
    let (source, target, fstype) = (cstr("tracefs"), cstr(target), cstr("tracefs"));
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Format {
    pub fn parse(text: &str) -> Self {
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("print fmt: ") {
                print_fmt = rest.to_owned();
            } else if line.starts_with("field:") {
                fields.extend(parse_field(line));
            }
        }
        Self { fields, print_fmt }
    }

    /// Fails unless each `(name, offset, size)` is where a kernel program expects to read it.
    pub fn expect_fields(&self, expected: &[(&str, usize, usize)]) -> Result<()> {
        for &(name, offset, size) in expected {
            let field = self.fields.iter().find(|field| field.name == name);
            match field {
                Some(field) if field.offset == offset && field.size == size => {}
                Some(field) => bail!(
                    "field {name} is at offset {} size {} on this kernel, not {offset}/{size}",
                    field.offset,
                    field.size
                ),
                None => bail!("the record has no field {name} on this kernel"),
            }
        }
        Ok(())
    }
}

/// `field:unsigned long gfp_flags;\toffset:16;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split(';').map(str::trim);
    let declaration = parts.next()?.strip_prefix("field:")?;
    let name = declaration
        .split_whitespace()
        .last()?
        .split('[')
        .next()?
        .to_owned();
    let mut number = |key: &str| -> Option<usize> { parts.next()?.strip_prefix(key)?.parse().ok() };
    let offset = number("offset:")?;
    let size = number("size:")?;
    Some(Field { name, offset, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "name: mm_vmscan_direct_reclaim_begin
ID: 637
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int order;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned long gfp_flags;\toffset:16;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;

print fmt: \"order=%d\", REC->order
";

    #[test]
    fn parses_fields_and_print_fmt() {
        let format = Format::parse(BEGIN);
        assert_eq!(format.fields.len(), 5);
        assert_eq!(
            format.fields[3],
            Field {
                name: "gfp_flags".into(),
                offset: 16,
                size: 8
            }
        );
        assert_eq!(format.fields[4].name, "comm");
        assert_eq!(format.print_fmt, "\"order=%d\", REC->order");
    }

    #[test]
    fn checks_expected_layout() {
        let format = Format::parse(BEGIN);
        assert!(
            format
                .expect_fields(&[("order", 8, 4), ("gfp_flags", 16, 8)])
                .is_ok()
        );
        let moved = format.expect_fields(&[("order", 12, 4)]).unwrap_err();
        assert!(moved.to_string().contains("offset 8"), "{moved}");
        assert!(format.expect_fields(&[("nr_reclaimed", 8, 8)]).is_err());
    }
}
