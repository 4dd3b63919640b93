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
}
