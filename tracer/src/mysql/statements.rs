//! Prepared statements: what each `COM_STMT_EXECUTE` runs. A statement's id is known only in
//! the connection that prepared it, so its text is remembered per connection and id, from the
//! `COM_STMT_PREPARE` that made it to the `COM_STMT_CLOSE` (or the end of the connection) that
//! drops it.

use std::rc::Rc;

use rustc_hash::FxHashMap;

/// What an execute of a statement tracer did not see prepared is counted under.
pub const UNKNOWN: &str = "COM_STMT_EXECUTE (statement prepared before tracing)";

/// Remembered statements past which all are forgotten: connections that end without
/// `COM_QUIT` leave theirs behind.
const LIMIT: usize = 100_000;

#[derive(Default)]
pub struct Statements {
    /// By connection (the server's `THD`), then by id: the key the statement is counted under.
    by_session: FxHashMap<u64, FxHashMap<u32, Rc<str>>>,
    count: usize,
}

impl Statements {
    pub fn prepared(&mut self, session: u64, id: u32, key: &str) {
        if self.count >= LIMIT {
            *self = Self::default();
        }
        let statements = self.by_session.entry(session).or_default();
        if statements.insert(id, key.into()).is_none() {
            self.count += 1;
        }
    }

    /// The key of the statement an execute runs: `UNKNOWN` when not seen prepared.
    pub fn executed(&self, session: u64, id: u32) -> Rc<str> {
        self.by_session
            .get(&session)
            .and_then(|statements| statements.get(&id))
            .cloned()
            .unwrap_or_else(|| UNKNOWN.into())
    }

    pub fn closed(&mut self, session: u64, id: u32) {
        if let Some(statements) = self.by_session.get_mut(&session)
            && statements.remove(&id).is_some()
        {
            self.count -= 1;
        }
    }

    /// The connection ended or was reset: its statements are gone.
    pub fn ended(&mut self, session: u64) {
        if let Some(statements) = self.by_session.remove(&session) {
            self.count -= statements.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_belong_to_their_connection() {
        let mut statements = Statements::default();
        statements.prepared(1, 7, "SELECT ?");
        statements.prepared(2, 7, "SELECT ? + ?");
        assert_eq!(&*statements.executed(1, 7), "SELECT ?");
        assert_eq!(&*statements.executed(2, 7), "SELECT ? + ?");
        assert_eq!(&*statements.executed(1, 8), UNKNOWN);
        statements.closed(1, 7);
        assert_eq!(&*statements.executed(1, 7), UNKNOWN);
        statements.ended(2);
        assert_eq!(&*statements.executed(2, 7), UNKNOWN);
        assert_eq!(statements.count, 0);
    }

    #[test]
    fn an_id_used_again_after_a_close_runs_its_new_statement() {
        let mut statements = Statements::default();
        statements.prepared(1, 1, "SELECT ?");
        statements.closed(1, 1);
        statements.prepared(1, 1, "DELETE FROM t WHERE id = ?");
        assert_eq!(&*statements.executed(1, 1), "DELETE FROM t WHERE id = ?");
        // Prepared again without a close seen (its COM_STMT_CLOSE lost): the new one wins.
        statements.prepared(1, 1, "SELECT ? * ?");
        assert_eq!(&*statements.executed(1, 1), "SELECT ? * ?");
        assert_eq!(statements.count, 1);
    }
}
