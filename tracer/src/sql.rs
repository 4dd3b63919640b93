//! SQL text normalized the way pg_stat_statements and performance_schema's digests group
//! queries: literals become `?`, lists of them in `IN (...)` collapse, comments go and
//! whitespace shrinks. Query literals can hold secrets, so only normalized text is shown unless
//! the user asks for raw text.

/// Whose SQL: the lexical rules that differ between the servers tracer reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `"` quotes identifiers; `--` always starts a comment; `E''` strings take backslash
    /// escapes; `$tag$` quotes strings.
    #[default]
    Postgres,
    /// MySQL and MariaDB (default sql_mode): `` ` `` quotes identifiers and `"` strings;
    /// `#` and `-- ` (with a space) start comments; backslashes escape in every string.
    Mysql,
}

/// Query text as read off a server: valid UTF-8 but where it was cut inside a character.
/// Validated the fast way first: `from_utf8_lossy` alone walks it a byte at a time, which was
/// a tenth of `tracer pg`'s own CPU time.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The normalized form of `query`.
#[cfg(test)]
pub fn normalize(query: &str) -> String {
    Normalizer::default().normalize(query).to_owned()
}

/// Normalizes into buffers it keeps, so that the hot path allocates nothing.
#[derive(Default)]
pub struct Normalizer {
    dialect: Dialect,
    out: String,
    scratch: String,
}

impl Normalizer {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            ..Self::default()
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn normalize(&mut self, query: &str) -> &str {
        normalize_into(query, self.dialect, &mut self.out);
        if find_in_list(&self.out).is_some() {
            collapse_lists(&self.out, &mut self.scratch);
            std::mem::swap(&mut self.out, &mut self.scratch);
        }
        &self.out
    }
}

/// The statements of a query that holds several (a multi-statement Query message, MySQL's
/// multi-statements), split at the semicolons between them (not in strings, quoted names or
/// comments), empty ones left out; a query of one statement is returned whole. A CREATE with a
/// BEGIN block (PostgreSQL's BEGIN ATOMIC bodies, MySQL's procedures and triggers) ends the
/// splitting: the semicolons after it are its own.
pub fn statements(query: &str, dialect: Dialect) -> Vec<&str> {
    if single_statement(query) {
        return vec![query];
    }
    let mysql = dialect == Dialect::Mysql;
    let bytes = query.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let (c, rest) = (bytes[i], &query[i..]);
        i = if is_line_comment(rest, mysql) {
            i + rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            i + rest.find("*/").map_or(rest.len(), |end| end + 2)
        } else if (c == b'"' && !mysql) || (c == b'`' && mysql) {
            i + rest[1..].find(c as char).map_or(rest.len(), |end| end + 2)
        } else if c == b'\'' || (c == b'"' && mysql) {
            let escapes = mysql || (i > 0 && matches!(bytes[i - 1], b'E' | b'e'));
            string_end(bytes, i, escapes)
        } else if c == b'$' && !mysql && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            dollar_quote_end(query, i).unwrap_or(i + 1)
        } else if c == b';' {
            let piece = &query[start..i];
            if has_begin_block(piece) {
                break;
            }
            pieces.push(piece);
            start = i + 1;
            i + 1
        } else {
            i + rest.chars().next().map_or(1, char::len_utf8)
        };
    }
    pieces.push(&query[start..]);
    pieces.retain(|piece| !piece.trim().is_empty());
    if pieces.len() <= 1 {
        return vec![query];
    }
    pieces
}

/// Whether `query` surely holds one statement, at a glance: no semicolon but a trailing one
/// (the common case, checked without lexing).
pub fn single_statement(query: &str) -> bool {
    !query.trim_end().trim_end_matches(';').contains(';')
}

/// Whether `statement` creates something whose body is a BEGIN block.
fn has_begin_block(statement: &str) -> bool {
    let mut words = statement
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|word| !word.is_empty());
    words
        .next()
        .is_some_and(|word| word.eq_ignore_ascii_case("create"))
        && words.any(|word| word.eq_ignore_ascii_case("begin"))
}

fn normalize_into(query: &str, dialect: Dialect, out: &mut String) {
    out.clear();
    let mysql = dialect == Dialect::Mysql;
    let bytes = query.as_bytes();
    let mut i = 0;
    let mut pending_space = false;
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &query[i..];
        let literal_end = if c.is_ascii_whitespace() {
            i += 1;
            pending_space = !out.is_empty();
            continue;
        } else if is_line_comment(rest, mysql) {
            i += rest.find('\n').unwrap_or(rest.len());
            pending_space = !out.is_empty();
            continue;
        } else if let Some(comment) = rest.strip_prefix("/*") {
            i += comment.find("*/").map_or(rest.len(), |end| end + 4);
            pending_space = !out.is_empty();
            continue;
        } else if (c == b'"' && !mysql) || (c == b'`' && mysql) {
            // A quoted identifier, kept as it is.
            let end = rest[1..].find(c as char).map_or(rest.len(), |end| end + 2);
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push_str(&rest[..end]);
            i += end;
            continue;
        } else if c == b'\'' || (c == b'"' && mysql) {
            Some(string_end(bytes, i, mysql))
        } else if matches!(c, b'E' | b'e' | b'B' | b'b' | b'X' | b'x' | b'N' | b'n')
            && bytes.get(i + 1) == Some(&b'\'')
            && (pending_space || !continues_word(out))
        {
            Some(string_end(bytes, i + 1, mysql || matches!(c, b'E' | b'e')))
        } else if c == b'$' && !mysql && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            dollar_quote_end(query, i)
        } else if (c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            && (pending_space || !continues_word(out))
        {
            Some(number_end(bytes, i))
        } else {
            None
        };
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        match literal_end {
            Some(end) => {
                // A minus sign right after an operator or an opening belongs to the literal.
                if out.ends_with('-') && is_unary_minus(&out[..out.len() - 1]) {
                    out.pop();
                }
                out.push('?');
                i = end;
            }
            // A keyword or identifier, copied whole rather than a character at a time.
            None if c.is_ascii_alphabetic() || c == b'_' => {
                let len = bytes[i..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$'))
                    .unwrap_or(bytes.len() - i);
                out.push_str(&query[i..i + len]);
                i += len;
            }
            None => {
                let len = rest.chars().next().map_or(1, char::len_utf8);
                out.push_str(&rest[..len]);
                i += len;
            }
        }
    }
    let trimmed = out.trim_end_matches([';', ' ']).len();
    out.truncate(trimmed);
    if mysql {
        keep_minus_signs_apart(out);
    }
}

/// MySQL reads `--` before a space, a control character or the end as a comment. Where the
/// normalized text has one the query had not (a comment or a line dropped after minus signs,
/// `a --# why`), its minus signs are kept apart, so that the text reads the same every time.
fn keep_minus_signs_apart(out: &mut String) {
    if !out.contains("--") {
        return;
    }
    let mut kept = String::with_capacity(out.len() + 8);
    let mut rest = out.as_str();
    while let Some(start) = rest.find("--") {
        kept.push_str(&rest[..start]);
        let run = rest[start..].bytes().take_while(|&b| b == b'-').count();
        if rest
            .as_bytes()
            .get(start + run)
            .is_none_or(|&b| ends_mysql_dashes(b))
        {
            kept.push_str(&vec!["-"; run].join(" "));
        } else {
            kept.push_str(&rest[start..start + run]);
        }
        rest = &rest[start + run..];
    }
    kept.push_str(rest);
    *out = kept;
}

/// Whether MySQL takes `--` followed by this byte for a comment: whitespace or a control
/// character.
fn ends_mysql_dashes(byte: u8) -> bool {
    byte <= b' ' || byte == 0x7f
}

/// Whether `rest` starts a comment to the end of the line: `--` in PostgreSQL; in MySQL `#`,
/// or `--` followed by whitespace (`1--1` is arithmetic there).
fn is_line_comment(rest: &str, mysql: bool) -> bool {
    if !mysql {
        return rest.starts_with("--");
    }
    rest.starts_with('#')
        || rest
            .strip_prefix("--")
            .is_some_and(|after| after.bytes().next().is_none_or(ends_mysql_dashes))
}

/// Whether the text so far ends inside a word, so a digit continues an identifier (`t1`).
fn continues_word(out: &str) -> bool {
    out.chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// Whether a `-` after `before` is a sign rather than a subtraction.
fn is_unary_minus(before: &str) -> bool {
    let before = before.trim_end();
    match before.chars().last() {
        None => true,
        Some(c) if "(,=<>+-*/%|&^~!".contains(c) => true,
        Some(c) if c.is_alphabetic() => {
            let word: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphabetic())
                .collect();
            let word: String = word.chars().rev().collect::<String>().to_ascii_uppercase();
            [
                "SELECT", "WHERE", "AND", "OR", "NOT", "THEN", "ELSE", "WHEN", "VALUES", "SET",
                "RETURN", "LIMIT", "OFFSET", "BY", "IN", "IS", "BETWEEN", "LIKE", "AS",
            ]
            .contains(&word.as_str())
        }
        _ => false,
    }
}

/// End (exclusive) of a string quoted by the byte at `quote`; a doubled quote stands for
/// itself, and with `backslash_escapes` (MySQL's strings, PostgreSQL's E'') a backslash
/// escapes.
fn string_end(bytes: &[u8], quote: usize, backslash_escapes: bool) -> usize {
    let delimiter = bytes[quote];
    let mut i = quote + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            c if c == delimiter && bytes.get(i + 1) == Some(&delimiter) => i += 2,
            c if c == delimiter => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// End of `$tag$ ... $tag$` starting at `start`, or `None` when `$` starts no such quote.
fn dollar_quote_end(query: &str, start: usize) -> Option<usize> {
    let rest = &query[start + 1..];
    let tag_len = rest.find('$')?;
    let tag = &rest[..tag_len];
    if !tag.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let delimiter = format!("${tag}$");
    let body = start + delimiter.len();
    Some(
        query[body..]
            .find(&delimiter)
            .map_or(query.len(), |end| body + end + delimiter.len()),
    )
}

/// End of a numeric literal: digits, a fraction, an exponent, or 0x/0o/0b forms.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    let mut seen_exponent = false;
    while i < bytes.len() {
        let c = bytes[i];
        let previous = if i > start { bytes[i - 1] } else { 0 };
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' {
            seen_exponent |= matches!(c, b'e' | b'E');
            i += 1;
        } else if matches!(c, b'+' | b'-') && seen_exponent && matches!(previous, b'e' | b'E') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// `IN (?, ?, ?)` becomes `IN (...)`, however many placeholders the list had.
fn collapse_lists(text: &str, out: &mut String) {
    out.clear();
    let mut rest = text;
    while let Some(at) = find_in_list(rest) {
        let (before, list) = rest.split_at(at);
        out.push_str(before);
        let close = list.find(')').expect("found with its close");
        out.push_str("(...)");
        rest = &list[close + 1..];
    }
    out.push_str(rest);
}

/// Position of the `(` of the next `IN (` followed only by `?`, commas and spaces, then `)`.
fn find_in_list(text: &str) -> Option<usize> {
    // Most queries have no parenthesis at all: look for those first, then at what precedes.
    let is_list = |open: usize| {
        let before = text[..open].trim_end_matches(' ');
        let after_in = before.len().checked_sub(2);
        let follows_in = after_in.is_some_and(|at| {
            before.as_bytes()[at..].eq_ignore_ascii_case(b"IN") && !continues_word(&before[..at])
        });
        let inside = text[open + 1..]
            .find(')')
            .map(|close| &text[open + 1..open + 1 + close]);
        follows_in
            && inside.is_some_and(|inside| {
                inside.contains('?') && inside.bytes().all(|c| matches!(c, b'?' | b',' | b' '))
            })
    };
    text.match_indices('(')
        .map(|(open, _)| open)
        .find(|&open| is_list(open))
}

#[cfg(test)]
mod tests {
    use super::{Dialect, Normalizer, normalize, statements};

    #[test]
    fn splits_statements_at_semicolons_between_them() {
        let pg = |query| statements(query, Dialect::Postgres);
        assert_eq!(pg("SELECT 1"), ["SELECT 1"]);
        // A trailing semicolon leaves one statement, kept whole.
        assert_eq!(pg("SELECT 1;"), ["SELECT 1;"]);
        assert_eq!(
            pg("SELECT 1; SELECT 'a;b', \"c;\" -- d;\n; /* e; */ SELECT $x$;$x$;"),
            [
                "SELECT 1",
                " SELECT 'a;b', \"c;\" -- d;\n",
                " /* e; */ SELECT $x$;$x$"
            ]
        );
        assert_eq!(
            pg("SELECT E'\\';'; SELECT 2"),
            ["SELECT E'\\';'", " SELECT 2"]
        );
        assert_eq!(
            pg("SELECT 1; CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END; "),
            [
                "SELECT 1",
                " CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END; "
            ]
        );
        let mysql = |query| statements(query, Dialect::Mysql);
        assert_eq!(
            mysql("SELECT \"a;\"; SELECT `b;` # c;"),
            ["SELECT \"a;\"", " SELECT `b;` # c;"]
        );
        assert_eq!(mysql("SELECT 'ü;'; SELECT 2"), ["SELECT 'ü;'", " SELECT 2"]);
    }

    fn mysql(query: &str) -> String {
        Normalizer::new(Dialect::Mysql).normalize(query).to_owned()
    }

    #[test]
    fn reads_mysql() {
        // Backquoted identifiers stay; double quotes are strings; backslashes escape.
        assert_eq!(
            mysql(
                "SELECT `select`, `a b` FROM `t` WHERE c = \"x\" AND d = 'it\\'s' AND e = '\\\\'"
            ),
            "SELECT `select`, `a b` FROM `t` WHERE c = ? AND d = ? AND e = ?"
        );
        // `#` and `-- ` comments; `--` without a space is two minuses.
        assert_eq!(
            mysql("SELECT 1, 2 # why\nFROM t WHERE a = 5--1 -- because\n"),
            "SELECT ?, ? FROM t WHERE a = ?-?"
        );
        // Minus signs before a comment, read again, must not start one (found by fuzzing).
        assert_eq!(mysql("SELECT a,----- x"), "SELECT a,- - -");
        assert_eq!(mysql("SELECT a--#x\nFROM t"), "SELECT a- - FROM t");
        assert_eq!(mysql("SELECT a--\u{1}x\nFROM t"), "SELECT a FROM t");
        // Hex and bit literals, and IN lists of them.
        assert_eq!(
            mysql("SELECT 0x1F, X'1f', b'101', B'1' FROM t WHERE id IN (0x1, 2, 'c')"),
            "SELECT ?, ?, ?, ? FROM t WHERE id IN (...)"
        );
        // No dollar quotes in MySQL: `$` is part of identifiers.
        assert_eq!(mysql("SELECT a$b FROM t$1"), "SELECT a$b FROM t$1");
        // Same shape, same text.
        assert_eq!(
            mysql("select * from t where id in (1,2,3) and n = 'x'"),
            mysql("select  * from t where id in (4) and n = \"y\""),
        );
    }

    #[test]
    fn replaces_literals() {
        assert_eq!(
            normalize("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = ?"
        );
        assert_eq!(
            normalize("select * from t where name = 'O''Brien' and x > 1.5e-3"),
            "select * from t where name = ? and x > ?"
        );
        assert_eq!(
            normalize("SELECT E'a\\'b', $$x$$, $tag$y$tag$, x'1f'"),
            "SELECT ?, ?, ?, ?"
        );
        // `$` inside an identifier starts no dollar quote.
        assert_eq!(
            normalize("SELECT a$b$c, t1.x FROM t1 WHERE y = 2"),
            "SELECT a$b$c, t1.x FROM t1 WHERE y = ?"
        );
        assert_eq!(normalize("SELECT -1, 2 - 3, a-4"), "SELECT ?, ? - ?, a-?");
    }

    #[test]
    fn replaces_literals_after_keywords() {
        assert_eq!(normalize("select 1 + 1"), "select ? + ?");
        assert_eq!(normalize("SELECT 42"), "SELECT ?");
        assert_eq!(
            normalize("insert into t values (1, E'x')"),
            "insert into t values (?, ?)"
        );
    }

    #[test]
    fn keeps_identifiers_and_parameters() {
        assert_eq!(
            normalize("SELECT t1.c2 FROM t1 WHERE c3 = $1"),
            "SELECT t1.c2 FROM t1 WHERE c3 = $1"
        );
        assert_eq!(
            normalize("SELECT \"col 1\" FROM x"),
            "SELECT \"col 1\" FROM x"
        );
    }

    #[test]
    fn collapses_in_lists() {
        assert_eq!(
            normalize("SELECT * FROM t WHERE id IN (1,2,3)"),
            "SELECT * FROM t WHERE id IN (...)"
        );
        assert_eq!(
            normalize("SELECT * FROM t WHERE id IN (7)"),
            "SELECT * FROM t WHERE id IN (...)"
        );
        assert_eq!(
            normalize("select 1 where a in ( 'x' , 'y' ) and b IN (select c from d)"),
            "select ? where a in (...) and b IN (select c from d)"
        );
        assert_eq!(normalize("SELECT min(x) FROM t"), "SELECT min(x) FROM t");
        assert_eq!(
            normalize("SELECT min(7), 2 IN(3, 4)"),
            "SELECT min(?), ? IN(...)"
        );
        assert_eq!(normalize("SELECT f(1) IN (2"), "SELECT f(?) IN (?");
    }

    #[test]
    fn drops_comments_and_whitespace() {
        assert_eq!(
            normalize("  SELECT /* hint */ 1 -- why\n  FROM\tt ;  "),
            "SELECT ? FROM t"
        );
    }

    #[test]
    fn same_shape_same_text() {
        let shapes = [
            "SELECT * FROM t WHERE id IN (1, 2)",
            "select * from t where id in (3,4,5,6)",
        ];
        let normalized: Vec<String> = shapes
            .iter()
            .map(|q| normalize(q).to_ascii_lowercase())
            .collect();
        assert_eq!(normalized[0], normalized[1]);
    }
}

/// What users rely on, for statements of any shape: literals never show, and one shape is one
/// text.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Every literal the generator writes holds this, or is a number; keywords and identifiers
    /// hold neither it nor a digit. So a normalized text with either leaks a literal.
    const MARK: &str = "QZX";

    /// A literal's content: anything a user could put in one, the mark in the middle.
    fn content() -> impl Strategy<Value = String> {
        (
            "[a-z0-9 ;,()'\"\\\\\n#*/-]{0,5}",
            "[a-z0-9 ;,()'\"\\\\\n#*/-]{0,5}",
        )
            .prop_map(|(before, after)| format!("{before}{MARK}{after}"))
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            "[1-9][0-9]{0,6}",
            "[0-9]{1,3}\\.[0-9]{1,3}",
            "\\.[0-9]{1,3}",
            "[0-9]{1,2}[eE][+-]?[0-9]{1,2}",
        ]
    }

    /// A literal as `dialect` spells it, quoted and escaped; `signed` allows a unary minus.
    fn literal(dialect: Dialect, signed: bool) -> BoxedStrategy<String> {
        let plain = content().prop_map(move |text| match dialect {
            Dialect::Postgres => format!("'{}'", text.replace('\'', "''")),
            Dialect::Mysql => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''")),
        });
        let number = (any::<bool>(), number()).prop_map(move |(negative, number)| {
            if negative && signed {
                format!("-{number}")
            } else {
                number
            }
        });
        match dialect {
            Dialect::Postgres => prop_oneof![
                plain,
                number,
                content().prop_map(|text| format!(
                    "E'{}'",
                    text.replace('\\', "\\\\").replace('\'', "\\'")
                )),
                ("[a-z]{0,3}", content())
                    .prop_map(|(tag, text)| format!("${tag}${}${tag}$", text.replace('$', ""))),
                "[01]{1,8}".prop_map(|bits| format!("B'{bits}'")),
            ]
            .boxed(),
            Dialect::Mysql => prop_oneof![
                plain,
                number,
                content().prop_map(|text| format!(
                    "\"{}\"",
                    text.replace('\\', "\\\\").replace('"', "\\\"")
                )),
                "[0-9A-F]{1,8}".prop_map(|hex| format!("0x{hex}")),
                "([0-9A-F]{2}){1,4}".prop_map(|hex| format!("X'{hex}'")),
            ]
            .boxed(),
        }
    }

    /// Statement tokens with no literal: keywords, identifiers, operators.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "SELECT", "FROM", "WHERE", "AND", "OR", "IN", "VALUES", "INSERT", "INTO", "UPDATE",
                "SET", "LIMIT", "=", "<", ">=", ",", "(", ")", "*", "+", "-", ".",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{1,8}",
        ]
    }

    /// A statement: words and literal slots, joined by a space.
    fn shape() -> impl Strategy<Value = Vec<Option<String>>> {
        prop::collection::vec(prop_oneof![word().prop_map(Some), Just(None)], 1..16)
    }

    fn fill(shape: &[Option<String>], literals: &[String]) -> String {
        let mut literals = literals.iter().cycle();
        shape
            .iter()
            .map(|token| match token {
                Some(word) => word.as_str(),
                None => literals.next().map_or("1", String::as_str),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn statement_of(dialect: Dialect) -> impl Strategy<Value = String> {
        (shape(), prop::collection::vec(literal(dialect, true), 1..6))
            .prop_map(|(shape, literals)| fill(&shape, &literals))
    }

    fn leaks(normalized: &str) -> bool {
        normalized.contains(MARK) || normalized.bytes().any(|byte| byte.is_ascii_digit())
    }

    proptest! {
        #[test]
        fn no_literal_survives_in_postgres(query in statement_of(Dialect::Postgres)) {
            let normalized = Normalizer::new(Dialect::Postgres).normalize(&query).to_owned();
            prop_assert!(!leaks(&normalized), "{query:?} -> {normalized:?}");
        }

        #[test]
        fn no_literal_survives_in_mysql(query in statement_of(Dialect::Mysql)) {
            let normalized = Normalizer::new(Dialect::Mysql).normalize(&query).to_owned();
            prop_assert!(!leaks(&normalized), "{query:?} -> {normalized:?}");
        }

        #[test]
        fn normalizing_is_stable(query in "\\PC{0,40}", mysql: bool) {
            let mut normalizer =
                Normalizer::new(if mysql { Dialect::Mysql } else { Dialect::Postgres });
            let once = normalizer.normalize(&query).to_owned();
            prop_assert_eq!(normalizer.normalize(&once), once.as_str());
        }

        /// Two fillings of one shape, with unsigned literals (a minus after a word is
        /// arithmetic, and the shape's own).
        #[test]
        fn one_shape_is_one_text(
            shape in shape(),
            (dialect, first, second) in prop_oneof![Just(Dialect::Postgres), Just(Dialect::Mysql)]
                .prop_flat_map(|dialect| {
                    let literals = prop::collection::vec(literal(dialect, false), 8);
                    (Just(dialect), literals.clone(), literals)
                }),
        ) {
            let mut normalizer = Normalizer::new(dialect);
            let one = normalizer.normalize(&fill(&shape, &first)).to_owned();
            prop_assert_eq!(normalizer.normalize(&fill(&shape, &second)), one.as_str());
        }
    }
}
