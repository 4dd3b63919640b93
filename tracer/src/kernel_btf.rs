//! The running kernel's BTF, read lean: the few facts tracer needs (struct member offsets, enum
//! values, which BTF tracepoints exist) without materialising the 150k types of a vmlinux.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Where the kernel publishes its BTF; `TRACER_BTF` overrides it (like `BPFTRACE_BTF`), e.g. for
/// a container that mounts the host's /sys elsewhere.
pub fn default_path() -> PathBuf {
    std::env::var_os("TRACER_BTF")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".into())
}

const MAGIC: u16 = 0xeb9f;

enum Bytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Read(bytes) => bytes,
        }
    }
}

/// Up to the first 8 bytes of a name, as one word.
fn prefix(name: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let len = name.len().min(8);
    word[..len].copy_from_slice(&name[..len]);
    u64::from_le_bytes(word)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Int = 1,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_info(info: u32) -> Option<Self> {
        use Kind::*;
        const ALL: [Kind; 19] = [
            Int, Ptr, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict, Func,
            FuncProto, Var, Datasec, Float, DeclTag, TypeTag, Enum64,
        ];
        let kind = ((info >> 24) & 0x1f) as usize;
        ALL.get(kind.checked_sub(1)?).copied()
    }

    /// Bytes that follow the 12-byte common header.
    fn extra_len(self, vlen: usize) -> usize {
        use Kind::*;
        match self {
            Int | Var | DeclTag => 4,
            Array => 12,
            Struct | Union | Datasec | Enum64 => 12 * vlen,
            Enum | FuncProto => 8 * vlen,
            Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }
}

/// One BTF type record, as it lies in the file.
#[derive(Clone, Copy)]
struct Type<'a> {
    kind: Kind,
    name_off: u32,
    info: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    extra: &'a [u8],
}

impl Type<'_> {
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    fn word(&self, index: usize) -> u32 {
        u32::from_le_bytes(self.extra[index * 4..index * 4 + 4].try_into().unwrap())
    }
}

pub struct KernelBtf {
    data: Bytes,
    strings: std::ops::Range<usize>,
    /// The records walked so far. Records vary in length, so reaching one means walking all
    /// before it; the types tracer asks for come early (ids below 20k of ~130k on 6.18), so
    /// lookups walk only as far as they need, and only a miss walks it all.
    walked: RefCell<Walked>,
}

struct Walked {
    /// Where the next record starts, and where the type section ends.
    at: usize,
    end: usize,
    /// Byte offset (in `data`) of each type record; index = type id - 1.
    types: Vec<u32>,
    /// (first 8 bytes of the name, id) of each struct and typedef: lookups scan this instead of
    /// decoding all types.
    by_name: Vec<(u64, u32)>,
}

/// Types nest no deeper than this in any kernel (typedefs, qualifiers, anonymous members);
/// lookups stop there, so that a crafted file (`TRACER_BTF`) with a cycle cannot hang them.
const MAX_DEPTH: u32 = 32;

/// Records walked at a time when a lookup needs more.
const WALK_STEP: usize = 2048;

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| {
            format!(
                "this kernel has no BTF ({} is missing): tracer needs CONFIG_DEBUG_INFO_BTF=y",
                path.display()
            )
        })?;
        // Mapping is ~50x faster than reading where the kernel allows it (Linux 6.16+).
        // SAFETY: the kernel's BTF never changes; a regular file could, which would at worst
        // garble offsets that the kernel programs then read through bpf_probe_read.
        let data = match unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) } {
            Ok(map) => Bytes::Mapped(map),
            Err(_) => Bytes::Read(std::fs::read(path)?),
        };
        Self::parse(data).with_context(|| format!("{} is not a BTF file", path.display()))
    }

    /// BTF in `data`, as if read from a file (for the fuzz targets).
    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Read(data))
    }

    fn parse(data: Bytes) -> Result<Self> {
        let word = |at: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(at..at + 4)
                    .context("truncated header")?
                    .try_into()?,
            ))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("bad magic (only little-endian BTF is supported)");
        }
        let header_len = word(4)? as usize;
        let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let type_start = header_len + type_off;
        let type_end = type_start + type_len;
        let strings = header_len + str_off..header_len + str_off + str_len;
        if type_end > data.len() || strings.end > data.len() {
            bail!("sections run past the end of the file");
        }
        Ok(Self {
            data,
            strings,
            walked: RefCell::new(Walked {
                at: type_start,
                end: type_end,
                types: Vec::new(),
                by_name: Vec::new(),
            }),
        })
    }

    /// Walks up to `count` more records; false once all are walked. A malformed record ends
    /// the walk, as if the types ended there.
    fn walk(&self, count: usize) -> bool {
        let walked = &mut *self.walked.borrow_mut();
        for _ in 0..count {
            let Some((kind, name_off, next)) = self.record(walked.at, walked.end) else {
                walked.at = walked.end;
                return false;
            };
            walked.types.push(walked.at as u32);
            if matches!(kind, Kind::Struct | Kind::Typedef) {
                let id = walked.types.len() as u32;
                walked.by_name.push((prefix(self.name(name_off)), id));
            }
            walked.at = next;
        }
        true
    }

    /// Kind, name offset and end of the record at `at`, if a whole one lies before `end`.
    fn record(&self, at: usize, end: usize) -> Option<(Kind, u32, usize)> {
        if at + 12 > end {
            return None;
        }
        let info = self.word(at + 4);
        let kind = Kind::from_info(info)?;
        let next = at + 12 + kind.extra_len((info & 0xffff) as usize);
        (next <= end).then_some((kind, self.word(at), next))
    }

    /// The little-endian word at `at`, which callers have checked lies in the data.
    fn word(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.data[at..at + 4].try_into().unwrap())
    }

    fn ty(&self, id: u32) -> Option<Type<'_>> {
        let index = (id as usize).checked_sub(1)?;
        while self.walked.borrow().types.len() <= index {
            if !self.walk(WALK_STEP) {
                break;
            }
        }
        let at = *self.walked.borrow().types.get(index)? as usize;
        // Walked records are whole.
        let (kind, name_off, next) = self.record(at, self.data.len())?;
        Some(Type {
            kind,
            name_off,
            info: self.word(at + 4),
            size_or_type: self.word(at + 8),
            extra: &self.data[at + 12..next],
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = (self.strings.start + offset as usize).min(self.strings.end);
        let rest = &self.data[start..self.strings.end];
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The first struct or typedef named `name` that `accept`s, walking only as far as needed.
    fn find(&self, kind: Kind, name: &str, accept: impl Fn(Type) -> bool) -> Option<u32> {
        debug_assert!(
            matches!(kind, Kind::Struct | Kind::Typedef),
            "only these are indexed"
        );
        let prefix = prefix(name.as_bytes());
        let mut checked = 0;
        let mut more = true;
        loop {
            let candidates: Vec<u32> = {
                let walked = self.walked.borrow();
                let new = &walked.by_name[checked..];
                checked = walked.by_name.len();
                new.iter()
                    .filter(|&&(p, _)| p == prefix)
                    .map(|&(_, id)| id)
                    .collect()
            };
            let found = candidates.into_iter().find(|&id| {
                self.ty(id).is_some_and(|ty| {
                    ty.kind == kind && self.name(ty.name_off) == name.as_bytes() && accept(ty)
                })
            });
            if found.is_some() || !more {
                return found;
            }
            more = self.walk(WALK_STEP);
        }
    }

    /// Whether the kernel has BPF ring buffers (Linux 5.8+), which carry every tool's records.
    pub fn has_ring_buffer(&self) -> bool {
        self.find(Kind::Struct, "bpf_ringbuf", |ty| ty.vlen() > 0)
            .is_some()
    }

    /// Whether programs can find a task's saved user registers with `bpf_task_pt_regs`
    /// (Linux 5.15+).
    pub fn has_task_pt_regs(&self) -> bool {
        self.enum_value("BPF_FUNC_task_pt_regs").is_some()
    }

    /// Whether uprobe programs can tell their attach points apart by a cookie (Linux 5.15+).
    pub fn has_attach_cookies(&self) -> bool {
        self.enum_value("BPF_FUNC_get_attach_cookie").is_some()
    }

    /// Byte offset of `path` (`"self.parent"`, members separated by dots) inside `struct name`,
    /// looking through anonymous structs and unions as C does.
    pub fn member_offset(&self, name: &str, path: &str) -> Result<u32> {
        let (_, offset_bits) = self.member_path(name, path)?;
        if offset_bits % 8 != 0 {
            bail!("{name}.{path} is a bit field");
        }
        Ok(offset_bits / 8)
    }

    /// (type id, bit offset) of `path` in `struct name`.
    fn member_path(&self, name: &str, path: &str) -> Result<(u32, u32)> {
        let mut ty = self
            .find(Kind::Struct, name, |ty| ty.vlen() > 0)
            .with_context(|| format!("struct {name} is not in the kernel's BTF"))?;
        let mut offset_bits = 0;
        for member in path.split('.') {
            let (member_ty, bits) = self.member(self.resolve(ty), member).with_context(|| {
                format!("struct {name} has no member {path} in the kernel's BTF")
            })?;
            offset_bits = bits
                .checked_add(offset_bits)
                .with_context(|| format!("struct {name}'s {path} is past any offset"))?;
            ty = member_ty;
        }
        Ok((ty, offset_bits))
    }

    /// Bytes between the elements of the array member `path` of `struct name`.
    pub fn array_stride(&self, name: &str, path: &str) -> Result<u32> {
        let (ty, _) = self.member_path(name, path)?;
        let array = self
            .ty(self.resolve(ty))
            .filter(|ty| ty.kind == Kind::Array)
            .with_context(|| format!("{name}.{path} is not an array"))?;
        self.size(array.word(0), 0)
            .with_context(|| format!("cannot size the elements of {name}.{path}"))
    }

    /// Value of the enumerator `name` in any enum.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        (1..).map_while(|id| self.ty(id)).find_map(|ty| {
            let stride = match ty.kind {
                Kind::Enum => 2,
                Kind::Enum64 => 3,
                _ => return None,
            };
            (0..ty.vlen()).find_map(|i| {
                (self.name(ty.word(i * stride)) == name.as_bytes()).then(|| match ty.kind {
                    Kind::Enum => ty.word(i * 2 + 1) as i32 as i64,
                    _ => (ty.word(i * 3 + 1) as u64 | (ty.word(i * 3 + 2) as u64) << 32) as i64,
                })
            })
        })
    }

    /// The C types of a BTF tracepoint's arguments (without the leading `void *__data`), e.g.
    /// `["struct task_struct *", "uid_t"]`; `None` when the kernel has no such tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let typedef = self.find(Kind::Typedef, &format!("btf_trace_{name}"), |_| true)?;
        let pointer = self.ty(self.ty(typedef)?.size_or_type)?;
        let proto = self
            .ty(pointer.size_or_type)
            .filter(|ty| ty.kind == Kind::FuncProto)?;
        Some(
            (1..proto.vlen())
                .map(|i| self.type_name(proto.word(i * 2 + 1), 0))
                .collect(),
        )
    }

    /// A type as C spells it, as far as tracepoint arguments need; `depth` types in.
    fn type_name(&self, id: u32, depth: u32) -> String {
        let Some(ty) = self.ty(id) else {
            return "void".into();
        };
        if depth > MAX_DEPTH {
            return "?".into();
        }
        let name = String::from_utf8_lossy(self.name(ty.name_off)).into_owned();
        match ty.kind {
            Kind::Ptr => format!("{} *", self.type_name(ty.size_or_type, depth + 1)),
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                self.type_name(ty.size_or_type, depth + 1)
            }
            Kind::Struct => format!("struct {name}"),
            Kind::Union => format!("union {name}"),
            Kind::Enum | Kind::Enum64 => format!("enum {name}"),
            _ => name,
        }
    }

    /// Size in bytes of a type, `depth` types in.
    fn size(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        let ty = self.ty(self.resolve(id))?;
        match ty.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Some(ty.size_or_type)
            }
            Kind::Ptr => Some(8),
            Kind::Array => self.size(ty.word(0), depth + 1)?.checked_mul(ty.word(2)),
            _ => None,
        }
    }

    /// (type id, bit offset) of member `name` of the struct or union `id`, searching anonymous
    /// members too.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        self.member_in(id, name, 0, &mut Vec::new())
    }

    /// [`Self::member`], `depth` anonymous members in. Each struct is searched once: what it
    /// holds does not depend on the way there, and a crafted file whose struct has many
    /// anonymous members of one type would otherwise take them to the power of the depth.
    fn member_in(
        &self,
        id: u32,
        name: &str,
        depth: u32,
        searched: &mut Vec<u32>,
    ) -> Option<(u32, u32)> {
        let ty = self.ty(id)?;
        if depth > MAX_DEPTH
            || !matches!(ty.kind, Kind::Struct | Kind::Union)
            || searched.contains(&id)
        {
            return None;
        }
        searched.push(id);
        (0..ty.vlen()).find_map(|i| {
            let (name_off, member_ty, offset) =
                (ty.word(i * 3), ty.word(i * 3 + 1), ty.word(i * 3 + 2));
            let offset = if ty.kind_flag() {
                offset & 0xff_ffff
            } else {
                offset
            };
            if self.name(name_off) == name.as_bytes() {
                Some((member_ty, offset))
            } else if name_off == 0 {
                let (found, inner) =
                    self.member_in(self.resolve(member_ty), name, depth + 1, searched)?;
                Some((found, offset.checked_add(inner)?))
            } else {
                None
            }
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.ty(id).map(|ty| (ty.kind, ty.size_or_type)) {
                Some((
                    Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag,
                    to,
                )) => id = to,
                _ => break,
            }
        }
        id
    }

    /// A stand-in for the kernel's BTF that holds only the `btf_trace_*` typedefs of the given
    /// tracepoints, at their real type ids, every other id padded with a one-word record.
    ///
    /// aya needs a parsed `Btf` only to look up those ids when loading BTF tracepoints; parsing
    /// the whole vmlinux BTF for that would cost ~30 ms and ~19 MB at every start.
    pub fn tracepoint_index(&self, tracepoints: &[&str]) -> Result<aya::Btf> {
        let wanted: Vec<(u32, String)> = tracepoints
            .iter()
            .filter_map(|name| {
                let typedef = format!("btf_trace_{name}");
                Some((self.find(Kind::Typedef, &typedef, |_| true)?, typedef))
            })
            .collect();
        let last = wanted.iter().map(|&(id, _)| id).max().unwrap_or(0);
        let mut strings = vec![0u8];
        let mut types = Vec::with_capacity(last as usize * 12);
        for id in 1..=last {
            let (name_off, kind) = match wanted.iter().find(|(wanted, _)| *wanted == id) {
                Some((_, name)) => {
                    let offset = strings.len() as u32;
                    strings.extend_from_slice(name.as_bytes());
                    strings.push(0);
                    (offset, Kind::Typedef)
                }
                None => (0, Kind::Ptr),
            };
            for word in [name_off, (kind as u32) << 24, 0] {
                types.extend_from_slice(&word.to_le_bytes());
            }
        }
        let mut blob = Vec::with_capacity(24 + types.len() + strings.len());
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]); // version, flags
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        Ok(aya::Btf::parse(&blob, aya::Endianness::default())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own BTF is the fixture: these facts hold on every kernel tracer supports.
    fn kernel() -> KernelBtf {
        KernelBtf::open(&default_path()).expect("tests need a kernel with BTF")
    }

    #[test]
    fn finds_member_offsets_through_nesting() {
        let btf = kernel();
        let self_offset = btf.member_offset("cgroup", "self").unwrap();
        let parent = btf.member_offset("cgroup_subsys_state", "parent").unwrap();
        assert_eq!(
            btf.member_offset("cgroup", "self.parent").unwrap(),
            self_offset + parent
        );
        // `cgroup_subsys_state.cgroup` is its first member.
        assert_eq!(
            btf.member_offset("cgroup_subsys_state", "cgroup").unwrap(),
            0
        );
        assert!(btf.member_offset("cgroup", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
    }

    #[test]
    fn finds_arrays_enums_and_tracepoint_arguments() {
        let btf = kernel();
        assert_eq!(btf.array_stride("task_struct", "comm").unwrap(), 1);
        assert_eq!(btf.array_stride("css_set", "subsys").unwrap(), 8);
        assert!(btf.array_stride("task_struct", "pid").is_err());
        assert_eq!(btf.enum_value("cpuset_cgrp_id"), Some(0));
        assert_eq!(btf.enum_value("no_such_enumerator"), None);
        assert_eq!(
            btf.tracepoint_args("sched_process_exec").unwrap(),
            ["struct task_struct *", "pid_t", "struct linux_binprm *"]
        );
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
    }

    /// BTF of the given types: (name, kind, vlen, size or type, the words after).
    fn btf_of(types: &[(&str, Kind, u32, u32, &[u32])]) -> Vec<u8> {
        let (mut records, mut strings) = (Vec::new(), vec![0u8]);
        for &(name, kind, vlen, size_or_type, extra) in types {
            let name_off = if name.is_empty() {
                0
            } else {
                strings.len() as u32
            };
            strings.extend(name.bytes().chain([0]));
            for word in [name_off, (kind as u32) << 24 | vlen, size_or_type]
                .iter()
                .chain(extra)
            {
                records.extend(word.to_le_bytes());
            }
        }
        let mut blob = MAGIC.to_le_bytes().to_vec();
        blob.extend([1, 0]);
        let lengths = [24, 0, records.len() as u32, records.len() as u32];
        for word in lengths.into_iter().chain([strings.len() as u32]) {
            blob.extend(word.to_le_bytes());
        }
        blob.extend(records);
        blob.extend(strings);
        blob
    }

    /// A crafted file (`TRACER_BTF`) whose types refer to themselves gets answers, not a hang
    /// or a stack overflow (found by fuzzing).
    #[test]
    fn types_that_refer_to_themselves_end_lookups() {
        let btf = KernelBtf::from_bytes(btf_of(&[
            // 1: a typedef of itself; 2: a struct whose anonymous member is 3, a typedef of 2.
            ("loop", Kind::Typedef, 0, 1, &[]),
            ("task_struct", Kind::Struct, 2, 8, &[0, 3, 0, 0, 4, 0]),
            ("again", Kind::Typedef, 0, 2, &[]),
            // 4: an array of itself; 5: a pointer to itself, the tracepoint's argument.
            ("", Kind::Array, 0, 0, &[4, 1, 2]),
            ("", Kind::Ptr, 0, 5, &[]),
            ("", Kind::FuncProto, 2, 0, &[0, 0, 0, 5]),
            ("", Kind::Ptr, 0, 6, &[]),
            ("btf_trace_spin", Kind::Typedef, 0, 7, &[]),
        ]))
        .unwrap();
        assert!(btf.member_offset("task_struct", "pid").is_err());
        assert!(btf.array_stride("task_struct", "").is_err());
        let args = btf.tracepoint_args("spin").unwrap();
        assert!(
            args[0].starts_with("? *") && args[0].ends_with('*'),
            "{args:?}"
        );
    }

    /// A struct with anonymous members that are all the same struct, nested: searched once
    /// each, not 8^32 times (found by fuzzing: a 467-byte file hung startup).
    #[test]
    fn anonymous_members_of_one_type_are_searched_once() {
        let anonymous: Vec<u32> = (0..8).flat_map(|_| [0, 2, 0]).collect();
        let btf = KernelBtf::from_bytes(btf_of(&[
            ("task_struct", Kind::Struct, 8, 8, &anonymous),
            ("", Kind::Struct, 8, 8, &anonymous),
        ]))
        .unwrap();
        let (answer, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || answer.send(btf.member_offset("task_struct", "pid").is_err()));
        let waited = answered.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(waited, Ok(true), "the lookup hung");
    }

    #[test]
    fn tracepoint_index_keeps_the_kernels_type_ids() {
        let btf = kernel();
        let id = btf
            .find(Kind::Typedef, "btf_trace_sched_switch", |_| true)
            .unwrap();
        let index = btf
            .tracepoint_index(&["sched_switch", "no_such_tracepoint"])
            .unwrap();
        let found = index
            .id_by_type_name_kind("btf_trace_sched_switch", aya_obj::btf::BtfKind::Typedef)
            .unwrap();
        assert_eq!(found, id);
    }

    #[test]
    fn walks_only_as_far_as_lookups_need() {
        let btf = kernel();
        btf.member_offset("task_struct", "pid").unwrap();
        let walked = btf.walked.borrow().types.len();
        assert!(walked > 0);
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
        let all = btf.walked.borrow().types.len();
        assert!(walked < all, "{walked} of {all} walked for task_struct");
        assert_eq!(btf.walked.borrow().at, btf.walked.borrow().end);
    }

    #[test]
    fn tells_a_kernel_without_ring_buffers() {
        assert!(kernel().has_ring_buffer());
        // As old a kernel as this question goes: its one struct is not bpf_ringbuf.
        let strings = b"\0task_struct\0";
        let mut types = Vec::new();
        for word in [1u32, (Kind::Struct as u32) << 24 | 1, 8, 1, 0, 0] {
            types.extend_from_slice(&word.to_le_bytes());
        }
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for word in [24, 0, types.len(), types.len(), strings.len()] {
            blob.extend_from_slice(&(word as u32).to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        let old = KernelBtf::parse(Bytes::Read(blob)).unwrap();
        assert!(old.find(Kind::Struct, "task_struct", |_| true).is_some());
        assert!(!old.has_ring_buffer());
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(KernelBtf::parse(Bytes::Read(vec![0; 64])).is_err());
    }
}
