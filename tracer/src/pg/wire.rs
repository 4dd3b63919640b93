//! The PostgreSQL frontend protocol, as far as `tracer pg --via socket` reads it: which query a
//! client request runs, from the first bytes its backend received.
//!
//! A simple-protocol request carries its text. An extended-protocol one binds a statement that
//! a Parse message named, maybe requests earlier: the texts of parsed statements are kept per
//! backend, already turned into table keys.

use std::rc::Rc;

use rustc_hash::FxHashMap;

/// What a request runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Query<'a> {
    /// A Query message's text, as sent.
    Simple(&'a [u8]),
    /// An Execute of a parsed statement: its key.
    Prepared(Rc<str>),
}

/// Backends with more than this many tracked are checked for having exited.
const BACKENDS_KEPT: usize = 4096;

/// The keys of the statements each backend parsed, by statement name.
#[derive(Default)]
pub struct Statements {
    by_backend: FxHashMap<u32, FxHashMap<Box<[u8]>, Rc<str>>>,
}

impl Statements {
    /// What the request of backend `pid` that begins with `bytes` runs, in order: each Query
    /// message's text and each Execute's statement (several in a pipeline); nothing when it
    /// only parses or describes. `complete` says whether `bytes` hold all the request's first
    /// receive; `key` turns a parsed statement's text into its key.
    pub fn request<'a>(
        &mut self,
        pid: u32,
        bytes: &'a [u8],
        complete: bool,
        mut key: impl FnMut(&[u8]) -> Rc<str>,
    ) -> Vec<Query<'a>> {
        let mut ran = Vec::new();
        // The statement the last Bind bound, while no Execute ran it.
        let mut bound: Option<&[u8]> = None;
        let mut last_bound: &[u8] = &[];
        for (kind, body) in messages(bytes) {
            match kind {
                b'Q' => ran.push(Query::Simple(c_string(body).0)),
                b'P' => {
                    let (name, rest) = c_string(body);
                    let text = c_string(rest).0;
                    self.backend(pid).insert(name.into(), key(text));
                }
                b'B' => bound = Some(c_string(c_string(body).1).0),
                b'E' => {
                    last_bound = bound.take().unwrap_or(last_bound);
                    ran.push(Query::Prepared(self.key(pid, last_bound)));
                }
                // Close of a statement.
                b'C' if body.first() == Some(&b'S') => {
                    self.backend(pid).remove(c_string(&body[1..]).0);
                }
                _ => {}
            }
        }
        // Cut short, a request that binds most likely executes further on.
        if let (Some(name), false) = (bound, complete) {
            ran.push(Query::Prepared(self.key(pid, name)));
        }
        ran
    }

    /// The key of statement `name` of backend `pid`.
    fn key(&self, pid: u32, name: &[u8]) -> Rc<str> {
        self.by_backend
            .get(&pid)
            .and_then(|statements| statements.get(name))
            .cloned()
            .unwrap_or_else(|| {
                format!(
                    "<statement {:?} parsed before tracing>",
                    String::from_utf8_lossy(name)
                )
                .into()
            })
    }

    fn backend(&mut self, pid: u32) -> &mut FxHashMap<Box<[u8]>, Rc<str>> {
        if self.by_backend.len() > BACKENDS_KEPT && !self.by_backend.contains_key(&pid) {
            self.by_backend
                .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        self.by_backend.entry(pid).or_default()
    }
}

/// The messages in `bytes`: type and body, the last one maybe cut short.
fn messages(mut bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&kind, rest) = bytes.split_first()?;
        let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        // The length counts itself.
        let body_end = length.max(4).min(rest.len());
        let body = &rest[4.min(body_end)..body_end];
        bytes = &rest[body_end..];
        Some((kind, body))
    })
}

/// A NUL-terminated string at the start of `bytes` (all of them when cut short) and what
/// follows its NUL.
fn c_string(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&byte| byte == 0) {
        Some(end) => (&bytes[..end], &bytes[end + 1..]),
        None => (bytes, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = vec![kind];
        out.extend((body.len() as u32 + 4).to_be_bytes());
        out.extend(body);
        out
    }

    fn upper(text: &[u8]) -> Rc<str> {
        String::from_utf8_lossy(text).to_uppercase().into()
    }

    /// Real bytes, captured off a backend's socket (the fuzz seeds `captured-*`;
    /// docs/fuzzing.md says how): pgbench -M prepared parses three statements, each with a
    /// Sync, then sends pipelines of Bind, Describe and Execute for each before one Sync.
    #[test]
    fn a_captured_pipeline_runs_each_statement() {
        macro_rules! captured {
            ($n:literal) => {
                &include_bytes!(concat!(
                    "../../fuzz/seeds/pg_wire/captured-pgbench-pipeline-",
                    $n
                ))[1..]
            };
        }
        let mut statements = Statements::default();
        for parse in [captured!("0"), captured!("1"), captured!("2")] {
            assert_eq!(statements.request(7, parse, true, upper), []);
        }
        let [five, relname] = [
            "SELECT 5 * 5;",
            "SELECT RELNAME FROM PG_CLASS WHERE OID = 1259;",
        ];
        for pipeline in [captured!("3"), captured!("4")] {
            let ran = statements.request(7, pipeline, true, upper);
            let expected = [five, five, relname].map(|key| Query::Prepared(key.into()));
            assert_eq!(ran, expected);
        }
    }

    #[test]
    fn a_simple_query_is_its_text() {
        let bytes = message(b'Q', &[b"select 1\0"]);
        let mut statements = Statements::default();
        let query = statements.request(7, &bytes, true, upper);
        assert_eq!(query, [Query::Simple(b"select 1")]);
    }

    #[test]
    fn an_execute_runs_the_statement_parsed_before() {
        let mut statements = Statements::default();
        let parse = [
            message(b'P', &[b"P_0\0select $1\0", &[0, 0]]),
            message(b'S', &[]),
        ]
        .concat();
        // Parsing alone runs nothing.
        assert_eq!(statements.request(7, &parse, true, upper), []);
        let execute = [
            message(b'B', &[b"\0P_0\0", &[0, 0, 0, 0, 0, 0]]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            message(b'S', &[]),
        ]
        .concat();
        let query = statements.request(7, &execute, true, upper);
        assert_eq!(query, [Query::Prepared("SELECT $1".into())]);
        // Another backend's P_0 is another statement.
        let query = statements.request(8, &execute, true, upper);
        assert_eq!(
            query,
            [Query::Prepared(
                "<statement \"P_0\" parsed before tracing>".into()
            )]
        );
        // Cut after the Bind, the Execute is taken for granted.
        let cut = &execute[..16];
        assert_eq!(statements.request(7, cut, false, upper).len(), 1);
        assert_eq!(statements.request(7, cut, true, upper), []);
    }

    #[test]
    fn an_unnamed_statement_is_parsed_in_the_same_request() {
        let bytes = [
            message(b'P', &[b"\0select 2\0", &[0, 0]]),
            message(b'B', &[b"\0\0", &[0, 0, 0, 0, 0, 0]]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            message(b'S', &[]),
        ]
        .concat();
        let mut statements = Statements::default();
        let query = statements.request(7, &bytes, true, upper);
        assert_eq!(query, [Query::Prepared("SELECT 2".into())]);
    }

    #[test]
    fn a_closed_statement_is_forgotten() {
        let mut statements = Statements::default();
        let parse = message(b'P', &[b"s1\0select 3\0", &[0, 0]]);
        statements.request(7, &parse, true, upper);
        let close = message(b'C', &[b"Ss1\0"]);
        statements.request(7, &close, true, upper);
        let execute = [
            message(b'B', &[b"\0s1\0", &[0, 0, 0, 0, 0, 0]]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
        ]
        .concat();
        let query = statements.request(7, &execute, true, upper);
        assert!(matches!(&query[..], [Query::Prepared(key)] if key.starts_with("<statement")));
    }

    #[test]
    fn a_query_cut_short_keeps_what_was_read() {
        let bytes = message(b'Q', &[b"select 4 from somewhere\0"]);
        let mut statements = Statements::default();
        let query = statements.request(7, &bytes[..14], false, upper);
        assert_eq!(query, [Query::Simple(b"select 4 ")]);
    }

    #[test]
    fn a_pipeline_runs_each_execute_and_query() {
        let mut statements = Statements::default();
        let bytes = [
            message(b'P', &[b"a\0select 5\0", &[0, 0]]),
            message(b'P', &[b"b\0select 6\0", &[0, 0]]),
            message(b'B', &[b"\0a\0", &[0, 0, 0, 0, 0, 0]]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            message(b'B', &[b"\0b\0", &[0, 0, 0, 0, 0, 0]]),
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            // The unnamed portal executed again, and a simple query behind the Sync.
            message(b'E', &[b"\0", &[0, 0, 0, 0]]),
            message(b'S', &[]),
            message(b'Q', &[b"select 7\0"]),
        ]
        .concat();
        let query = statements.request(7, &bytes, true, upper);
        assert_eq!(
            query,
            [
                Query::Prepared("SELECT 5".into()),
                Query::Prepared("SELECT 6".into()),
                Query::Prepared("SELECT 6".into()),
                Query::Simple(b"select 7"),
            ]
        );
    }

    /// A frontend message the decoder reads, and what running it means.
    #[derive(Clone, Debug)]
    enum Sent {
        Query(String),
        Parse(String, String),
        /// A Bind of the statement, then an Execute.
        Run(String),
        Close(String),
        Sync,
    }

    fn sent() -> impl proptest::strategy::Strategy<Value = Sent> {
        use proptest::prelude::*;
        // Names and texts never hold a NUL: the protocol ends them with one.
        // Few names, so that statements are parsed, run and closed by the same one.
        let name = "[ab]?";
        let text = "[^\\x00]{0,24}";
        prop_oneof![
            text.prop_map(Sent::Query),
            (name, text).prop_map(|(name, text)| Sent::Parse(name, text)),
            name.prop_map(Sent::Run),
            name.prop_map(Sent::Close),
            Just(Sent::Sync),
        ]
    }

    fn encode(messages: &[Sent]) -> Vec<u8> {
        let c = |text: &str| [text.as_bytes(), b"\0"].concat();
        messages
            .iter()
            .flat_map(|sent| match sent {
                Sent::Query(text) => message(b'Q', &[&c(text)]),
                Sent::Parse(name, text) => message(b'P', &[&c(name), &c(text), &[0, 0]]),
                Sent::Run(name) => [
                    message(b'B', &[b"\0", &c(name), &[0, 0, 0, 0, 0, 0]]),
                    message(b'E', &[b"\0", &[0, 0, 0, 0]]),
                ]
                .concat(),
                Sent::Close(name) => message(b'C', &[b"S", &c(name)]),
                Sent::Sync => message(b'S', &[]),
            })
            .collect()
    }

    /// What a server runs for `messages`, statement keys as `upper` makes them.
    fn expected(messages: &[Sent]) -> Vec<Query<'static>> {
        let mut parsed: std::collections::HashMap<&str, Rc<str>> = Default::default();
        let mut ran = Vec::new();
        for sent in messages {
            match sent {
                Sent::Query(text) => {
                    ran.push(Query::Simple(text.clone().into_bytes().leak()));
                }
                Sent::Parse(name, text) => {
                    parsed.insert(name, upper(text.as_bytes()));
                }
                Sent::Run(name) => ran.push(Query::Prepared(
                    parsed.get(name.as_str()).cloned().unwrap_or_else(|| {
                        format!("<statement {name:?} parsed before tracing>").into()
                    }),
                )),
                Sent::Close(name) => {
                    parsed.remove(name.as_str());
                }
                Sent::Sync => {}
            }
        }
        ran
    }

    proptest::proptest! {
        /// Requests one after another, each read whole, run what they sent.
        #[test]
        fn decodes_what_was_encoded(
            requests in proptest::collection::vec(proptest::collection::vec(sent(), 0..6), 1..4)
        ) {
            let mut statements = Statements::default();
            let mut ran = Vec::new();
            let encoded: Vec<Vec<u8>> = requests.iter().map(|request| encode(request)).collect();
            for bytes in &encoded {
                ran.extend(statements.request(7, bytes, true, upper));
            }
            proptest::prop_assert_eq!(ran, expected(&requests.concat()));
        }

        /// Any cut of a request, or its second half alone (a message split across two
        /// receives), decodes without reading past it.
        #[test]
        fn cut_and_split_requests_stay_inside_the_bytes(
            request in proptest::collection::vec(sent(), 1..6),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let bytes = encode(&request);
            let at = at.index(bytes.len() + 1);
            for (part, complete) in [(&bytes[..at], false), (&bytes[at..], true)] {
                for query in Statements::default().request(7, part, complete, upper) {
                    if let Query::Simple(text) = query {
                        let start = text.as_ptr() as usize - part.as_ptr() as usize;
                        proptest::prop_assert!(start + text.len() <= part.len());
                    }
                }
            }
        }
    }
}
