//! Key normalization against a real MariaDB 10.11: for every supported
//! collation, thousands of string pairs go into a table with a UNIQUE
//! index; every pair the server treats as a duplicate must get equal keys
//! from our encoder (a missed conflict would let replicas diverge). The
//! weight tables are also compared with `WEIGHT_STRING` code point by code
//! point, so a server whose collations changed is noticed.

use mysql_async::prelude::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use replicator::keys::{Collation, ColumnValue, RowKeyEncoder, RowKeyValues};

/// Building blocks for strings: groups of characters that some collation
/// calls equal, so that many generated pairs are equal and many are not.
const GROUPS: &[&[&str]] = &[
    &[
        "a",
        "A",
        "á",
        "Á",
        "à",
        "ä",
        "Ä",
        "å",
        "Å",
        "ª",
        "ａ",
        "Ａ",
        "𝐀",
        "a\u{0301}",
    ],
    &["e", "E", "é", "É", "è", "ê", "ë", "ｅ", "e\u{0301}"],
    &["o", "O", "ö", "Ö", "ø", "Ø", "ó", "œ", "Œ", "oe"],
    &["s", "S", "ß", "ẞ", "ss", "SS", "Ss", "ſ"],
    &["i", "I", "ı", "İ", "í", "ï"],
    &["ae", "æ", "Æ", "AE"],
    &["fi", "ﬁ", "FI"],
    &["σ", "ς", "Σ"],
    &["1", "¹", "１", "①"],
    &[" ", "  ", "\u{00A0}", "\t", ""],
    &["\u{200B}", "\u{00AD}", "\u{0000}", "", "\u{FEFF}"],
    &["😀", "😁", "🙂", "😀😀", "\u{1F600}\u{FE0F}"],
    &["中", "文", "字", "中文"],
    &["b", "B", "c", "C", "ç", "Ç", "z", "Z", "ž"],
];

/// Latin-1 only, for latin1_swedish_ci.
const LATIN1_GROUPS: &[&[&str]] = &[
    &["a", "A", "á", "Á", "à", "ä", "Ä", "å", "Å", "æ", "Æ"],
    &["e", "E", "é", "É", "è", "ê", "ë"],
    &["o", "O", "ö", "Ö", "ø", "Ø", "ó"],
    &["s", "S", "ß", "ss"],
    &["y", "Y", "ü", "Ü", "ý", "ÿ"],
    &["d", "D", "ð", "Ð"],
    &[" ", "  ", ""],
    &["1", "¹", "²"],
];

fn random_string(rng: &mut StdRng, groups: &[&[&str]]) -> Vec<(usize, usize)> {
    let len = rng.random_range(1..6);
    (0..len)
        .map(|_| {
            let g = rng.random_range(0..groups.len());
            (g, rng.random_range(0..groups[g].len()))
        })
        .collect()
}

fn render(parts: &[(usize, usize)], groups: &[&[&str]]) -> String {
    parts.iter().map(|(g, i)| groups[*g][*i]).collect()
}

/// A string and a variant: same groups, each member possibly swapped, and
/// possibly trailing spaces. Often equal under a `_ci` collation, often not.
fn pair(rng: &mut StdRng, groups: &[&[&str]]) -> (String, String) {
    let a = random_string(rng, groups);
    let b: Vec<(usize, usize)> = if rng.random_bool(0.15) {
        random_string(rng, groups)
    } else {
        a.iter()
            .map(|(g, i)| {
                if rng.random_bool(0.4) {
                    (*g, rng.random_range(0..groups[*g].len()))
                } else {
                    (*g, *i)
                }
            })
            .collect()
    };
    let mut a = render(&a, groups);
    let mut b = render(&b, groups);
    for s in [&mut a, &mut b] {
        if rng.random_bool(0.2) {
            s.push_str(["  ", " ", "\u{00A0}"].choose(rng).unwrap());
        }
    }
    (a, b)
}

struct Case {
    collation: &'static str,
    /// Column type in the server.
    column: &'static str,
    latin1: bool,
    /// Prefix length of the unique index, in characters.
    prefix: Option<usize>,
}

const CASES: &[Case] = &[
    Case {
        collation: "binary",
        column: "VARBINARY(200)",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_bin",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_nopad_bin",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_general_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_unicode_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_unicode_520_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_general_nopad_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_nopad_ci",
        latin1: false,
        prefix: None,
    },
    Case {
        collation: "utf8mb4_unicode_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        latin1: false,
        prefix: Some(3),
    },
    Case {
        collation: "latin1_swedish_ci",
        column: "VARCHAR(100) CHARACTER SET latin1 COLLATE latin1_swedish_ci",
        latin1: true,
        prefix: None,
    },
    Case {
        collation: "latin1_bin",
        column: "VARCHAR(100) CHARACTER SET latin1 COLLATE latin1_bin",
        latin1: true,
        prefix: None,
    },
    // Not in our tables: the conservative rule must still never miss.
    Case {
        collation: "utf8mb4_german2_ci",
        column: "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_german2_ci",
        latin1: false,
        prefix: None,
    },
];

const PAIRS_PER_CASE: usize = 3000;

fn our_key(case: &Case, value: &str) -> RowKeyValues {
    let bytes: Vec<u8> = if case.latin1 {
        // The column stores latin1: one byte per character.
        value
            .chars()
            .map(|c| u8::try_from(u32::from(c)).expect("latin1 test data"))
            .collect()
    } else {
        value.as_bytes().to_vec()
    };
    let column = if case.collation == "binary" {
        ColumnValue::Bytes {
            bytes: &bytes,
            prefix_bytes: case.prefix,
        }
    } else {
        ColumnValue::Text {
            bytes: &bytes,
            collation: Collation::from_name(case.collation),
            prefix_chars: case.prefix,
        }
    };
    RowKeyEncoder::new()
        .encode(&[column])
        .expect("test strings are valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_equal_whenever_a_unique_index_says_duplicate() {
    let server = e2e::TestServer::start().await.expect("start MariaDB");
    let mut conn = server.root_conn().await.unwrap();
    conn.query_drop("SET NAMES utf8mb4").await.unwrap();
    conn.query_drop("CREATE DATABASE keys_test").await.unwrap();
    conn.query_drop("USE keys_test").await.unwrap();

    let seed: u64 = std::env::var("KEYS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (KEYS_TEST_SEED={seed} replays)");
    let mut rng = StdRng::seed_from_u64(seed);

    for (n, case) in CASES.iter().enumerate() {
        let table = format!("t{n}");
        let index = match case.prefix {
            Some(p) => format!("v({p})"),
            None => "v".to_string(),
        };
        conn.query_drop(format!(
            "CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, pair_id INT NOT NULL, \
             v {col}, UNIQUE KEY uk (pair_id, {index})) ENGINE=InnoDB",
            col = case.column
        ))
        .await
        .unwrap();
        let groups = if case.latin1 { LATIN1_GROUPS } else { GROUPS };
        let pairs: Vec<(String, String)> = (0..PAIRS_PER_CASE)
            .map(|_| pair(&mut rng, groups))
            .collect();
        // Both members of each pair into the same unique index: the second
        // insert is ignored exactly when the server sees a duplicate.
        let rows: Vec<(usize, &String)> = pairs
            .iter()
            .enumerate()
            .flat_map(|(i, (a, b))| [(i, a), (i, b)])
            .collect();
        for chunk in rows.chunks(500) {
            let placeholders = vec!["(?, ?)"; chunk.len()].join(",");
            let params: Vec<mysql_async::Value> = chunk
                .iter()
                .flat_map(|(i, v)| [(*i as i64).into(), v.as_str().into()])
                .collect();
            conn.exec_drop(
                format!("INSERT IGNORE INTO {table} (pair_id, v) VALUES {placeholders}"),
                params,
            )
            .await
            .unwrap();
        }
        let counts: Vec<(i64, i64)> = conn
            .query(format!(
                "SELECT pair_id, COUNT(*) FROM {table} GROUP BY pair_id ORDER BY pair_id"
            ))
            .await
            .unwrap();
        assert_eq!(
            counts.len(),
            PAIRS_PER_CASE,
            "{}: every pair stored",
            case.collation
        );

        let mut server_equal = 0;
        let mut false_conflicts = 0;
        for (pair_id, count) in counts {
            let (a, b) = &pairs[pair_id as usize];
            let duplicate = count == 1;
            let same_key = our_key(case, a) == our_key(case, b);
            if duplicate {
                server_equal += 1;
                assert!(
                    same_key,
                    "{} (prefix {:?}): the server says {a:?} = {b:?} but their keys differ \
                     (missed conflict; seed {seed})",
                    case.collation, case.prefix
                );
            } else if same_key {
                false_conflicts += 1;
            }
        }
        eprintln!(
            "{:<26} prefix {:?}: {server_equal} equal pairs, {false_conflicts} false conflicts of {} unequal",
            case.collation,
            case.prefix,
            PAIRS_PER_CASE - server_equal
        );
        // The test only means something if it sees both outcomes.
        assert!(
            server_equal > 100,
            "{}: too few equal pairs ({server_equal})",
            case.collation
        );
        assert!(
            PAIRS_PER_CASE - server_equal > 100,
            "{}: too few unequal pairs",
            case.collation
        );
        // Collations we have tables for are exact: no false conflicts.
        if !Collation::from_name(case.collation).is_all_equal_fallback() {
            assert_eq!(
                false_conflicts, 0,
                "{}: keys are coarser than the collation (seed {seed})",
                case.collation
            );
        }
    }
}

/// The compiled-in tables equal the server's `WEIGHT_STRING` for every code
/// point, so keys stay exact if the tables were regenerated from a newer
/// server and not this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_tables_match_the_server_for_every_code_point() {
    let server = e2e::TestServer::start().await.expect("start MariaDB");
    let mut conn = server.root_conn().await.unwrap();
    conn.query_drop("USE mysql").await.unwrap();
    for collation in [
        "utf8mb4_general_ci",
        "utf8mb4_unicode_ci",
        "utf8mb4_unicode_520_ci",
    ] {
        let rows: Vec<(u32, Vec<u8>)> = conn
            .query(format!(
                "SELECT seq, WEIGHT_STRING(CONVERT(CHAR(seq USING utf32) USING utf8mb4) COLLATE {collation}) \
                 FROM seq_0_to_1114111 WHERE seq NOT BETWEEN 55296 AND 57343"
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), 0x110000 - 0x800);
        // The NO PAD variant has the same weights without stripping trailing
        // space weights, which WEIGHT_STRING of one character keeps.
        let c = Collation::from_name(&collation.replace("_ci", "_nopad_ci"));
        let mut mismatches = 0;
        for (cp, server_weights) in rows {
            let ch = char::from_u32(cp).unwrap().to_string();
            let mut ours = Vec::new();
            c.normalize(ch.as_bytes(), None, &mut ours).unwrap();
            if ours != server_weights {
                mismatches += 1;
                assert!(
                    mismatches < 5,
                    "{collation}: U+{cp:04X} ours {ours:02X?} server {server_weights:02X?}"
                );
            }
        }
        assert_eq!(mismatches, 0, "{collation}");
    }
    let rows: Vec<(u8, Vec<u8>)> = conn
        .query("SELECT seq, WEIGHT_STRING(CHAR(seq USING latin1) COLLATE latin1_swedish_ci) FROM seq_0_to_255")
        .await
        .unwrap();
    let c = Collation::from_name("latin1_swedish_nopad_ci");
    for (byte, server_weights) in rows {
        let mut ours = Vec::new();
        c.normalize(&[byte], None, &mut ours).unwrap();
        // Our weights are 16-bit; latin1's are 8-bit.
        let server16: Vec<u8> = server_weights.iter().flat_map(|w| [0, *w]).collect();
        assert_eq!(ours, server16, "latin1_swedish_ci byte {byte:#04x}");
    }
}
