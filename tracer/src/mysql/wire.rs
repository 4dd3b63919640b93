//! MySQL's client protocol where it differs between the servers: a `COM_QUERY` from a MySQL
//! 8.0.23+ client to a MySQL server that offers `CLIENT_QUERY_ATTRIBUTES` puts the query's
//! attributes before its text (a parameter count, a parameter-set count of 1, then the
//! parameters: null bitmap, types and names, values). MariaDB offers no attributes; a MySQL
//! connection whose client asked for none sends its text alone.

/// The SQL text of a `COM_QUERY` payload (past its command byte): past the attributes where
/// the payload begins with them (text cannot: its second byte is never 1, the parameter-set
/// count). Empty where the attributes run past the bytes read.
pub fn query_text(payload: &[u8]) -> &[u8] {
    match payload {
        [count, 1, ..] if *count <= 0xfa || *count >= 0xfc => {
            attributes_end(payload).map_or(&[], |end| &payload[end..])
        }
        _ => payload,
    }
}

/// Whom a connection serves, from the handshake response (`HandshakeResponse41`) its client
/// sent: the user, and the database it asked for. `None` for anything else (a large command's
/// later part read where a response could be): the fixed part must be a 4.1 client's, with its
/// filler zero (MariaDB's clients put their capabilities in the filler's last 4 bytes).
pub fn login(payload: &[u8]) -> Option<(String, Option<String>)> {
    const PROTOCOL_41: u32 = 0x200;
    const CONNECT_WITH_DB: u32 = 0x8;
    const SECURE_CONNECTION: u32 = 0x8000;
    const LENENC_AUTH: u32 = 0x20_0000;
    let mut read = Reader {
        bytes: payload,
        at: 0,
    };
    let capabilities = u32::from_le_bytes(read.take(4)?.try_into().ok()?);
    let fixed = read.take(28)?;
    if capabilities & PROTOCOL_41 == 0 || fixed[5..24].iter().any(|&byte| byte != 0) {
        return None;
    }
    let user = read.nul_terminated()?;
    if capabilities & LENENC_AUTH != 0 {
        let len = read.lenenc()?;
        read.take(usize::try_from(len).ok()?)?;
    } else if capabilities & SECURE_CONNECTION != 0 {
        let len = read.byte()?;
        read.take(len.into())?;
    } else {
        read.nul_terminated()?;
    }
    let database = match capabilities & CONNECT_WITH_DB {
        0 => None,
        _ => Some(read.nul_terminated()?).filter(|name| !name.is_empty()),
    };
    Some((user, database))
}

/// The user and database of a `COM_CHANGE_USER` payload (past its command byte): the user, an
/// authentication response of a length byte's length, the database.
pub fn change_user(payload: &[u8]) -> Option<(String, Option<String>)> {
    let mut read = Reader {
        bytes: payload,
        at: 0,
    };
    let user = read.nul_terminated()?;
    let len = read.byte()?;
    read.take(len.into())?;
    let database = read.nul_terminated()?;
    Some((user, Some(database).filter(|name| !name.is_empty())))
}

/// The schema a `USE` statement switches to.
pub fn use_statement(text: &str) -> Option<&str> {
    let text = text.trim().trim_end_matches(';').trim_end();
    let (keyword, name) = text.split_once(|c: char| c.is_ascii_whitespace())?;
    if !keyword.eq_ignore_ascii_case("use") {
        return None;
    }
    let name = name.trim();
    let name = (name
        .strip_prefix('`')
        .and_then(|name| name.strip_suffix('`')))
    .unwrap_or(name);
    Some(name).filter(|name| !name.is_empty())
}

/// Where the query attributes at the start of `payload` end.
fn attributes_end(payload: &[u8]) -> Option<usize> {
    let mut read = Reader {
        bytes: payload,
        at: 0,
    };
    let count = read.lenenc()?;
    if read.lenenc()? != 1 {
        return None;
    }
    if count == 0 {
        return Some(read.at);
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= payload.len())?;
    let nulls = read.take(count.div_ceil(8))?.to_vec();
    // Types and names are sent with the values (the flag is always 1 in a COM_QUERY).
    if read.byte()? != 1 {
        return None;
    }
    let mut types = Vec::with_capacity(count);
    for _ in 0..count {
        let [kind, _flags] = read.take(2)?.try_into().ok()?;
        types.push(kind);
        let name = read.lenenc()?;
        read.take(usize::try_from(name).ok()?)?;
    }
    for (i, kind) in types.into_iter().enumerate() {
        if nulls[i / 8] & (1 << (i % 8)) == 0 {
            read.value(kind)?;
        }
    }
    Some(read.at)
}

/// Reads the protocol's integers and strings, `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A string ended by a NUL.
    fn nul_terminated(&mut self) -> Option<String> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|&byte| byte == 0)?;
        self.at += len + 1;
        Some(String::from_utf8_lossy(&rest[..len]).into_owned())
    }

    /// A length-encoded integer.
    fn lenenc(&mut self) -> Option<u64> {
        let len = match self.byte()? {
            small @ 0..=0xfa => return Some(small.into()),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return None,
        };
        let mut value = [0u8; 8];
        value[..len].copy_from_slice(self.take(len)?);
        Some(u64::from_le_bytes(value))
    }

    /// A parameter's value in the binary protocol, by its type (`enum_field_types`).
    fn value(&mut self, kind: u8) -> Option<()> {
        let len = match kind {
            // TINY; SHORT, YEAR; LONG, INT24, FLOAT; LONGLONG, DOUBLE; NULL.
            1 => 1,
            2 | 13 => 2,
            3 | 9 | 4 => 4,
            8 | 5 => 8,
            6 => 0,
            // TIMESTAMP, DATE, TIME, DATETIME: a length byte, then that many.
            7 | 10..=12 => self.byte()?.into(),
            // Strings, decimals, blobs, JSON, BIT, ...: length-encoded.
            _ => usize::try_from(self.lenenc()?).ok()?,
        };
        self.take(len).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real packets, past their command byte, captured off a server's socket (the fuzz seeds
    /// `captured-*`; docs/fuzzing.md says how).
    #[test]
    fn captured_payloads_give_their_texts() {
        macro_rules! captured {
            ($name:literal) => {
                &include_bytes!(concat!("../../fuzz/seeds/mysql_wire/captured-", $name))[..]
            };
        }
        // MySQL 9.7's mysql client: an empty attribute set before each text.
        assert_eq!(
            query_text(captured!("mysql97-client-3")),
            b"SELECT @@version"
        );
        // Connector/Python 26.10: two string attributes; then a string and an unsigned one.
        assert_eq!(
            query_text(captured!("mysql97-attributes-2")),
            b"SELECT 99, 'x'"
        );
        assert_eq!(query_text(captured!("mysql97-attributes-3")), b"SELECT 1");
        // MariaDB's client: no attributes.
        assert_eq!(
            query_text(captured!("mariadb-client-1")),
            b"SELECT @@version"
        );
        // What Connector/Python sent for a NULL attribute, and MySQL 9.7 refused as a
        // malformed packet: no text rather than a wrong one.
        assert_eq!(query_text(captured!("mysql97-malformed-attributes-3")), b"");
    }

    /// A handshake response as the protocol lays it out: capabilities, max packet, charset,
    /// a filler of 23 bytes, the user, the authentication response, the database.
    fn response(capabilities: u32, filler_end: [u8; 4], auth: &[u8], database: &str) -> Vec<u8> {
        let mut packet = capabilities.to_le_bytes().to_vec();
        packet.extend(16_777_216u32.to_le_bytes());
        packet.push(255);
        packet.extend([0; 19]);
        packet.extend(filler_end);
        packet.extend(b"alice\0");
        packet.extend(auth);
        packet.extend(database.as_bytes());
        packet.push(0);
        packet.extend(b"caching_sha2_password\0");
        packet
    }

    #[test]
    fn a_handshake_response_names_the_user_and_the_database() {
        let named = |user: &str, database: Option<&str>| {
            Some((user.to_owned(), database.map(str::to_owned)))
        };
        // MySQL 8's client: length-encoded authentication data, a database asked for.
        let mysql = response(0x00af_a20d, [0; 4], &[3, 1, 2, 3], "shop");
        assert_eq!(login(&mysql), named("alice", Some("shop")));
        // MariaDB's client: its own capabilities at the filler's end; a length byte before
        // the authentication data; no database (CONNECT_WITH_DB unset).
        let mariadb = response(0x000a_a204 & !0x20_0000, [0x1f, 0, 0, 0], &[2, 9, 9], "");
        assert_eq!(login(&mariadb), named("alice", None));
        // A large command's later part, and a packet cut short: nothing.
        let mut later = mysql.clone();
        later[12] = b'x';
        assert_eq!(login(&later), None);
        assert_eq!(login(&mysql[..36]), None);
        assert_eq!(login(b"SELECT 1"), None);
    }

    #[test]
    fn change_user_and_use_name_what_follows() {
        assert_eq!(
            change_user(b"bob\0\x02abcrm\0\x21\0"),
            Some(("bob".to_owned(), Some("crm".to_owned())))
        );
        assert_eq!(change_user(b"bob"), None);
        assert_eq!(use_statement("USE shop"), Some("shop"));
        assert_eq!(use_statement("use `crm`;"), Some("crm"));
        assert_eq!(use_statement("  Use\tx ; "), Some("x"));
        assert_eq!(use_statement("USER()"), None);
        assert_eq!(use_statement("SELECT 1"), None);
        assert_eq!(use_statement("USE"), None);
    }

    #[test]
    fn text_alone_is_left_as_it_is() {
        for text in [&b"SELECT 1"[..], b"S", b"", b"\x01", b"(SELECT 1)"] {
            assert_eq!(query_text(text), text);
        }
    }

    /// What MySQL 9.7's `mysql` client sent a MySQL 9.7 server (captured off the socket by
    /// tracer): no attributes, one parameter set.
    #[test]
    fn an_empty_attribute_set_goes() {
        assert_eq!(query_text(b"\x00\x01SELECT 99"), b"SELECT 99");
    }

    /// `query_attributes trace_id 42 tenant acme` in the `mysql` client, then a query: two
    /// string attributes (MYSQL_TYPE_STRING = 254), neither NULL.
    #[test]
    fn attributes_with_values_go() {
        let mut payload = vec![2, 1, 0b00, 1];
        for name in ["trace_id", "tenant"] {
            payload.extend([254, 0, name.len() as u8]);
            payload.extend(name.as_bytes());
        }
        for value in ["42", "acme"] {
            payload.push(value.len() as u8);
            payload.extend(value.as_bytes());
        }
        payload.extend(b"SELECT 1");
        assert_eq!(query_text(&payload), b"SELECT 1");
    }

    /// A NULL attribute has no value; fixed-size types have no length.
    #[test]
    fn null_and_fixed_size_values() {
        let mut payload = vec![3, 1, 0b010, 1];
        for (kind, name) in [(8u8, "n"), (254, "gone"), (1, "t")] {
            payload.extend([kind, 0, name.len() as u8]);
            payload.extend(name.as_bytes());
        }
        payload.extend(7u64.to_le_bytes());
        payload.push(5);
        payload.extend(b"DO 1");
        assert_eq!(query_text(&payload), b"DO 1");
    }

    /// Attributes cut short (a record holds the payload's first bytes only) leave no text
    /// rather than protocol bytes shown as text.
    #[test]
    fn cut_attributes_leave_no_text() {
        let payload = [1, 1, 0, 1, 254, 0, 200, b'x'];
        assert_eq!(query_text(&payload), b"");
    }

    /// A query attribute as a MySQL 8.0.23+ client sends it: type, name, value or NULL.
    #[derive(Clone, Debug)]
    struct Attribute {
        kind: u8,
        name: Vec<u8>,
        value: Option<Vec<u8>>,
    }

    fn attribute() -> impl proptest::strategy::Strategy<Value = Attribute> {
        use proptest::prelude::*;
        // Fixed sizes by type, 0 for the length-prefixed ones.
        let kind = prop::sample::select(vec![
            1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 246, 252, 253, 254,
        ]);
        (
            kind,
            prop::collection::vec(any::<u8>(), 0..12),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, name, null, mut value)| {
                let fixed = match kind {
                    1 => Some(1),
                    2 | 13 => Some(2),
                    3 | 9 | 4 => Some(4),
                    8 | 5 => Some(8),
                    6 => Some(0),
                    7 | 10..=12 => Some(value.len().min(11)),
                    // Lengths up to 300 take the 1- and 3-byte length encodings.
                    _ => None,
                };
                if let Some(len) = fixed {
                    value.resize(len, 0);
                }
                Attribute {
                    kind,
                    name,
                    value: (!null).then_some(value),
                }
            })
    }

    fn lenenc(out: &mut Vec<u8>, n: usize) {
        match n {
            0..=0xfa => out.push(n as u8),
            0xfb..=0xffff => {
                out.push(0xfc);
                out.extend((n as u16).to_le_bytes());
            }
            _ => {
                out.push(0xfd);
                out.extend(&(n as u32).to_le_bytes()[..3]);
            }
        }
    }

    /// The COM_QUERY payload (past its command byte) of `text` with `attributes`.
    fn encode(attributes: &[Attribute], text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lenenc(&mut out, attributes.len());
        out.push(1);
        if !attributes.is_empty() {
            let mut nulls = vec![0u8; attributes.len().div_ceil(8)];
            for (i, attribute) in attributes.iter().enumerate() {
                if attribute.value.is_none() {
                    nulls[i / 8] |= 1 << (i % 8);
                }
            }
            out.extend(nulls);
            out.push(1);
            for attribute in attributes {
                out.extend([attribute.kind, 0]);
                lenenc(&mut out, attribute.name.len());
                out.extend(&attribute.name);
            }
            for attribute in attributes {
                let Some(value) = &attribute.value else {
                    continue;
                };
                match attribute.kind {
                    1..=6 | 8 | 9 | 13 => {}
                    7 | 10..=12 => out.push(value.len() as u8),
                    _ => lenenc(&mut out, value.len()),
                }
                out.extend(value);
            }
        }
        out.extend(text);
        out
    }

    proptest::proptest! {
        /// Whatever the attributes, the text is what follows them.
        #[test]
        fn the_text_follows_any_attributes(
            attributes in proptest::collection::vec(attribute(), 0..12),
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let payload = encode(&attributes, &text);
            proptest::prop_assert_eq!(query_text(&payload), &text[..]);
        }

        /// Cut anywhere past its first byte (alone, that could be a one-letter text), a
        /// payload gives its text's start or nothing, never protocol bytes.
        #[test]
        fn a_cut_payload_gives_part_of_the_text_or_none(
            attributes in proptest::collection::vec(attribute(), 1..6),
            text in "[A-Z ]{1,32}",
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let payload = encode(&attributes, text.as_bytes());
            let cut = &payload[..2 + at.index(payload.len() - 1)];
            let got = query_text(cut);
            proptest::prop_assert!(text.as_bytes().starts_with(got), "{got:?}");
        }
    }
}
