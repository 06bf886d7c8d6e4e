//! How a COMMIT or ROLLBACK ends, by MariaDB's rule: what the statement
//! says (`AND [NO] CHAIN`, `[NO] RELEASE`), and where it says nothing, the
//! session's `completion_type` (`NO_CHAIN`, `CHAIN` — a new transaction
//! starts at once — or `RELEASE` — the connection closes). Pure: the
//! session asks the server for `completion_type` ([`QUERY`]) only when
//! [`needs_session_value`] says so.
//!
//! Statements the proxy sends itself spell out `AND NO CHAIN NO RELEASE`
//! ([`COMMIT_PLAIN`]), so `completion_type` never acts on them; the XA
//! statements ignore it.

/// The query that reads the session's `completion_type`.
pub const QUERY: &str = "SELECT @@session.completion_type";

/// A COMMIT of the proxy's own, whatever `completion_type` says.
pub const COMMIT_PLAIN: &str = "COMMIT AND NO CHAIN NO RELEASE";
/// A ROLLBACK of the proxy's own, whatever `completion_type` says.
pub const ROLLBACK_PLAIN: &str = "ROLLBACK AND NO CHAIN NO RELEASE";

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// A new transaction starts at once (with the same characteristics).
    pub chain: bool,
    /// The connection closes.
    pub release: bool,
}

/// Whether the statement leaves something to `completion_type`.
pub fn needs_session_value(chain: Option<bool>, release: Option<bool>) -> bool {
    chain.is_none() || release.is_none()
}

/// The completion of a statement that says `chain` / `release` (`None`:
/// not said) in a session whose `completion_type` is `session` (as the
/// server shows it: `NO_CHAIN`, `CHAIN`, `RELEASE`, or `0`–`2`; `None` when
/// not read). When both chain and release result, release wins: MariaDB
/// starts the chained transaction and closes the connection.
pub fn resolve(chain: Option<bool>, release: Option<bool>, session: Option<&str>) -> Completion {
    let (session_chain, session_release) = match session.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("CHAIN") || v == "1" => (true, false),
        Some(v) if v.eq_ignore_ascii_case("RELEASE") || v == "2" => (false, true),
        _ => (false, false),
    };
    Completion {
        chain: chain.unwrap_or(session_chain),
        release: release.unwrap_or(session_release),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(chain: bool, release: bool) -> Completion {
        Completion { chain, release }
    }

    #[test]
    fn the_statement_decides_then_completion_type() {
        let cases = [
            // plain COMMIT: completion_type alone
            (None, None, Some("NO_CHAIN"), c(false, false)),
            (None, None, Some("CHAIN"), c(true, false)),
            (None, None, Some("RELEASE"), c(false, true)),
            (None, None, Some("1"), c(true, false)),
            (None, None, Some("2"), c(false, true)),
            // explicit clauses win over it
            (Some(false), None, Some("CHAIN"), c(false, false)),
            (Some(true), None, Some("NO_CHAIN"), c(true, false)),
            (None, Some(false), Some("RELEASE"), c(false, false)),
            (Some(true), Some(false), Some("RELEASE"), c(true, false)),
            // COMMIT RELEASE with completion_type CHAIN: both (release wins
            // for the session)
            (None, Some(true), Some("CHAIN"), c(true, true)),
            (Some(false), Some(true), None, c(false, true)),
        ];
        for (chain, release, session, want) in cases {
            assert_eq!(
                resolve(chain, release, session),
                want,
                "{chain:?} {release:?} {session:?}"
            );
        }
        assert!(needs_session_value(None, Some(true)));
        assert!(needs_session_value(Some(true), None));
        assert!(!needs_session_value(Some(false), Some(false)));
    }
}
