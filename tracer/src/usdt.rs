//! USDT probes and symbols of an ELF binary: where each probe sits in the file, its semaphore,
//! and how to find its arguments (decoded from the `.note.stapsdt` argument spec).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use tracer_common::usdt::Arg;

/// One USDT probe site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub provider: String,
    pub name: String,
    /// Link-time address of the instruction.
    pub address: u64,
    /// Where the instruction is in the file, for the uprobe.
    pub file_offset: u64,
    /// File offset of the semaphore, 0 when the probe has none.
    pub semaphore: u64,
    /// The argument spec, e.g. `8@%rbx -4@-20(%rbp)`.
    pub args: String,
}

impl Probe {
    /// Where argument `index` is, decoded from the spec.
    pub fn arg(&self, index: usize) -> Result<Arg> {
        let spec = self.args.split_whitespace().nth(index).with_context(|| {
            format!(
                "{}:{} has no argument {index} ({:?})",
                self.provider, self.name, self.args
            )
        })?;
        parse_arg(spec).with_context(|| {
            format!(
                "argument {index} of {}:{} ({spec})",
                self.provider, self.name
            )
        })
    }
}

/// An ELF binary, mapped.
pub struct Binary {
    map: memmap2::Mmap,
}

impl Binary {
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: a binary being traced is not rewritten underneath us; if it were, parsing
        // would fail or find other offsets, never touch memory outside the map.
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        object::File::parse(&*map)
            .with_context(|| format!("{} is not an ELF binary", path.display()))?;
        Ok(Self { map })
    }

    /// The binary in `bytes`, as if read from a file (for the fuzz targets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        object::File::parse(bytes).context("not an ELF binary")?;
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(bytes);
        Ok(Self {
            map: map.make_read_only()?,
        })
    }

    fn elf(&self) -> object::File<'_> {
        object::File::parse(&*self.map).expect("parsed when opened")
    }

    /// The USDT probes of `provider`.
    pub fn probes(&self, provider: &str) -> Result<Vec<Probe>> {
        let elf = self.elf();
        let Some(notes) = elf.section_by_name(".note.stapsdt") else {
            return Ok(Vec::new());
        };
        // Prelinking moves .stapsdt.base; notes record where it was at link time.
        let base = elf
            .section_by_name(".stapsdt.base")
            .map(|section| section.address());
        let mut probes = Vec::new();
        for note in parse_notes(notes.data()?) {
            let note = note?;
            if note.provider != provider {
                continue;
            }
            let adjust = |address: u64| match base {
                Some(base) if note.base != 0 => address.wrapping_add(base).wrapping_sub(note.base),
                _ => address,
            };
            let address = adjust(note.pc);
            let semaphore = match note.semaphore {
                0 => 0,
                semaphore => file_offset(&elf, adjust(semaphore))
                    .with_context(|| format!("semaphore of {}:{}", note.provider, note.name))?,
            };
            probes.push(Probe {
                provider: note.provider.to_owned(),
                name: note.name.to_owned(),
                address,
                file_offset: file_offset(&elf, address)?,
                semaphore,
                args: note.args.to_owned(),
            });
        }
        Ok(probes)
    }

    /// The first defined function symbol whose (mangled) name passes `wanted`: its name,
    /// link-time address and file offset.
    pub fn find_symbol(&self, wanted: impl Fn(&str) -> bool) -> Option<(String, u64, u64)> {
        let elf = self.elf();
        let symbol = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .find(|symbol| symbol.address() != 0 && symbol.name().is_ok_and(&wanted))?;
        let address = symbol.address();
        let name = symbol.name().ok()?.to_owned();
        Some((name, address, file_offset(&elf, address).ok()?))
    }

    /// Where to probe the entry of the function at file offset `offset`: past an `endbr64`
    /// (binaries built for CET, as Oracle's MySQL), which a uprobe cannot emulate and must
    /// single-step, about 12 us a hit here against 0.7. It changes no register and not the
    /// stack: a probe on the next instruction sees the same arguments and return address.
    pub fn entry_probe_offset(&self, offset: u64) -> u64 {
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.map.get(at..at.saturating_add(4)) {
            Some(first) if first == ENDBR64 => offset + 4,
            _ => offset,
        }
    }

    /// (link-time address, file offset) of a symbol, from the symbol table or, in a stripped
    /// binary, the dynamic one.
    pub fn symbol(&self, name: &str) -> Option<(u64, u64)> {
        let elf = self.elf();
        let address = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .find(|symbol| symbol.name() == Ok(name) && symbol.address() != 0)?
            .address();
        Some((address, file_offset(&elf, address).ok()?))
    }
}

/// The file offset of a link-time address, through the loadable segment that maps it.
fn file_offset(elf: &object::File, address: u64) -> Result<u64> {
    elf.segments()
        .find(|segment| (segment.address()..segment.address() + segment.size()).contains(&address))
        .map(|segment| address - segment.address() + segment.file_range().0)
        .ok_or_else(|| anyhow!("address {address:#x} is in no loadable segment"))
}

struct Note<'a> {
    pc: u64,
    base: u64,
    semaphore: u64,
    provider: &'a str,
    name: &'a str,
    args: &'a str,
}

/// stapsdt notes: owner "stapsdt", type 3, description = pc, base, semaphore (8 bytes each),
/// then provider, name and arguments as NUL-terminated strings.
fn parse_notes(data: &[u8]) -> impl Iterator<Item = Result<Note<'_>>> {
    const NT_STAPSDT: u32 = 3;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let (name_len, desc_len, kind) =
                (word(at)? as usize, word(at + 4)? as usize, word(at + 8)?);
            let name_at = at + 12;
            let desc_at = name_at + align4(name_len);
            at = desc_at + align4(desc_len);
            let owner = data.get(name_at..name_at + name_len)?;
            if kind != NT_STAPSDT || owner != b"stapsdt\0" {
                continue;
            }
            return Some(
                data.get(desc_at..desc_at + desc_len)
                    .context("truncated note")
                    .and_then(parse_note),
            );
        }
    })
}

fn parse_note(desc: &[u8]) -> Result<Note<'_>> {
    let address = |i: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            desc.get(i * 8..i * 8 + 8)
                .context("short note")?
                .try_into()?,
        ))
    };
    let mut strings = desc.get(24..).context("short note")?.split(|&b| b == 0);
    let mut next =
        || -> Result<&str> { Ok(std::str::from_utf8(strings.next().context("short note")?)?) };
    Ok(Note {
        pc: address(0)?,
        base: address(1)?,
        semaphore: address(2)?,
        provider: next()?,
        name: next()?,
        args: next().unwrap_or(""),
    })
}

/// The architecture whose notes a spec is read for: its assembler's syntax, and where its
/// registers are in the `pt_regs` a probe sees.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// tracer's own: the programs it probes run on the machine it runs on.
    pub const HOST: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
}

/// One argument spec, as the host's assembler writes it, as an [`Arg`].
pub(crate) fn parse_arg(spec: &str) -> Result<Arg> {
    parse_arg_for(spec, Arch::HOST)
}

/// One argument spec as an [`Arg`]: x86-64's `8@%rbx`, `-4@-20(%rbp)`, `4@$5`; arm64's `8@x0`,
/// `-4@[sp, 12]`, `8@[x1]`, `4@5`.
pub(crate) fn parse_arg_for(spec: &str, arch: Arch) -> Result<Arg> {
    let (size, operand) = spec.split_once('@').context("no size")?;
    let size: i8 = size.parse().context("bad size")?;
    if ![1, 2, 4, 8].contains(&size.unsigned_abs()) {
        bail!("bad size {size}");
    }
    let mut arg = Arg {
        size: size.unsigned_abs(),
        signed: (size < 0) as u8,
        ..Arg::default()
    };
    if arch == Arch::Aarch64 {
        parse_arm64_operand(operand, &mut arg)?;
    } else if let Some(constant) = operand.strip_prefix('$') {
        arg.location = Arg::CONSTANT;
        arg.value = parse_number(constant)?;
    } else if let Some(register) = operand.strip_prefix('%') {
        arg.location = Arg::REGISTER;
        arg.register = register_offset(register)?;
    } else if let Some((displacement, rest)) = operand.split_once('(') {
        let register = rest
            .strip_suffix(')')
            .and_then(|register| register.strip_prefix('%'))
            .context("unsupported memory operand")?;
        if register == "rip" || register.contains(',') {
            bail!("unsupported memory operand");
        }
        arg.location = Arg::MEMORY;
        arg.register = register_offset(register)?;
        arg.value = if displacement.is_empty() {
            0
        } else {
            parse_number(displacement)?
        };
    } else {
        bail!("unsupported operand");
    }
    Ok(arg)
}

/// arm64's operands: a register, `[register]`, `[register, offset]` or a constant.
fn parse_arm64_operand(operand: &str, arg: &mut Arg) -> Result<()> {
    if let Some(memory) = operand.strip_prefix('[') {
        let memory = memory
            .strip_suffix(']')
            .context("unsupported memory operand")?;
        let (register, offset) = match memory.split_once(',') {
            Some((register, offset)) => (register.trim(), parse_number(offset.trim())?),
            None => (memory.trim(), 0),
        };
        arg.location = Arg::MEMORY;
        arg.register = arm64_register_offset(register)?;
        arg.value = offset;
    } else if operand.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        arg.location = Arg::CONSTANT;
        arg.value = parse_number(operand)?;
    } else {
        arg.location = Arg::REGISTER;
        arg.register = arm64_register_offset(operand)?;
    }
    Ok(())
}

/// Offset in arm64's `struct user_pt_regs` (`regs[31]`, `sp`, `pc`) of `x0`-`x30` (or their
/// 32-bit halves `w0`-`w30`, the same slots) and `sp`.
fn arm64_register_offset(name: &str) -> Result<u32> {
    if name == "sp" {
        return Ok(31 * 8);
    }
    let number = name
        .strip_prefix('x')
        .or_else(|| name.strip_prefix('w'))
        .and_then(|number| number.parse::<u32>().ok())
        .filter(|&number| number <= 30)
        .ok_or_else(|| anyhow!("unsupported register {name}"))?;
    Ok(number * 8)
}

fn parse_number(text: &str) -> Result<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    let value = match digits.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16)?,
        None => digits.parse()?,
    };
    Ok(if negative { -value } else { value })
}

/// Offset in x86-64's `struct pt_regs` of a register, by any of its names.
fn register_offset(name: &str) -> Result<u32> {
    const REGISTERS: [(u32, [&str; 4]); 17] = [
        (0, ["r15", "r15d", "r15w", "r15b"]),
        (8, ["r14", "r14d", "r14w", "r14b"]),
        (16, ["r13", "r13d", "r13w", "r13b"]),
        (24, ["r12", "r12d", "r12w", "r12b"]),
        (32, ["rbp", "ebp", "bp", "bpl"]),
        (40, ["rbx", "ebx", "bx", "bl"]),
        (48, ["r11", "r11d", "r11w", "r11b"]),
        (56, ["r10", "r10d", "r10w", "r10b"]),
        (64, ["r9", "r9d", "r9w", "r9b"]),
        (72, ["r8", "r8d", "r8w", "r8b"]),
        (80, ["rax", "eax", "ax", "al"]),
        (88, ["rcx", "ecx", "cx", "cl"]),
        (96, ["rdx", "edx", "dx", "dl"]),
        (104, ["rsi", "esi", "si", "sil"]),
        (112, ["rdi", "edi", "di", "dil"]),
        (128, ["rip", "eip", "ip", "ip"]),
        (152, ["rsp", "esp", "sp", "spl"]),
    ];
    REGISTERS
        .iter()
        .find(|(_, names)| names.contains(&name))
        .map(|(offset, _)| *offset)
        .ok_or_else(|| anyhow!("unsupported register %{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_argument_specs() {
        let specs = "8@%rbx -4@-144(%rbp) 4@$5 -2@%ax 8@(%rdi) 1@0x10(%r12)";
        let args: Vec<Arg> = specs
            .split_whitespace()
            .map(|spec| parse_arg(spec).unwrap())
            .collect();
        assert_eq!(
            args[0],
            Arg {
                location: Arg::REGISTER,
                register: 40,
                size: 8,
                ..Arg::default()
            }
        );
        assert_eq!(
            args[1],
            Arg {
                location: Arg::MEMORY,
                register: 32,
                value: -144,
                size: 4,
                signed: 1,
                ..Arg::default()
            }
        );
        assert_eq!(
            args[2],
            Arg {
                location: Arg::CONSTANT,
                value: 5,
                size: 4,
                ..Arg::default()
            }
        );
        assert_eq!((args[3].register, args[3].size, args[3].signed), (80, 2, 1));
        assert_eq!((args[4].location, args[4].value), (Arg::MEMORY, 0));
        assert_eq!((args[5].register, args[5].value), (24, 16));
        for bad in [
            "8%rbx",
            "3@%rbx",
            "8@%xmm0",
            "8@foo(%rip)",
            "8@(%rax,%rbx,8)",
            "8@rbx",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_arm64_argument_specs() {
        let arm64 = |spec: &str| parse_arg_for(spec, Arch::Aarch64);
        let arg = arm64("8@x0").unwrap();
        assert_eq!(
            (arg.location, arg.register, arg.size),
            (Arg::REGISTER, 0, 8)
        );
        let arg = arm64("-4@[sp, 12]").unwrap();
        assert_eq!(
            (arg.location, arg.register, arg.value, arg.signed),
            (Arg::MEMORY, 248, 12, 1)
        );
        let arg = arm64("8@[x29, -8]").unwrap();
        assert_eq!((arg.register, arg.value), (29 * 8, -8));
        assert_eq!(arm64("8@[x1]").unwrap().value, 0);
        assert_eq!(arm64("-4@w19").unwrap().register, 19 * 8);
        let arg = arm64("4@5").unwrap();
        assert_eq!((arg.location, arg.value), (Arg::CONSTANT, 5));
        for bad in ["8@x31", "8@%rbx", "8@[x1, x2]", "8@[x1", "8@v0"] {
            assert!(arm64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fits_values_to_size_and_sign() {
        let arg = |size, signed| Arg {
            size,
            signed,
            ..Arg::default()
        };
        assert_eq!(arg(4, 1).fit(0xffff_ffff) as i64, -1);
        assert_eq!(arg(4, 0).fit(0x1_ffff_ffff), 0xffff_ffff);
        assert_eq!(arg(1, 0).fit(0x1234), 0x34);
        assert_eq!(arg(8, 1).fit(u64::MAX) as i64, -1);
    }

    #[test]
    fn reads_notes() {
        // One note as GNU as writes it.
        let mut desc = Vec::new();
        for word in [0x4722d3u64, 0x792ea0, 0x88595e] {
            desc.extend_from_slice(&word.to_le_bytes());
        }
        desc.extend_from_slice(b"postgresql\0query__start\08@%rbx\0");
        let mut note = Vec::new();
        for word in [8u32, desc.len() as u32, 3] {
            note.extend_from_slice(&word.to_le_bytes());
        }
        note.extend_from_slice(b"stapsdt\0");
        note.extend_from_slice(&desc);
        note.resize(note.len().next_multiple_of(4), 0);
        let notes: Vec<_> = parse_notes(&note).collect::<Result<_>>().unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].pc, notes[0].semaphore), (0x4722d3, 0x88595e));
        assert_eq!(
            (notes[0].provider, notes[0].name, notes[0].args),
            ("postgresql", "query__start", "8@%rbx")
        );
    }
}
