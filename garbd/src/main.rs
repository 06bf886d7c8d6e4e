//! `garbd`, the arbitrator: a voting member of the ordered log that stores
//! the log but has no database, so that two data nodes keep quorum when one
//! of them dies.
//!
//! It is a `group` member with an empty state machine; it arrives with the
//! ordered log. Until then this binary explains that and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!(
        "garbd: the ordered log (group/) is not part of this build yet, so the \
         arbitrator cannot run; see the ordered-log issue"
    );
    std::process::ExitCode::from(2)
}
