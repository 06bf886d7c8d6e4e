//! `SHOW [GLOBAL|SESSION] STATUS LIKE 'wsrep%'` (and `WHERE Variable_name
//! IN (…)` / `= …` / `LIKE …`) answered by the proxy with the node's state
//! under Galera's names, so existing monitors work. Recognizing the
//! statement and encoding the result set are pure; the values come from
//! the commit service.

use super::wire::{self, status};

/// Which status variables a statement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Like(String),
    Names(Vec<String>),
}

impl Filter {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Filter::Like(pattern) => like(pattern, name),
            Filter::Names(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

/// SQL LIKE, case-insensitive, with `%`, `_` and `\` escapes.
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                t.first().is_some_and(|c| c.eq_ignore_ascii_case(&rest[0]))
                    && go(&rest[1..], &t[1..])
            }
            Some((c, rest)) => {
                t.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &t[1..])
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// Quoted strings of a list like `('a', "b")`.
fn quoted_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let s: String = chars.by_ref().take_while(|x| *x != c).collect();
            out.push(s);
        }
    }
    out
}

/// The filter of a `SHOW STATUS` statement about wsrep variables; `None`
/// for any other statement (it goes to the server).
pub fn wsrep_status_request(sql: &str) -> Option<Filter> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let mut i = 0;
    let word = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    if word(i)? != "SHOW" {
        return None;
    }
    i += 1;
    if matches!(word(i)?.as_str(), "GLOBAL" | "SESSION") {
        i += 1;
    }
    if word(i)?.trim_end_matches(';') != "STATUS" {
        return None;
    }
    let rest = words.get(i + 1..)?.join(" ");
    let upper = rest.to_ascii_uppercase();
    let filter = if upper.starts_with("LIKE") {
        Filter::Like(quoted_strings(&rest).into_iter().next()?)
    } else if upper.starts_with("WHERE") {
        let strings = quoted_strings(&rest);
        if upper.contains(" LIKE ") {
            Filter::Like(strings.into_iter().next()?)
        } else {
            Filter::Names(strings)
        }
    } else {
        return None;
    };
    let about_wsrep = match &filter {
        Filter::Like(p) => p.to_ascii_lowercase().starts_with("wsrep"),
        Filter::Names(n) => {
            !n.is_empty()
                && n.iter()
                    .all(|x| x.to_ascii_lowercase().starts_with("wsrep"))
        }
    };
    about_wsrep.then_some(filter)
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    wire::put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

fn column(name: &str, extended_metadata: bool) -> Vec<u8> {
    let mut p = Vec::new();
    for part in [
        "def",
        "information_schema",
        "SESSION_STATUS",
        "SESSION_STATUS",
        name,
        name,
    ] {
        lenenc_str(&mut p, part.as_bytes());
    }
    if extended_metadata {
        // MariaDB's extended type information: none.
        lenenc_str(&mut p, b"");
    }
    p.push(0x0c);
    p.extend_from_slice(&33u16.to_le_bytes()); // utf8_general_ci
    p.extend_from_slice(&4096u32.to_le_bytes());
    p.push(0xfd); // VAR_STRING
    p.extend_from_slice(&1u16.to_le_bytes()); // NOT NULL
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p
}

/// How the client wants result sets shaped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub deprecate_eof: bool,
    pub extended_metadata: bool,
}

/// The packets of a two-column result set (`Variable_name`, `Value`).
pub fn result_set(rows: &[(String, String)], shape: Shape, flags: u16) -> Vec<Vec<u8>> {
    let deprecate_eof = shape.deprecate_eof;
    let mut packets = vec![
        vec![2u8],
        column("Variable_name", shape.extended_metadata),
        column("Value", shape.extended_metadata),
    ];
    let eof = |flags: u16| {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&flags.to_le_bytes());
        p
    };
    if !deprecate_eof {
        packets.push(eof(flags & !status::MORE_RESULTS_EXISTS));
    }
    for (name, value) in rows {
        let mut row = Vec::new();
        lenenc_str(&mut row, name.as_bytes());
        lenenc_str(&mut row, value.as_bytes());
        packets.push(row);
    }
    if deprecate_eof {
        let mut ok = wire::ok_packet(0, 0, flags, 0);
        ok[0] = 0xfe;
        packets.push(ok);
    } else {
        packets.push(eof(flags));
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::response::{Expect, ResponseReader, Step};

    #[test]
    fn wsrep_status_statements_are_recognized() {
        assert_eq!(
            wsrep_status_request("SHOW STATUS LIKE 'wsrep%'"),
            Some(Filter::Like("wsrep%".into()))
        );
        assert_eq!(
            wsrep_status_request("show global status like \"wsrep_ready\""),
            Some(Filter::Like("wsrep_ready".into()))
        );
        assert_eq!(
            wsrep_status_request(
                "SHOW STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_cluster_status')"
            ),
            Some(Filter::Names(vec![
                "wsrep_ready".into(),
                "wsrep_cluster_status".into()
            ]))
        );
        assert_eq!(wsrep_status_request("SHOW STATUS LIKE 'Threads%'"), None);
        assert_eq!(wsrep_status_request("SHOW STATUS"), None);
        assert_eq!(wsrep_status_request("SELECT 'wsrep'"), None);
        assert_eq!(wsrep_status_request(""), None);
    }

    #[test]
    fn like_patterns() {
        let f = Filter::Like("wsrep_local%".into());
        assert!(f.matches("wsrep_local_state"));
        assert!(f.matches("WSREP_LOCAL_INDEX"));
        assert!(!f.matches("wsrep_ready"));
        assert!(Filter::Like("wsrep\\_read_".into()).matches("wsrep_ready"));
    }

    #[test]
    fn the_result_set_parses_as_one_in_both_eof_modes() {
        let rows = vec![("wsrep_ready".to_string(), "ON".to_string())];
        for deprecate in [false, true] {
            let mut r = ResponseReader::new(Expect::Results, deprecate);
            let shape = Shape {
                deprecate_eof: deprecate,
                extended_metadata: deprecate,
            };
            let packets = result_set(&rows, shape, status::AUTOCOMMIT);
            for (i, p) in packets.iter().enumerate() {
                let step = r.feed(p).unwrap();
                assert_eq!(matches!(step, Step::Done(_)), i == packets.len() - 1);
            }
        }
    }
}
