//! Names for flag and enum values, taken from the kernel's own tracepoint formats.
//!
//! gfp bits move between kernel versions and configurations, so a compiled-in table would be
//! wrong somewhere. Every tracepoint that prints flags carries the kernel's table in its
//! `print fmt` (`__print_flags(REC->gfp_flags, "|", {mask, "NAME"}, ...)`), the same table
//! `perf` and `trace-cmd` decode with; tracer reads it from there.

/// Named values in the kernel's order, as `__print_flags` or `__print_symbolic` lists them.
#[derive(Debug, Default, Clone)]
pub struct Names {
    table: Vec<(u64, String)>,
}

impl Names {
    /// The table of the `__print_flags(...)` or `__print_symbolic(...)` call on `field` in a
    /// tracepoint's print fmt; empty when there is none.
    pub fn from_print_fmt(print_fmt: &str, call: &str, field: &str) -> Self {
        let needle = format!("{call}(REC->{field},");
        let table = print_fmt
            .find(&needle)
            .and_then(|start| parse_table(&print_fmt[start + needle.len()..]))
            .unwrap_or_default();
        Self { table }
    }

    /// Flags as `__print_flags` prints them: each named mask fully present, in table order,
    /// is printed and removed; leftover bits are printed in hex.
    pub fn flags(&self, value: u64) -> String {
        if value == 0 {
            return "none".into();
        }
        let mut left = value;
        let mut names = Vec::new();
        for (mask, name) in &self.table {
            if *mask != 0 && left & mask == *mask {
                names.push(name.clone());
                left &= !mask;
            }
        }
        if left != 0 {
            names.push(format!("{left:#x}"));
        }
        names.join("|")
    }

    /// The name of a 32-bit value, whether the table wrote it as unsigned or as negative.
    pub fn symbol32(&self, value: u32) -> String {
        let negative = value as i32 as i64 as u64;
        self.table
            .iter()
            .find(|(known, _)| *known == value as u64 || *known == negative)
            .map_or_else(|| value.to_string(), |(_, name)| name.clone())
    }

    /// The value the table names `name`.
    pub fn value(&self, name: &str) -> Option<u64> {
        self.table
            .iter()
            .find(|(_, known)| known == name)
            .map(|(value, _)| *value)
    }

    /// The name of one value, as `__print_symbolic` prints it, or the number itself.
    pub fn symbol(&self, value: u64) -> String {
        self.table
            .iter()
            .find(|(known, _)| *known == value)
            .map_or_else(|| value.to_string(), |(_, name)| name.clone())
    }
}

/// Parses `"|", {expr, "NAME"}, ..., { 0, ((void *)0) } )` (the delimiter is absent for
/// `__print_symbolic`).
fn parse_table(text: &str) -> Option<Vec<(u64, String)>> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    if matches!(parser.peek(), Some(Token::Str(_))) {
        parser.next();
        parser.expect(&Token::Punct(","))?;
    }
    let mut table = Vec::new();
    while parser.peek() == Some(&Token::Punct("{")) {
        parser.next();
        let value = parser.expression()?;
        parser.expect(&Token::Punct(","))?;
        match parser.next()? {
            Token::Str(name) => table.push((value, name)),
            // The terminating `{ 0, NULL }` / `{ -1, NULL }` entry.
            _ => break,
        }
        parser.expect(&Token::Punct("}"))?;
        if parser.peek() == Some(&Token::Punct(",")) {
            parser.next();
        }
    }
    Some(table)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(u64),
    Ident(String),
    Str(String),
    Punct(&'static str),
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    const PUNCTS: [&str; 13] = [
        "<<", ">>", "(", ")", "{", "}", ",", "|", "&", "~", "*", "-", "+",
    ];
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    let mut depth = 0i32;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let end = rest[1..].find('"')? + 1;
            let text = &rest[1..end];
            // Adjacent literals concatenate, as in C: "KVM_EXIT_" "IO".
            match tokens.last_mut() {
                Some(Token::Str(previous)) => previous.push_str(text),
                _ => tokens.push(Token::Str(text.to_owned())),
            }
            rest = &rest[end + 1..];
        } else if c.is_ascii_digit() {
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let literal = rest[..end].trim_end_matches(['u', 'U', 'l', 'L']);
            let number = match literal.strip_prefix("0x").or(literal.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => literal.parse().ok()?,
            };
            tokens.push(Token::Number(number));
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Ident(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            let punct = PUNCTS.into_iter().find(|p| rest.starts_with(p))?;
            match punct {
                "(" | "{" => depth += 1,
                ")" | "}" => depth -= 1,
                _ => {}
            }
            tokens.push(Token::Punct(punct));
            rest = &rest[punct.len()..];
            if depth < 0 {
                break; // the `)` closing the call
            }
        }
        rest = rest.trim_start();
    }
    Some(tokens)
}

/// Precedence climbing over the C operators that flag tables use: `|`, `&`, `<<`, `>>`, `+`,
/// `~`, unary `-`, parentheses and casts such as `( gfp_t)` or `(unsigned long)`.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, token: &Token) -> Option<()> {
        (self.next().as_ref() == Some(token)).then_some(())
    }

    fn expression(&mut self) -> Option<u64> {
        self.binary(0)
    }

    fn binary(&mut self, min_precedence: u8) -> Option<u64> {
        let mut left = self.unary()?;
        loop {
            let (precedence, op) = match self.peek() {
                Some(Token::Punct(op @ ("|" | "&" | "<<" | ">>" | "+"))) => {
                    let precedence = match *op {
                        "|" => 1,
                        "&" => 2,
                        "+" => 4,
                        _ => 3,
                    };
                    (precedence, *op)
                }
                _ => return Some(left),
            };
            if precedence < min_precedence {
                return Some(left);
            }
            self.next();
            let right = self.binary(precedence + 1)?;
            left = match op {
                "|" => left | right,
                "&" => left & right,
                "+" => left.wrapping_add(right),
                "<<" => left.checked_shl(u32::try_from(right).ok()?)?,
                _ => left.checked_shr(u32::try_from(right).ok()?)?,
            };
        }
    }

    fn unary(&mut self) -> Option<u64> {
        match self.next()? {
            Token::Number(n) => Some(n),
            Token::Punct("~") => Some(!self.unary()?),
            Token::Punct("-") => Some(self.unary()?.wrapping_neg()),
            Token::Punct("(") if self.is_cast() => {
                while self.next()? != Token::Punct(")") {}
                self.unary()
            }
            Token::Punct("(") => {
                let value = self.expression()?;
                self.expect(&Token::Punct(")"))?;
                Some(value)
            }
            _ => None,
        }
    }

    /// After `(`: only type words and `*` up to the `)`.
    fn is_cast(&self) -> bool {
        let rest = &self.tokens[self.at..];
        let end = rest.iter().position(|t| *t == Token::Punct(")"));
        end.is_some_and(|end| {
            end > 0
                && rest[..end]
                    .iter()
                    .all(|t| matches!(t, Token::Ident(_) | Token::Punct("*")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged from mm_vmscan_direct_reclaim_begin on Linux 6.18.
    const GFP_FMT: &str = r#""order=%d gfp_flags=%s", REC->order, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)), "GFP_HIGHUSER_MOVABLE"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)((( gfp_t)((((1UL))) << (11))) | (( gfp_t)((((1UL))) << (13)))), "GFP_NOWAIT"}, {( unsigned long)(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))), "__GFP_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}, {( unsigned long)(( gfp_t)((((1UL))) << (13))), "__GFP_NOWARN"}, {( unsigned long)(( gfp_t)((((1UL))) << (18))), "__GFP_COMP"}, { 0, ((void *)0) } ) : "none""#;

    #[test]
    fn reads_the_kernels_gfp_table() {
        let names = Names::from_print_fmt(GFP_FMT, "__print_flags", "gfp_flags");
        assert_eq!(names.table.len(), 7);
        assert_eq!(
            names.table[0],
            (0x100cca, "GFP_HIGHUSER_MOVABLE".to_owned())
        );
        assert_eq!(names.table[1], (0xcc0, "GFP_KERNEL".to_owned()));
    }

    #[test]
    fn decodes_like_print_flags() {
        let names = Names::from_print_fmt(GFP_FMT, "__print_flags", "gfp_flags");
        assert_eq!(names.flags(0x100cca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(names.flags(0x140cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
        assert_eq!(names.flags(0xcc0 | 1 << 13), "GFP_KERNEL|__GFP_NOWARN");
        // Bits without a name are kept, in hex.
        assert_eq!(names.flags(0xcc0 | 1 << 30), "GFP_KERNEL|0x40000000");
        assert_eq!(names.flags(0), "none");
    }

    #[test]
    fn decodes_writeback_reasons() {
        let fmt = r#""bdi %s: sb_dev %d:%d nr_pages=%ld sync_mode=%d kupdate=%d range_cyclic=%d background=%d reason=%s cgroup_ino=%lu", REC->name, ((unsigned int) ((REC->sb_dev) >> 20)), ((unsigned int) ((REC->sb_dev) & ((1U << 20) - 1))), REC->nr_pages, REC->sync_mode, REC->for_kupdate, REC->range_cyclic, REC->for_background, __print_symbolic(REC->reason, { 0, "background" }, { 1, "vmscan" }, { 2, "sync" }, { 3, "periodic" }, { 4, "laptop_timer" }, { 5, "fs_free_space" }, { 6, "forker_thread" }, { 7, "foreign_flush" }), (unsigned long)REC->cgroup_ino"#;
        let names = Names::from_print_fmt(fmt, "__print_symbolic", "reason");
        let decoded: Vec<String> = (0..9).map(|reason| names.symbol(reason)).collect();
        assert_eq!(
            decoded,
            [
                "background",
                "vmscan",
                "sync",
                "periodic",
                "laptop_timer",
                "fs_free_space",
                "forker_thread",
                "foreign_flush",
                "8"
            ]
        );
    }

    #[test]
    fn tolerates_what_it_cannot_read() {
        assert!(
            Names::from_print_fmt("\"x=%d\", REC->x", "__print_flags", "x")
                .table
                .is_empty()
        );
        let broken = r#"__print_flags(REC->f, "|", {( unsigned long)(1 +), "A"})"#;
        let names = Names::from_print_fmt(broken, "__print_flags", "f");
        assert!(names.table.is_empty());
        assert_eq!(names.flags(5), "0x5");
    }
}
