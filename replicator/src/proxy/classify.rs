//! Lexer-level classification and splitting of SQL text; no I/O; knows
//! nothing of sessions.
//!
//! The proxy runs every SQL text a client sends (`COM_QUERY`, or the text of
//! `COM_STMT_PREPARE`) through [`split_statements`] and [`classify`] to learn
//! whether a statement reads, writes, starts or ends a transaction, changes
//! session settings, or causes an implicit commit. There is no SQL parser: a
//! tiny lexer (comments, quotes, executable comments as MariaDB 10.11 treats
//! them) yields tokens, and a few keyword rules look at the first of them.
//!
//! Both work on bytes, not on `str`: statement text is in the client's
//! character set, which need not be UTF-8. Every byte that matters to the
//! lexer (quotes, `;`, comment marks, keywords) is ASCII, and a byte of
//! 0x80 or more is part of a word or of a quoted literal, as in MariaDB's
//! lexer for UTF-8, the single-byte sets and the EUC sets.
//!
//! Both functions are total: every input gets an answer and nothing panics.
//! What is not recognised is [`StatementClass::Write`], the conservative
//! answer.
//!
//! Accepted imperfections:
//! - a `SELECT` whose functions have side effects (`NEXTVAL(seq)`,
//!   `SETVAL(...)`, `GET_LOCK(...)`, stored functions that write) is still
//!   [`StatementClass::Read`];
//! - the default SQL mode is assumed: backslash escapes are honoured, `"..."`
//!   is a string (no `ANSI_QUOTES`, no `NO_BACKSLASH_ESCAPES`, no Oracle mode);
//! - in the character sets whose two-byte characters may end in an ASCII
//!   byte (big5, cp932, gbk, sjis) a `\\` or `` ` `` that ends such a
//!   character is read as itself. The proxy never lets the server split a
//!   query, so a query split differently is refused by MariaDB, not run.

use std::ops::Range;

/// What a statement does, as far as transaction handling is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    /// Reads only: `SELECT` (also `... INTO OUTFILE`, `FOR UPDATE`,
    /// `LOCK IN SHARE MODE`), `SHOW`, `DESCRIBE`/`DESC`, `EXPLAIN`, `HELP`,
    /// `VALUES`, `TABLE t`, `WITH ... SELECT`, `CHECKSUM TABLE`,
    /// `ANALYZE SELECT` and parenthesised selects `(SELECT ...)`.
    Read,
    /// Changes data inside a transaction: `INSERT`, `UPDATE`, `DELETE`,
    /// `REPLACE`, `LOAD DATA`/`LOAD XML`, `CALL`, `DO`, `HANDLER`, `BINLOG`,
    /// compound statements (`BEGIN NOT ATOMIC`, top-level `IF`...), and
    /// anything unknown (conservative).
    Write,
    /// `BEGIN [WORK]`, `START TRANSACTION [characteristics]`.
    Begin(BeginOptions),
    /// `COMMIT [WORK] [AND [NO] CHAIN] [[NO] RELEASE]`: `Some` where the
    /// statement says, `None` where the session's `completion_type`
    /// decides.
    Commit {
        chain: Option<bool>,
        release: Option<bool>,
    },
    /// `ROLLBACK [WORK] [AND [NO] CHAIN] [[NO] RELEASE]` (not `ROLLBACK TO`),
    /// as [`StatementClass::Commit`].
    Rollback {
        chain: Option<bool>,
        release: Option<bool>,
    },
    /// `SAVEPOINT x`.
    Savepoint,
    /// `ROLLBACK [WORK] TO [SAVEPOINT] x`.
    RollbackToSavepoint,
    /// `RELEASE SAVEPOINT x`.
    ReleaseSavepoint,
    /// A `SET` statement (also `SET NAMES`/`SET CHARACTER SET`, with every
    /// field empty).
    ///
    /// - `autocommit`: the session autocommit it sets, when the value is a
    ///   literal `1`/`0`, `ON`/`OFF`, `TRUE`/`FALSE` or `'ON'`/`'OFF'`; the last
    ///   assignment wins. Any other value leaves it `None` and sets
    ///   `autocommit_unknown`.
    /// - `sync_wait`: the integer the session `wsrep_sync_wait` is set to.
    /// - `transaction`: `SET [GLOBAL|SESSION] TRANSACTION ...`.
    /// - `global`: some assignment is GLOBAL (`SET GLOBAL x`, `@@global.x`);
    ///   a scope keyword applies to the assignments that follow it.
    Set {
        autocommit: Option<bool>,
        autocommit_unknown: bool,
        sync_wait: Option<u64>,
        transaction: bool,
        global: bool,
    },
    /// Client-side XA statements (`XA START`, `XA END`, ...). The proxy
    /// refuses them.
    Xa,
    /// Causes an implicit commit and must run outside any transaction.
    ImplicitCommit(ImplicitCommit),
    /// `LOCK TABLE(S) ...` and `FLUSH TABLE(S) t, ... WITH READ LOCK | FOR
    /// EXPORT` (both lock the listed tables for the session, after an
    /// implicit commit) or, with `unlock`, `UNLOCK TABLE(S)` (which commits
    /// only when tables were locked).
    LockTables { unlock: bool },
    /// Touches neither data nor transaction state: `USE`, `KILL`,
    /// `SET ROLE`, `RESET QUERY CACHE`, `GET DIAGNOSTICS`, `SIGNAL`,
    /// `RESIGNAL`.
    Session,
    /// `PREPARE name FROM 'text'` / `FROM @var`; `text` is the unescaped
    /// literal when the source is a string literal. Names are kept as
    /// written, in the client's bytes (MariaDB compares them
    /// case-insensitively).
    SqlPrepare {
        name: Vec<u8>,
        text: Option<Vec<u8>>,
    },
    /// `EXECUTE name [USING ...]` (`EXECUTE IMMEDIATE 'text'` is classified
    /// as its text).
    SqlExecute { name: Vec<u8> },
    /// `DEALLOCATE PREPARE name` / `DROP PREPARE name`.
    SqlDeallocate { name: Vec<u8> },
    /// `CREATE [OR REPLACE] TEMPORARY TABLE` / `DROP TEMPORARY TABLE`: no
    /// implicit commit, stays local.
    TemporaryTable,
    /// No statement: only whitespace, comments and semicolons.
    Empty,
}

/// Characteristics given to `START TRANSACTION`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeginOptions {
    /// `START TRANSACTION READ ONLY`.
    pub read_only: bool,
    /// `START TRANSACTION WITH CONSISTENT SNAPSHOT`.
    pub consistent_snapshot: bool,
}

/// The family of a statement that causes an implicit commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImplicitCommit {
    /// CREATE/ALTER/DROP/RENAME/TRUNCATE of tables, indexes, views,
    /// routines, triggers, events, sequences, databases, servers,
    /// tablespaces, packages.
    Ddl,
    /// Users and roles: CREATE/ALTER/DROP/RENAME USER, CREATE/DROP ROLE,
    /// GRANT, REVOKE, SET PASSWORD, SET DEFAULT ROLE.
    Account,
    /// ANALYZE/CHECK/OPTIMIZE/REPAIR TABLE, CACHE INDEX, LOAD INDEX, FLUSH,
    /// RESET (but RESET QUERY CACHE), INSTALL/UNINSTALL, BACKUP STAGE, PURGE,
    /// CHANGE MASTER, START/STOP SLAVE, SHUTDOWN.
    Admin,
}

// ---------------------------------------------------------------- lexer --

/// Version executable comments are checked against: any MariaDB 10.11.
const SERVER_VERSION: u64 = 101_199;

/// How deep `EXECUTE IMMEDIATE`, `SET STATEMENT ... FOR`, `WITH` and
/// `ANALYZE` may nest before the answer is `Write`.
const MAX_DEPTH: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    /// Unquoted keyword or identifier.
    Word(&'a [u8]),
    /// `backquoted` identifier, unescaped.
    Ident(Vec<u8>),
    /// `'...'` or `"..."` literal, unescaped.
    Str(Vec<u8>),
    /// A run of ASCII digits.
    Num(&'a [u8]),
    /// Any other ASCII character.
    Sym(char),
}

#[derive(Debug)]
struct Token<'a> {
    tok: Tok<'a>,
    span: Range<usize>,
    /// Inside an executable comment `/*! ... */`.
    exec: bool,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn lex(src: &[u8]) -> Vec<Token<'_>> {
    let b = src;
    let mut toks = Vec::new();
    let mut i = 0;
    let mut exec = false;
    while let Some(&c) = b.get(i) {
        let (n1, n2) = (b.get(i + 1).copied(), b.get(i + 2).copied());
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'#' => {
                i = line_end(b, i);
                continue;
            }
            b'-' if n1 == Some(b'-') && n2.is_none_or(|x| x <= b' ') => {
                i = line_end(b, i);
                continue;
            }
            b'/' if n1 == Some(b'*') => {
                i = comment(b, i, &mut exec);
                continue;
            }
            b'*' if exec && n1 == Some(b'/') => {
                exec = false;
                i += 2;
                continue;
            }
            b'\'' | b'"' | b'`' => {
                let (text, end) = quoted(src, i, c);
                i = end;
                if c == b'`' {
                    Tok::Ident(text)
                } else {
                    Tok::Str(text)
                }
            }
            _ if is_word_byte(c) => {
                while b.get(i).is_some_and(|&x| is_word_byte(x)) {
                    i += 1;
                }
                let w = src.get(start..i).unwrap_or_default();
                if w.iter().all(|x| x.is_ascii_digit()) {
                    Tok::Num(w)
                } else {
                    Tok::Word(w)
                }
            }
            _ => {
                i += 1;
                Tok::Sym(char::from(c))
            }
        };
        toks.push(Token {
            tok,
            span: start..i,
            exec,
        });
    }
    toks
}

/// Index of the newline ending the line comment at `i` (or end of input).
fn line_end(b: &[u8], i: usize) -> usize {
    b.get(i..)
        .and_then(|r| r.iter().position(|&x| x == b'\n'))
        .map_or(b.len(), |p| i + p)
}

/// Handles the `/*` at `i` and returns where lexing resumes. An executable
/// comment (`/*!` or `/*M!`, optional 5–6 digit version) whose version
/// applies turns code mode on (like MariaDB, a MySQL-only version 50700–99999
/// without `M` does not apply); any other comment is skipped to its `*/`.
fn comment(b: &[u8], i: usize, exec: &mut bool) -> usize {
    let maria = b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!');
    if maria || b.get(i + 2) == Some(&b'!') {
        let body = i + if maria { 4 } else { 3 };
        let digits: Vec<u8> = b
            .get(body..)
            .unwrap_or(&[])
            .iter()
            .take(6)
            .take_while(|x| x.is_ascii_digit())
            .copied()
            .collect();
        if digits.len() < 5 {
            *exec = true;
            return body;
        }
        let version = digits
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        if version <= SERVER_VERSION && (!(50_700..=99_999).contains(&version) || maria) {
            *exec = true;
            return body + digits.len();
        }
    }
    b.get(i + 2..)
        .and_then(|r| r.windows(2).position(|w| w == b"*/"))
        .map_or(b.len(), |p| i + 2 + p + 2)
}

/// Lexes the quoted literal or identifier opening at `i`; returns its
/// unescaped text and the index after it (end of input if unterminated).
fn quoted(src: &[u8], i: usize, q: u8) -> (Vec<u8>, usize) {
    let rest = src.get(i + 1..).unwrap_or_default();
    let mut out = Vec::new();
    let mut bytes = rest.iter().copied().enumerate().peekable();
    while let Some((k, ch)) = bytes.next() {
        if ch == q {
            if bytes.next_if(|&(_, n)| n == q).is_some() {
                out.push(q);
                continue;
            }
            return (out, i + 1 + k + 1);
        }
        if ch == b'\\' && q != b'`' {
            let Some((_, e)) = bytes.next() else { break };
            if matches!(e, b'%' | b'_') {
                out.push(b'\\'); // kept for LIKE patterns, as MariaDB does
            }
            out.push(match e {
                b'0' => b'\0',
                b'b' => b'\x08',
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'Z' => b'\x1a',
                _ => e,
            });
            continue;
        }
        out.push(ch);
    }
    (out, src.len())
}

// --------------------------------------------------------------- cursor --

fn kw(t: &Tok<'_>, k: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(k.as_bytes()))
}

/// A cursor over tokens with keyword helpers.
struct Cur<'t, 'a> {
    toks: &'t [Token<'a>],
    pos: usize,
}

impl<'t, 'a> Cur<'t, 'a> {
    fn new(toks: &'t [Token<'a>]) -> Self {
        Cur { toks, pos: 0 }
    }
    fn peek_at(&self, n: usize) -> Option<&'t Tok<'a>> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }
    fn bump(&mut self) -> Option<&'t Tok<'a>> {
        let t = self.peek_at(0);
        self.pos += usize::from(t.is_some());
        t
    }
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
    fn rest(&self) -> &'t [Token<'a>] {
        self.toks.get(self.pos..).unwrap_or(&[])
    }
    fn is_at(&self, n: usize, k: &str) -> bool {
        self.peek_at(n).is_some_and(|t| kw(t, k))
    }
    fn is(&self, k: &str) -> bool {
        self.is_at(0, k)
    }
    fn is_any(&self, ks: &[&str]) -> bool {
        ks.iter().any(|k| self.is(k))
    }
    fn eat(&mut self, k: &str) -> bool {
        let hit = self.is(k);
        self.pos += usize::from(hit);
        hit
    }
    fn eat_any(&mut self, ks: &[&str]) -> bool {
        ks.iter().any(|k| self.eat(k))
    }
    fn is_sym(&self, c: char) -> bool {
        self.peek_at(0) == Some(&Tok::Sym(c))
    }
    fn eat_sym(&mut self, c: char) -> bool {
        let hit = self.is_sym(c);
        self.pos += usize::from(hit);
        hit
    }
    /// The next token if it is an unquoted word.
    fn word(&mut self) -> Option<&'a [u8]> {
        match self.peek_at(0) {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Some(*w)
            }
            _ => None,
        }
    }
    /// The next token if it is an identifier, quoted or not.
    fn name(&mut self) -> Option<Vec<u8>> {
        let name = match self.peek_at(0)? {
            Tok::Word(w) => w.to_vec(),
            Tok::Ident(s) => s.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(name)
    }
    /// A string literal (adjacent literals concatenate, as in SQL).
    fn string_lit(&mut self) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        while let Some(Tok::Str(s)) = self.peek_at(0) {
            out.get_or_insert_with(Vec::new).extend_from_slice(s);
            self.pos += 1;
        }
        out
    }
    /// At `(`: skips to just after the matching `)` (or the end).
    fn skip_parens(&mut self) {
        if !self.is_sym('(') {
            return;
        }
        let mut depth = 0usize;
        while let Some(t) = self.bump() {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') if depth <= 1 => return,
                Tok::Sym(')') => depth -= 1,
                _ => {}
            }
        }
    }
}

// -------------------------------------------------------- classification --

/// Classify one statement (the text of a single statement, in the client's
/// bytes; a trailing semicolon and comments are allowed; only the text
/// before the first semicolon is looked at).
pub fn classify(sql: impl AsRef<[u8]>) -> StatementClass {
    classify_tokens(&lex(sql.as_ref()), 0)
}

fn classify_tokens(toks: &[Token<'_>], depth: u32) -> StatementClass {
    use ImplicitCommit::{Account, Admin};
    use StatementClass as C;
    let end = toks
        .iter()
        .position(|t| t.tok == Tok::Sym(';'))
        .unwrap_or(toks.len());
    let toks = toks.get(..end).unwrap_or(toks);
    if toks.is_empty() {
        return C::Empty;
    }
    if depth > MAX_DEPTH {
        return C::Write;
    }
    let parens = toks.iter().take_while(|t| t.tok == Tok::Sym('(')).count();
    let mut c = Cur::new(toks.get(parens..).unwrap_or(&[]));
    let Some(first) = c.word() else {
        return C::Write;
    };
    match String::from_utf8_lossy(first).to_ascii_uppercase().as_str() {
        "SELECT" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "HELP" | "VALUES" | "TABLE"
        | "CHECKSUM" => C::Read,
        "WITH" => classify_with(&mut c, depth),
        "ANALYZE" => {
            if c.is_any(&["TABLE", "LOCAL", "NO_WRITE_TO_BINLOG"]) {
                return C::ImplicitCommit(Admin);
            }
            if c.eat("FORMAT") {
                c.eat_sym('=');
                c.bump();
            }
            read_or_write(classify_tokens(c.rest(), depth + 1))
        }
        "LOAD" if c.is("INDEX") => C::ImplicitCommit(Admin),
        "BEGIN" => {
            c.eat("WORK");
            if c.at_end() {
                C::Begin(BeginOptions::default())
            } else {
                C::Write // BEGIN NOT ATOMIC (compound statement) or invalid
            }
        }
        "START" if c.eat("TRANSACTION") => C::Begin(begin_options(&mut c)),
        "START" | "STOP" if c.is_any(&["SLAVE", "REPLICA", "ALL"]) => C::ImplicitCommit(Admin),
        "COMMIT" => {
            let (chain, release) = completion(&mut c);
            C::Commit { chain, release }
        }
        "ROLLBACK" => {
            c.eat("WORK");
            if c.is("TO") {
                return C::RollbackToSavepoint;
            }
            let (chain, release) = completion(&mut c);
            C::Rollback { chain, release }
        }
        "SAVEPOINT" => C::Savepoint,
        "RELEASE" if c.is("SAVEPOINT") => C::ReleaseSavepoint,
        "XA" => C::Xa,
        "SET" => classify_set(&mut c, depth),
        "LOCK" if c.is_any(&["TABLE", "TABLES"]) => C::LockTables { unlock: false },
        "UNLOCK" if c.is_any(&["TABLE", "TABLES"]) => C::LockTables { unlock: true },
        "RESET" if c.is("QUERY") => C::Session,
        "FLUSH" if flush_locks_tables(&mut c) => C::LockTables { unlock: false },
        "FLUSH" | "RESET" | "INSTALL" | "UNINSTALL" | "BACKUP" | "PURGE" | "SHUTDOWN"
        | "OPTIMIZE" | "REPAIR" => C::ImplicitCommit(Admin),
        "CACHE" if c.is("INDEX") => C::ImplicitCommit(Admin),
        "CHECK" if c.is_any(&["TABLE", "TABLES", "VIEW"]) => C::ImplicitCommit(Admin),
        "CHANGE" if c.is("MASTER") => C::ImplicitCommit(Admin),
        "USE" | "KILL" | "GET" | "SIGNAL" | "RESIGNAL" => C::Session,
        "GRANT" | "REVOKE" => C::ImplicitCommit(Account),
        "PREPARE" => match (c.name(), c.eat("FROM")) {
            (Some(name), true) => {
                let text = c.string_lit().filter(|_| c.at_end());
                C::SqlPrepare { name, text }
            }
            _ => C::Write,
        },
        "EXECUTE" if c.eat("IMMEDIATE") => match c.string_lit() {
            Some(text) if c.at_end() => classify_tokens(&lex(&text), depth + 1),
            _ => C::Write,
        },
        "EXECUTE" => c.name().map_or(C::Write, |name| C::SqlExecute { name }),
        "DEALLOCATE" if c.eat("PREPARE") => {
            c.name().map_or(C::Write, |name| C::SqlDeallocate { name })
        }
        "DROP" if c.eat("PREPARE") => c.name().map_or(C::Write, |name| C::SqlDeallocate { name }),
        "TRUNCATE" => C::ImplicitCommit(ImplicitCommit::Ddl),
        "CREATE" | "ALTER" | "DROP" | "RENAME" => {
            let temporary = skip_ddl_prefix(&mut c);
            ddl_object(c.word(), temporary)
        }
        _ => C::Write,
    }
}

fn read_or_write(class: StatementClass) -> StatementClass {
    match class {
        StatementClass::Read => StatementClass::Read,
        _ => StatementClass::Write,
    }
}

/// `WITH [RECURSIVE] name [(cols)] AS (...) [CYCLE ... RESTRICT], ...`
/// followed by the statement that decides.
fn classify_with(c: &mut Cur<'_, '_>, depth: u32) -> StatementClass {
    c.eat("RECURSIVE");
    loop {
        if c.name().is_none() {
            return StatementClass::Write;
        }
        c.skip_parens();
        if !c.eat("AS") || !c.is_sym('(') {
            return StatementClass::Write;
        }
        c.skip_parens();
        if c.eat("CYCLE") {
            while c.bump().is_some_and(|t| !kw(t, "RESTRICT")) {}
        }
        if !c.eat_sym(',') {
            break;
        }
    }
    read_or_write(classify_tokens(c.rest(), depth + 1))
}

/// After `FLUSH`: whether it is `FLUSH [LOCAL|NO_WRITE_TO_BINLOG] TABLE[S]
/// t [, ...] WITH READ LOCK | FOR EXPORT` — with a table list, unlike the
/// global read lock of `FLUSH TABLES WITH READ LOCK`.
fn flush_locks_tables(c: &mut Cur<'_, '_>) -> bool {
    c.eat_any(&["LOCAL", "NO_WRITE_TO_BINLOG"]);
    if !c.eat_any(&["TABLE", "TABLES"]) || c.at_end() || c.is_any(&["WITH", "FOR"]) {
        return false;
    }
    let rest = c.rest();
    let ends_with = |words: &[&str]| {
        rest.len() > words.len()
            && rest[rest.len() - words.len()..]
                .iter()
                .zip(words)
                .all(|(t, w)| kw(&t.tok, w))
    };
    ends_with(&["WITH", "READ", "LOCK"]) || ends_with(&["FOR", "EXPORT"])
}

/// `START TRANSACTION` characteristics: `WITH CONSISTENT SNAPSHOT`,
/// `READ ONLY`, `READ WRITE`, comma-separated.
fn begin_options(c: &mut Cur<'_, '_>) -> BeginOptions {
    let mut opts = BeginOptions::default();
    loop {
        if c.eat("WITH") {
            c.eat("CONSISTENT");
            c.eat("SNAPSHOT");
            opts.consistent_snapshot = true;
        } else if c.eat("READ") {
            opts.read_only |= c.eat("ONLY");
            c.eat("WRITE");
        } else {
            break;
        }
        if !c.eat_sym(',') {
            break;
        }
    }
    opts
}

/// `[WORK] [AND [NO] CHAIN] [[NO] RELEASE]` → `(chain, release)`, each
/// `None` when not given.
fn completion(c: &mut Cur<'_, '_>) -> (Option<bool>, Option<bool>) {
    c.eat("WORK");
    let mut chain = None;
    if c.eat("AND") {
        chain = Some(!c.eat("NO"));
        c.eat("CHAIN");
    }
    let release = if c.eat("NO") {
        c.eat("RELEASE");
        Some(false)
    } else if c.eat("RELEASE") {
        Some(true)
    } else {
        None
    };
    (chain, release)
}

/// Skips what may stand between CREATE/ALTER/DROP/RENAME and the object
/// keyword (`OR REPLACE`, `DEFINER = ...`, `SQL SECURITY x`,
/// `ALGORITHM = x`, `TEMPORARY`, `ONLINE`, `UNIQUE`, ...). Returns whether
/// `TEMPORARY` was among them.
fn skip_ddl_prefix(c: &mut Cur<'_, '_>) -> bool {
    let mut temporary = false;
    loop {
        if c.eat("OR") {
            c.eat("REPLACE");
        } else if c.eat("DEFINER") {
            c.eat_sym('=');
            skip_user(c);
        } else if c.is("SQL") && c.is_at(1, "SECURITY") {
            c.pos += 2;
            c.bump();
        } else if c.eat("ALGORITHM") {
            c.eat_sym('=');
            c.bump();
        } else if c.eat("TEMPORARY") {
            temporary = true;
        } else if !c.eat_any(&[
            "AGGREGATE",
            "ONLINE",
            "OFFLINE",
            "IGNORE",
            "UNIQUE",
            "FULLTEXT",
            "SPATIAL",
            "EDITIONABLE",
            "NONEDITIONABLE",
        ]) {
            return temporary;
        }
    }
}

/// Skips `user[@host]` / `CURRENT_USER[()]` / `CURRENT_ROLE[()]`.
fn skip_user(c: &mut Cur<'_, '_>) {
    if c.eat_any(&["CURRENT_USER", "CURRENT_ROLE"]) {
        c.skip_parens();
        return;
    }
    c.bump();
    if c.eat_sym('@') {
        c.bump();
        // unquoted host names and addresses: my-host.example.com, 10.0.0.%
        while c.eat_sym('.') || c.eat_sym('-') {
            c.bump();
        }
    }
}

fn ddl_object(object: Option<&[u8]>, temporary: bool) -> StatementClass {
    let Some(object) = object else {
        return StatementClass::Write;
    };
    match String::from_utf8_lossy(object)
        .to_ascii_uppercase()
        .as_str()
    {
        "TABLE" if temporary => StatementClass::TemporaryTable,
        "USER" | "ROLE" => StatementClass::ImplicitCommit(ImplicitCommit::Account),
        "TABLE" | "TABLES" | "INDEX" | "VIEW" | "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT"
        | "SEQUENCE" | "DATABASE" | "SCHEMA" | "SERVER" | "TABLESPACE" | "PACKAGE" => {
            StatementClass::ImplicitCommit(ImplicitCommit::Ddl)
        }
        _ => StatementClass::Write,
    }
}

/// Everything after `SET`.
fn classify_set(c: &mut Cur<'_, '_>, depth: u32) -> StatementClass {
    if c.eat("STATEMENT") {
        // SET STATEMENT var = value [, ...] FOR <statement>
        let mut parens = 0usize;
        while let Some(t) = c.bump() {
            match t {
                Tok::Sym('(') => parens += 1,
                Tok::Sym(')') => parens = parens.saturating_sub(1),
                t if parens == 0 && kw(t, "FOR") => return classify_tokens(c.rest(), depth + 1),
                _ => {}
            }
        }
        return StatementClass::Write;
    }
    if c.is("PASSWORD") || (c.is("DEFAULT") && c.is_at(1, "ROLE")) {
        return StatementClass::ImplicitCommit(ImplicitCommit::Account);
    }
    if c.is("ROLE") {
        return StatementClass::Session;
    }
    const SCOPES: [&str; 3] = ["GLOBAL", "SESSION", "LOCAL"];
    let mut global = false;
    if c.is("TRANSACTION") || (c.is_any(&SCOPES) && c.is_at(1, "TRANSACTION")) {
        return StatementClass::Set {
            autocommit: None,
            autocommit_unknown: false,
            sync_wait: None,
            transaction: true,
            global: c.is("GLOBAL"),
        };
    }
    let (mut autocommit, mut autocommit_unknown, mut sync_wait) = (None, false, None);
    let mut sticky_global = false;
    for item in top_level_items(c.rest()) {
        let mut it = Cur::new(item);
        if it.eat("GLOBAL") {
            sticky_global = true;
        } else if it.eat_any(&["SESSION", "LOCAL"]) {
            sticky_global = false;
        }
        let mut is_global = sticky_global;
        if it.eat_sym('@') {
            if !it.eat_sym('@') {
                continue; // a user variable
            }
            if it.is_any(&SCOPES) && it.peek_at(1) == Some(&Tok::Sym('.')) {
                is_global = it.is("GLOBAL");
                it.pos += 2;
            }
        }
        // NAMES x, CHARACTER SET x and structured `a.b` have no `=` here.
        let Some(name) = it.name() else { continue };
        if !(it.eat_sym('=') || (it.eat_sym(':') && it.eat_sym('='))) {
            continue;
        }
        if is_global {
            global = true;
        } else if name.eq_ignore_ascii_case(b"autocommit") {
            autocommit = bool_value(it.rest());
            autocommit_unknown = autocommit.is_none();
        } else if name.eq_ignore_ascii_case(b"wsrep_sync_wait") {
            sync_wait = match it.rest() {
                [
                    Token {
                        tok: Tok::Num(n), ..
                    },
                ] => std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()),
                _ => None,
            };
        }
    }
    StatementClass::Set {
        autocommit,
        autocommit_unknown,
        sync_wait,
        transaction: false,
        global,
    }
}

/// The literal values a boolean system variable accepts.
fn bool_value(toks: &[Token<'_>]) -> Option<bool> {
    let [t] = toks else { return None };
    let word = match &t.tok {
        Tok::Num(b"1") => return Some(true),
        Tok::Num(b"0") => return Some(false),
        Tok::Word(w) if w.eq_ignore_ascii_case(b"TRUE") => return Some(true),
        Tok::Word(w) if w.eq_ignore_ascii_case(b"FALSE") => return Some(false),
        Tok::Word(w) => *w,
        Tok::Str(s) => s.as_slice(),
        _ => return None,
    };
    if word.eq_ignore_ascii_case(b"ON") {
        Some(true)
    } else if word.eq_ignore_ascii_case(b"OFF") {
        Some(false)
    } else {
        None
    }
}

/// Splits on commas outside parentheses.
fn top_level_items<'t, 'a>(toks: &'t [Token<'a>]) -> Vec<&'t [Token<'a>]> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (k, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Sym('(') => depth += 1,
            Tok::Sym(')') => depth = depth.saturating_sub(1),
            Tok::Sym(',') if depth == 0 => {
                items.push(toks.get(start..k).unwrap_or(&[]));
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(toks.get(start..).unwrap_or(&[]));
    items
}

// ------------------------------------------------------------- splitting --

/// Split a multi-statement query text into statements, as the MariaDB server
/// does for `CLIENT_MULTI_STATEMENTS`: on semicolons outside quotes, outside
/// comments and outside executable comments `/*! ... */`, and — inside
/// stored-program definitions (`CREATE ... PROCEDURE|FUNCTION|TRIGGER|EVENT|
/// PACKAGE`), `BEGIN NOT ATOMIC` and top-level `IF`/`CASE`/`LOOP`/`WHILE`/
/// `REPEAT`/`FOR` — only outside `BEGIN`/`IF`/`CASE`/... `END` blocks.
///
/// Returns byte ranges into `sql`, in order, without the separating
/// semicolon and without surrounding whitespace (comments are kept).
/// Every range starts and ends next to an ASCII byte or at an end, so a
/// UTF-8 text is cut on character boundaries. Empty statements are
/// dropped; when there is none at all the result is the single empty
/// range `0..0`.
pub fn split_statements(sql: impl AsRef<[u8]>) -> Vec<Range<usize>> {
    let sql = sql.as_ref();
    let toks = lex(sql);
    let mut out = Vec::new();
    let (mut i, mut seg_start) = (0, 0);
    while i < toks.len() {
        let end = statement_end(&toks, i);
        if end > i {
            let stop = toks.get(end).map_or(sql.len(), |t| t.span.start);
            out.push(trim(sql, seg_start..stop));
        }
        seg_start = toks.get(end).map_or(sql.len(), |t| t.span.end);
        i = end + 1;
    }
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

fn trim(sql: &[u8], r: Range<usize>) -> Range<usize> {
    let text = sql.get(r.clone()).unwrap_or_default();
    let ws = |ch: &u8| ch.is_ascii_whitespace() || *ch == 0x0b;
    let start = r.start + text.iter().position(|c| !ws(c)).unwrap_or(text.len());
    let end = r.start + text.iter().rposition(|c| !ws(c)).map_or(0, |p| p + 1);
    start..end.max(start)
}

/// Index of the `;` token ending the statement that starts at token
/// `start` (or `toks.len()`).
fn statement_end(toks: &[Token<'_>], start: usize) -> usize {
    let stmt = toks.get(start..).unwrap_or(&[]);
    let compound = opens_compound(stmt);
    let mut depth = 0usize;
    let mut j = 0;
    while let Some(t) = stmt.get(j) {
        match &t.tok {
            Tok::Sym(';') if !t.exec && depth == 0 => return start + j,
            tok @ Tok::Word(_) if compound => {
                if kw(tok, "END") {
                    depth = depth.saturating_sub(1);
                    let closes = ["IF", "LOOP", "WHILE", "REPEAT", "CASE", "FOR"];
                    if stmt
                        .get(j + 1)
                        .is_some_and(|n| closes.iter().any(|k| kw(&n.tok, k)))
                    {
                        j += 1;
                    }
                } else if kw(tok, "BEGIN")
                    || kw(tok, "CASE")
                    || (["IF", "LOOP", "WHILE", "REPEAT", "FOR"]
                        .iter()
                        .any(|k| kw(tok, k))
                        && at_statement_start(stmt, j)
                        && !is_call(stmt, j))
                {
                    depth += 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    toks.len()
}

/// Whether a statement needs `BEGIN ... END` nesting to be split.
fn opens_compound(stmt: &[Token<'_>]) -> bool {
    let mut c = Cur::new(stmt);
    const BLOCKS: [&str; 5] = ["LOOP", "WHILE", "REPEAT", "FOR", "BEGIN"];
    if c.is_any(&["IF", "CASE"]) || c.is_any(&BLOCKS[..4]) {
        return true;
    }
    if c.peek_at(1) == Some(&Tok::Sym(':')) && c.name().is_some() {
        c.pos += 1; // label: BEGIN ... END
        return c.is_any(&BLOCKS);
    }
    if c.eat("BEGIN") {
        return c.is("NOT") && c.is_at(1, "ATOMIC");
    }
    if c.eat("CREATE") {
        skip_ddl_prefix(&mut c);
        return c.is_any(&["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"]);
    }
    false
}

/// Whether token `j` begins a statement inside a compound statement.
fn at_statement_start(stmt: &[Token<'_>], j: usize) -> bool {
    let Some(prev) = j.checked_sub(1).and_then(|p| stmt.get(p)) else {
        return true;
    };
    let before = j.checked_sub(2).and_then(|p| stmt.get(p));
    match &prev.tok {
        Tok::Sym(';') | Tok::Sym(':') => true,
        t => {
            ["BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT", "ATOMIC"]
                .iter()
                .any(|k| kw(t, k))
                || (kw(t, "ROW") && before.is_some_and(|b| kw(&b.tok, "EACH")))
        }
    }
}

/// Whether token `j` is a function call: `(` follows, with a top-level
/// comma inside (`IF(a, b, c)`, `REPEAT('x', 3)`). The look-ahead stops at
/// `;` and after a bounded number of tokens, so splitting stays linear.
fn is_call(stmt: &[Token<'_>], j: usize) -> bool {
    const LOOK_AHEAD: usize = 1000;
    let mut depth = 0usize;
    for t in stmt.iter().skip(j + 1).take(LOOK_AHEAD) {
        match t.tok {
            Tok::Sym('(') => depth += 1,
            Tok::Sym(')') if depth <= 1 => return false,
            Tok::Sym(')') => depth -= 1,
            Tok::Sym(',') if depth == 1 => return true,
            Tok::Sym(';') => return false,
            _ if depth == 0 => return false,
            _ => {}
        }
    }
    false
}

// ------------------------------------------------------- DDL targets --

/// The databases a DDL statement may touch, for its total-order keys:
/// `current` (when not empty), every `name.` qualifier, and the name after
/// `DATABASE`/`SCHEMA`. An over-approximation (a `table.column` reference
/// yields a "database" too): a false key only costs a false conflict.
/// As written (database names are case-sensitive here), each once.
pub fn ddl_databases(sql: &str, current: &str) -> Vec<String> {
    let toks = lex(sql.as_bytes());
    let name = |t: Option<&Token<'_>>| match t.map(|t| &t.tok) {
        Some(Tok::Word(w)) => Some(String::from_utf8_lossy(w).into_owned()),
        Some(Tok::Ident(w)) => Some(String::from_utf8_lossy(w).into_owned()),
        _ => None,
    };
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    };
    if !current.is_empty() {
        add(current.to_string());
    }
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1).map(|t| &t.tok);
        if next == Some(&Tok::Sym('.'))
            && let Some(n) = name(Some(t))
        {
            add(n);
        }
        if let Tok::Word(w) = t.tok
            && (w.eq_ignore_ascii_case(b"DATABASE") || w.eq_ignore_ascii_case(b"SCHEMA"))
        {
            // CREATE/DROP/ALTER DATABASE [IF [NOT] EXISTS] name
            let mut j = i + 1;
            while let Some(Tok::Word(k)) = toks.get(j).map(|t| &t.tok) {
                if [&b"IF"[..], b"NOT", b"EXISTS"]
                    .iter()
                    .any(|x| k.eq_ignore_ascii_case(x))
                {
                    j += 1;
                } else {
                    break;
                }
            }
            if let Some(n) = name(toks.get(j)) {
                add(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn ddl_databases_cover_current_qualified_and_named() {
        assert_eq!(ddl_databases("ALTER TABLE t ADD c INT", "d"), vec!["d"]);
        assert_eq!(
            ddl_databases("RENAME TABLE a.t TO `B`.t2", ""),
            vec!["a", "B"]
        );
        assert_eq!(
            ddl_databases("CREATE DATABASE IF NOT EXISTS Shop", "d"),
            vec!["d", "Shop"]
        );
        assert_eq!(ddl_databases("DROP SCHEMA `x y`", ""), vec!["x y"]);
        assert!(ddl_databases("CREATE USER u", "").is_empty());
    }
    use super::ImplicitCommit::{Account, Admin, Ddl};
    use super::StatementClass as C;
    use super::*;
    use proptest::prelude::*;

    fn set(autocommit: Option<bool>, autocommit_unknown: bool, sync_wait: Option<u64>) -> C {
        let (transaction, global) = (false, false);
        C::Set {
            autocommit,
            autocommit_unknown,
            sync_wait,
            transaction,
            global,
        }
    }
    fn set_flags(transaction: bool, global: bool) -> C {
        let (autocommit, autocommit_unknown, sync_wait) = (None, false, None);
        C::Set {
            autocommit,
            autocommit_unknown,
            sync_wait,
            transaction,
            global,
        }
    }
    fn begin(read_only: bool, consistent_snapshot: bool) -> C {
        C::Begin(BeginOptions {
            read_only,
            consistent_snapshot,
        })
    }
    fn commit(chain: Option<bool>, release: Option<bool>) -> C {
        C::Commit { chain, release }
    }
    fn rollback(chain: Option<bool>, release: Option<bool>) -> C {
        C::Rollback { chain, release }
    }
    fn prepare(name: &str, text: Option<&str>) -> C {
        C::SqlPrepare {
            name: name.into(),
            text: text.map(Into::into),
        }
    }

    #[test]
    #[rustfmt::skip]
    fn classifies() {
        let ic = C::ImplicitCommit;
        let cases: Vec<(&str, C)> = vec![
            // reads
            ("select 1", C::Read),
            ("SELECT * FROM t FOR UPDATE", C::Read),
            ("select a from t lock in share mode", C::Read),
            ("SELECT a INTO OUTFILE '/tmp/x' FROM t", C::Read),
            ("SELECT NEXTVAL(s)", C::Read),
            ("/* x */ select 1", C::Read),
            ("-- c\nselect 1", C::Read),
            ("--\tc\nselect 1", C::Read),
            ("# c\n  SeLeCt 1;", C::Read),
            ("(SELECT 1) UNION (SELECT 2)", C::Read),
            ("((select 1))", C::Read),
            ("SHOW TABLES", C::Read),
            ("describe t", C::Read),
            ("DESC t", C::Read),
            ("EXPLAIN UPDATE t SET a=1", C::Read),
            ("HELP 'select'", C::Read),
            ("VALUES (1), (2)", C::Read),
            ("TABLE t", C::Read),
            ("CHECKSUM TABLE t", C::Read),
            ("WITH c AS (SELECT 1) SELECT * FROM c", C::Read),
            ("with recursive c(n) as (select 1 union select n+1 from c) select * from c", C::Read),
            ("WITH a AS (SELECT 1), b AS (SELECT 2) (SELECT * FROM a)", C::Read),
            ("ANALYZE SELECT 1", C::Read),
            ("ANALYZE FORMAT=JSON SELECT 1", C::Read),
            // writes
            ("#c\nUPDATE t SET a=1", C::Write),
            ("INSERT INTO t VALUES (1)", C::Write),
            ("insert ignore into t values (1)", C::Write),
            ("INSERT DELAYED INTO t VALUES (1)", C::Write),
            ("REPLACE INTO t VALUES (1)", C::Write),
            ("delete from `select` where 1", C::Write),
            ("LOAD DATA LOCAL INFILE 'f' INTO TABLE t", C::Write),
            ("LOAD XML INFILE 'f' INTO TABLE t", C::Write),
            ("CALL p()", C::Write),
            ("DO SLEEP(1)", C::Write),
            ("HANDLER t OPEN", C::Write),
            ("BINLOG 'abc'", C::Write),
            ("WITH c AS (SELECT 1) UPDATE t JOIN c SET t.a=1", C::Write),
            ("WITH c AS (SELECT 1) DELETE FROM t", C::Write),
            ("ANALYZE UPDATE t SET a=1", C::Write),
            ("BEGIN NOT ATOMIC SELECT 1; END", C::Write),
            ("IF 1 THEN SELECT 1; END IF", C::Write),
            ("`select` 1", C::Write),
            ("frobnicate the database", C::Write),
            ("LOCK INSTANCE FOR BACKUP", C::Write),
            ("'abc", C::Write),
            // transactions
            ("BEGIN", begin(false, false)),
            ("begin work;", begin(false, false)),
            ("START TRANSACTION", begin(false, false)),
            ("/*!START TRANSACTION*/", begin(false, false)),
            ("START TRANSACTION READ ONLY", begin(true, false)),
            ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ WRITE", begin(false, true)),
            ("start transaction read only, with consistent snapshot", begin(true, true)),
            ("COMMIT", commit(None, None)),
            ("COMMIT WORK", commit(None, None)),
            ("COMMIT AND CHAIN", commit(Some(true), None)),
            ("COMMIT AND NO CHAIN RELEASE", commit(Some(false), Some(true))),
            ("commit no release", commit(None, Some(false))),
            ("COMMIT RELEASE", commit(None, Some(true))),
            ("COMMIT AND CHAIN RELEASE", commit(Some(true), Some(true))),
            ("ROLLBACK", rollback(None, None)),
            ("ROLLBACK WORK AND CHAIN NO RELEASE", rollback(Some(true), Some(false))),
            ("ROLLBACK AND NO CHAIN", rollback(Some(false), None)),
            ("ROLLBACK WORK TO SAVEPOINT s1", C::RollbackToSavepoint),
            ("ROLLBACK TO s1", C::RollbackToSavepoint),
            ("SAVEPOINT s1", C::Savepoint),
            ("RELEASE SAVEPOINT s1", C::ReleaseSavepoint),
            ("xa start 'x'", C::Xa),
            ("XA RECOVER", C::Xa),
            // SET
            ("SET autocommit=0", set(Some(false), false, None)),
            ("set @@SESSION.autocommit = 'OFF'", set(Some(false), false, None)),
            ("SET @@autocommit = 1", set(Some(true), false, None)),
            ("SET SESSION autocommit=ON", set(Some(true), false, None)),
            ("SET LOCAL autocommit = TRUE", set(Some(true), false, None)),
            ("SET @@local.autocommit := false", set(Some(false), false, None)),
            ("SET a=1, autocommit = 1", set(Some(true), false, None)),
            ("SET autocommit = @x", set(None, true, None)),
            ("SET autocommit = DEFAULT", set(None, true, None)),
            ("SET autocommit = 0, autocommit = 2", set(None, true, None)),
            ("SET @autocommit = 0", set(None, false, None)),
            ("SET SESSION wsrep_sync_wait = 1", set(None, false, Some(1))),
            ("set wsrep_sync_wait=7", set(None, false, Some(7))),
            ("SET @@session.wsrep_sync_wait = 15, `autocommit` = off", set(Some(false), false, Some(15))),
            ("SET GLOBAL max_connections = 10", set_flags(false, true)),
            ("SET @@global.autocommit = 0", set_flags(false, true)),
            ("SET GLOBAL a = 1, autocommit = 0", set_flags(false, true)),
            ("SET GLOBAL a = 1, SESSION autocommit = 0",
             C::Set { autocommit: Some(false), autocommit_unknown: false, sync_wait: None, transaction: false, global: true }),
            ("SET NAMES utf8mb4", set(None, false, None)),
            ("SET CHARACTER SET utf8", set(None, false, None)),
            ("SET CHARSET utf8", set(None, false, None)),
            ("/*!40101 SET NAMES utf8 */", set(None, false, None)),
            ("/*M!100100 SET NAMES utf8 */;", set(None, false, None)),
            ("SET sql_mode = CONCAT(@@sql_mode, ',STRICT'), autocommit = 0", set(Some(false), false, None)),
            ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", set_flags(true, false)),
            ("SET SESSION TRANSACTION READ ONLY", set_flags(true, false)),
            ("SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE", set_flags(true, true)),
            ("SET STATEMENT max_statement_time=1 FOR UPDATE t SET a=1", C::Write),
            ("SET STATEMENT a=(1), b=2 FOR DELETE FROM t", C::Write),
            ("SET STATEMENT max_statement_time=1 FOR SELECT 1", C::Read),
            ("SET PASSWORD = PASSWORD('x')", ic(Account)),
            ("SET DEFAULT ROLE r FOR u", ic(Account)),
            ("SET ROLE r", C::Session),
            // DDL and accounts
            ("CREATE TABLE t (a int)", ic(Ddl)),
            ("CREATE OR REPLACE TABLE t SELECT 1", ic(Ddl)),
            ("CREATE TEMPORARY TABLE t (a int)", C::TemporaryTable),
            ("create or replace temporary table t (a int)", C::TemporaryTable),
            ("DROP TEMPORARY TABLE IF EXISTS t", C::TemporaryTable),
            ("DROP TABLE IF EXISTS t", ic(Ddl)),
            ("ALTER ONLINE TABLE t ADD c INT", ic(Ddl)),
            ("ALTER DATABASE d CHARACTER SET utf8", ic(Ddl)),
            ("CREATE SCHEMA s", ic(Ddl)),
            ("DROP DATABASE d", ic(Ddl)),
            ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h')", ic(Ddl)),
            ("CREATE UNIQUE INDEX i ON t (a)", ic(Ddl)),
            ("DROP INDEX i ON t", ic(Ddl)),
            ("TRUNCATE TABLE t", ic(Ddl)),
            ("truncate `t`", ic(Ddl)),
            ("RENAME TABLE a TO b", ic(Ddl)),
            ("CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN SELECT 1; END", ic(Ddl)),
            ("CREATE DEFINER = root@localhost FUNCTION f() RETURNS INT RETURN 1", ic(Ddl)),
            ("CREATE DEFINER='a'@'10.0.0.%' SQL SECURITY INVOKER VIEW v AS SELECT 1", ic(Ddl)),
            ("CREATE OR REPLACE ALGORITHM = MERGE DEFINER=CURRENT_USER VIEW v AS SELECT 1", ic(Ddl)),
            ("CREATE DEFINER=CURRENT_USER() TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @a=1", ic(Ddl)),
            ("CREATE DEFINER=u@my-host.example.com EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1", ic(Ddl)),
            ("CREATE AGGREGATE FUNCTION f(x INT) RETURNS INT BEGIN RETURN 1; END", ic(Ddl)),
            ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", ic(Ddl)),
            ("CREATE SEQUENCE s", ic(Ddl)),
            ("DROP PACKAGE BODY p", ic(Ddl)),
            ("/*!50003 CREATE*/ /*!50020 DEFINER=`u`@`h`*/ /*!50003 TRIGGER t AFTER INSERT ON x FOR EACH ROW SET @a = 1 */", ic(Ddl)),
            ("CREATE USER u@'%' IDENTIFIED BY 'p'", ic(Account)),
            ("ALTER USER u ACCOUNT LOCK", ic(Account)),
            ("DROP USER u", ic(Account)),
            ("RENAME USER a TO b", ic(Account)),
            ("CREATE ROLE r", ic(Account)),
            ("DROP ROLE r", ic(Account)),
            ("GRANT SELECT ON *.* TO u", ic(Account)),
            ("REVOKE ALL ON *.* FROM u", ic(Account)),
            ("CREATE FROB x", C::Write),
            // administration
            ("ANALYZE TABLE t", ic(Admin)),
            ("ANALYZE LOCAL TABLE t", ic(Admin)),
            ("analyze no_write_to_binlog table t", ic(Admin)),
            ("CHECK TABLE t", ic(Admin)),
            ("OPTIMIZE TABLE t", ic(Admin)),
            ("REPAIR TABLE t", ic(Admin)),
            ("CACHE INDEX t IN c", ic(Admin)),
            ("LOAD INDEX INTO CACHE t", ic(Admin)),
            ("FLUSH TABLES", ic(Admin)),
            ("FLUSH TABLES WITH READ LOCK", ic(Admin)),
            ("RESET MASTER", ic(Admin)),
            ("RESET SLAVE", ic(Admin)),
            ("INSTALL SONAME 'x'", ic(Admin)),
            ("UNINSTALL PLUGIN x", ic(Admin)),
            ("BACKUP STAGE START", ic(Admin)),
            ("PURGE BINARY LOGS TO 'b.000002'", ic(Admin)),
            ("CHANGE MASTER TO MASTER_HOST='h'", ic(Admin)),
            ("START SLAVE", ic(Admin)),
            ("START REPLICA", ic(Admin)),
            ("START ALL SLAVES", ic(Admin)),
            ("STOP SLAVE", ic(Admin)),
            ("SHUTDOWN", ic(Admin)),
            // locks, session statements
            ("LOCK TABLES t WRITE", C::LockTables { unlock: false }),
            ("lock table t read", C::LockTables { unlock: false }),
            ("UNLOCK TABLES", C::LockTables { unlock: true }),
            ("FLUSH TABLES t WITH READ LOCK", C::LockTables { unlock: false }),
            ("flush local table a, `b` with read lock", C::LockTables { unlock: false }),
            ("FLUSH NO_WRITE_TO_BINLOG TABLES t FOR EXPORT", C::LockTables { unlock: false }),
            ("FLUSH TABLES t", ic(Admin)),
            ("FLUSH LOCAL TABLES WITH READ LOCK", ic(Admin)),
            ("USE db", C::Session),
            ("KILL 3", C::Session),
            ("GET DIAGNOSTICS @n = NUMBER", C::Session),
            ("SIGNAL SQLSTATE '45000'", C::Session),
            ("RESIGNAL", C::Session),
            ("RESET QUERY CACHE", C::Session),
            // SQL-level prepared statements
            ("PREPARE s FROM 'INSERT INTO t VALUES (?)'", prepare("s", Some("INSERT INTO t VALUES (?)"))),
            ("PREPARE `my s` FROM \"SELECT 'a\\\"b\\n'\"", prepare("my s", Some("SELECT 'a\"b\n'"))),
            ("prepare s from 'it''s ' 'two'", prepare("s", Some("it's two"))),
            ("PREPARE s FROM @q", prepare("s", None)),
            ("PREPARE s", C::Write),
            ("EXECUTE s USING @a", C::SqlExecute { name: "s".into() }),
            ("EXECUTE IMMEDIATE 'SELECT 1'", C::Read),
            ("EXECUTE IMMEDIATE 'UPDATE t SET a=''x'''", C::Write),
            ("EXECUTE IMMEDIATE 'COMMIT'", commit(None, None)),
            ("EXECUTE IMMEDIATE @q", C::Write),
            ("DEALLOCATE PREPARE s", C::SqlDeallocate { name: "s".into() }),
            ("DROP PREPARE `s`", C::SqlDeallocate { name: "s".into() }),
            // versioned comments: MySQL-5.7+-only ones are plain comments to MariaDB
            ("/*!80000 SET autocommit=0 */ SELECT 1", C::Read),
            ("/*M!999999 UPDATE t SET a=1 */ SELECT 1", C::Read),
            // empty and broken input
            ("", C::Empty),
            ("   \n\t", C::Empty),
            (";;", C::Empty),
            ("/* only comment */", C::Empty),
            ("/* abc", C::Empty),
            ("-- only", C::Empty),
            ("(", C::Write),
        ];
        assert!(cases.len() >= 80);
        for (sql, want) in cases {
            assert_eq!(classify(sql), want, "classify({sql:?})");
        }
    }

    fn parts(sql: &str) -> Vec<&str> {
        split_statements(sql).into_iter().map(|r| &sql[r]).collect()
    }

    const TRIGGER: &str = "CREATE DEFINER=`a`@`%` TRIGGER t BEFORE INSERT ON x FOR EACH ROW \
        BEGIN IF (new.a > 1) THEN SET new.b = IF(new.a, 1, 2); \
        ELSE SET new.b = CASE WHEN 1 THEN REPEAT('x', 2) END; END IF; \
        l: LOOP LEAVE l; END LOOP l; WHILE 0 DO SELECT 1; END WHILE; \
        REPEAT SET @n = 1; UNTIL 1 END REPEAT; END";

    #[test]
    #[rustfmt::skip]
    fn splits() {
        let trigger_then = format!("{TRIGGER};\nSELECT 9");
        let cases: &[(&str, &[&str])] = &[
            ("select 1; select 2", &["select 1", "select 2"]),
            ("select ';'; select 2", &["select ';'", "select 2"]),
            ("select 1 -- ; not a split\n; select 2", &["select 1 -- ; not a split", "select 2"]),
            ("select 1 --; select 2", &["select 1 --", "select 2"]),
            ("select 1 # ;\n; select 2", &["select 1 # ;", "select 2"]),
            ("select 1 /* ; */; select 2", &["select 1 /* ; */", "select 2"]),
            ("select \"a\\\";b\"; select 2", &["select \"a\\\";b\"", "select 2"]),
            ("select 'a\\\\';select 'b''c;'", &["select 'a\\\\'", "select 'b''c;'"]),
            ("select 'a'';b'; select `x;y`", &["select 'a'';b'", "select `x;y`"]),
            ("/*!40101 SET a=1; */; select 2", &["/*!40101 SET a=1; */", "select 2"]),
            ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END; SELECT 3",
             &["CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", "SELECT 3"]),
            ("BEGIN NOT ATOMIC DECLARE x INT; IF 1 THEN SELECT 1; END IF; END; select 5",
             &["BEGIN NOT ATOMIC DECLARE x INT; IF 1 THEN SELECT 1; END IF; END", "select 5"]),
            (&trigger_then, &[TRIGGER, "SELECT 9"]),
            ("CREATE FUNCTION f() RETURNS INT RETURN 1; SELECT f()",
             &["CREATE FUNCTION f() RETURNS INT RETURN 1", "SELECT f()"]),
            ("IF 1 THEN SELECT 1; END IF; SELECT 2", &["IF 1 THEN SELECT 1; END IF", "SELECT 2"]),
            ("l: BEGIN NOT ATOMIC SELECT 1; END l; SELECT 2", &["l: BEGIN NOT ATOMIC SELECT 1; END l", "SELECT 2"]),
            ("BEGIN; UPDATE t SET a=1; COMMIT", &["BEGIN", "UPDATE t SET a=1", "COMMIT"]),
            ("select 1;", &["select 1"]),
            ("  select 1 ;  ; -- bye", &["select 1"]),
            ("/* c */ select 1", &["/* c */ select 1"]),
            ("select 'abc", &["select 'abc"]),
            ("select 1; /* abc", &["select 1"]),
            ("", &[""]),
            (";;", &[""]),
        ];
        for (sql, want) in cases {
            assert_eq!(parts(sql), *want, "split_statements({sql:?})");
        }
        assert_eq!(split_statements(";;"), vec![0..0]);
        assert_eq!(split_statements(" \n"), vec![0..0]);
    }

    #[test]
    fn text_that_is_not_utf8_is_split_and_classified_on_bytes() {
        // latin1 'é' (0xE9) inside a literal, a comment and an identifier.
        let sql: &[u8] = b"SELECT '\xe9;' /* \xe9; */; INSERT INTO t\xe9 VALUES (1);XA START 'x'";
        let parts: Vec<&[u8]> = split_statements(sql).into_iter().map(|r| &sql[r]).collect();
        assert_eq!(
            parts,
            vec![
                &b"SELECT '\xe9;' /* \xe9; */"[..],
                b"INSERT INTO t\xe9 VALUES (1)",
                b"XA START 'x'"
            ]
        );
        let classes: Vec<C> = parts.iter().map(classify).collect();
        assert_eq!(classes, vec![C::Read, C::Write, C::Xa]);
        // Names and literals keep their bytes.
        assert_eq!(
            classify(b"PREPARE s\xe9 FROM 'SELECT \xff'"),
            C::SqlPrepare {
                name: b"s\xe9".to_vec(),
                text: Some(b"SELECT \xff".to_vec())
            }
        );
        assert_eq!(
            classify(b"EXECUTE `\xe9\xff`"),
            C::SqlExecute {
                name: b"\xe9\xff".to_vec()
            }
        );
        // A keyword cannot be made of other bytes.
        assert_eq!(classify(b"\xc5\xbfELECT 1"), C::Write);
    }

    #[test]
    fn nested_execute_immediate_is_bounded() {
        let mut sql = "SELECT 1".to_owned();
        for _ in 0..12 {
            sql = format!("EXECUTE IMMEDIATE '{}'", sql.replace('\'', "''"));
        }
        assert_eq!(classify(&sql), C::Write);
    }

    const POOL: &[&str] = &[
        "select 1",
        "update t set a = 'x;y'",
        "insert into t values (1)",
        "SET autocommit=0",
        "BEGIN",
        "COMMIT AND CHAIN",
        "select /* ; */ \"a;b\"",
        "delete from `t;x` where b = 'it''s; \\' ok'",
        "CREATE PROCEDURE p() BEGIN SELECT 1; IF 1 THEN SELECT 2; END IF; END",
        "BEGIN NOT ATOMIC SELECT 1; END",
        "PREPARE s FROM 'select 1; select 2'",
        "/*!40101 SET NAMES utf8 */",
        "START TRANSACTION READ ONLY",
        "ROLLBACK TO s1",
        "CREATE TEMPORARY TABLE t (a int)",
    ];

    #[rustfmt::skip]
    const SOUP: &[&str] = &[
        "BEGIN", "END", "IF", "CASE", "LOOP", "WHILE", "REPEAT", "FOR", "CREATE", "PROCEDURE",
        "SET", "STATEMENT", "EXECUTE", "IMMEDIATE", "WITH", "AS", "(", ")", ";", ",", "'", "`",
        "/*!", "*/", "@", "=", "autocommit", "1", "NOT", "ATOMIC", ":", "DEFINER", "SELECT",
    ];

    /// In order, non-overlapping, within bounds, on char boundaries.
    fn check_ranges(sql: &str) {
        let ranges = split_statements(sql);
        assert!(!ranges.is_empty());
        let mut last = 0;
        for r in ranges {
            assert!(
                r.start >= last && r.start <= r.end && r.end <= sql.len(),
                "{r:?} in {sql:?}"
            );
            assert!(sql.is_char_boundary(r.start) && sql.is_char_boundary(r.end));
            let _ = classify(&sql[r.clone()]);
            last = r.end;
        }
    }

    proptest! {
        #[test]
        fn total_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&b);
            let mut last = 0;
            for r in split_statements(&b) {
                prop_assert!(r.start >= last && r.start <= r.end && r.end <= b.len());
                let _ = classify(&b[r.clone()]);
                last = r.end;
            }
        }

        #[test]
        fn total_on_any_string(s in any::<String>()) {
            let _ = classify(&s);
            check_ranges(&s);
        }

        #[test]
        fn total_on_sql_like_strings(s in "[a-zA-Z0-9 ;'\"`#/*!M(),.=@\\\\\n\té-]{0,80}") {
            let _ = classify(&s);
            check_ranges(&s);
        }

        #[test]
        fn total_on_keyword_soup(words in prop::collection::vec(prop::sample::select(SOUP), 0..40)) {
            let s = words.join(" ");
            let _ = classify(&s);
            check_ranges(&s);
        }

        #[test]
        fn joined_statements_split_back(
            stmts in prop::collection::vec(prop::sample::select(POOL), 1..6)
        ) {
            let sql = stmts.join("; ");
            let got = parts(&sql);
            prop_assert_eq!(got.len(), stmts.len(), "{:?}", sql);
            for (part, orig) in got.iter().zip(&stmts) {
                prop_assert_eq!(part.trim(), orig.trim());
                prop_assert_eq!(classify(part), classify(orig));
            }
        }
    }
}
