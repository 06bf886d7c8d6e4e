//! Operating the ordered log with real processes: flow control, the
//! retention window (catch-up from the log inside it, state transfer
//! outside it) and mutual TLS between members.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::group_node::{GroupNode, SECRET, Start, addresses, cluster, wait_voters};

const T: Duration = Duration::from_secs(20);

async fn node_id(node: &mut GroupNode) -> u64 {
    node.status().await["node_id"].as_u64().unwrap()
}

async fn wait_paused_by(node: &mut GroupNode, holders: &[u64]) {
    let want: Vec<serde_json::Value> = holders.iter().map(|h| (*h).into()).collect();
    node.wait_status(&format!("paused by {holders:?}"), T, |s| {
        s["paused_by"].as_array().is_some_and(|p| *p == want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_flow_control_holds_proposals_cluster_wide_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (_addrs, mut nodes) = cluster(dir.path(), "t80", 3, &[]).await;
    nodes[0].propose("before", T).await.unwrap();
    let slow = node_id(&mut nodes[2]).await;

    nodes[2].send("pause").await;
    for node in nodes.iter_mut() {
        wait_paused_by(node, &[slow]).await;
    }
    // From the leader and from a follower: both are held.
    nodes[0].send("propose held-0").await;
    nodes[1].send("propose held-1").await;
    // The hold under test: nothing may commit while the slow member asks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &nodes {
        let committed = node.committed();
        assert!(
            !committed.values().any(|id| id.starts_with("held")),
            "a proposal committed while flow control held the cluster: {committed:?}"
        );
    }
    nodes[2].send("resume").await;
    for node in &nodes {
        node.wait_committed("held-0", T).await;
        node.wait_committed("held-1", T).await;
    }
    wait_paused_by(&mut nodes[0], &[]).await;

    // A member that dies while holding the cluster stops holding it once
    // its pause lapses.
    nodes[2].send("pause").await;
    wait_paused_by(&mut nodes[0], &[slow]).await;
    nodes[0].send("propose lapse").await;
    let slow_node = nodes.pop().unwrap();
    slow_node.kill().await;
    for node in &nodes {
        node.wait_committed("lapse", T).await;
    }
    wait_paused_by(&mut nodes[0], &[]).await;
}

/// First index of each log segment in a member's data directory.
fn segment_starts(data_dir: &Path) -> Vec<u64> {
    let mut starts: Vec<u64> = std::fs::read_dir(data_dir.join("raft").join("log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("segment-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    starts.sort();
    starts
}

fn log_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("raft").join("log"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Poll `cond` (a file-system observation) until it holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t85_retention_window_ist_inside_state_transfer_outside() {
    let dir = tempfile::tempdir().unwrap();
    let window = [
        "--keep-position",
        "--retention-entries",
        "40",
        "--purge-interval-ms",
        "100",
        "--segment-bytes",
        "1024",
    ];
    let (addrs, mut nodes) = cluster(dir.path(), "t85", 3, &window).await;
    let dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("n{i}"))).collect();

    for i in 0..5 {
        nodes[0].propose(&format!("early-{i}"), T).await.unwrap();
    }
    nodes[2].wait_committed("early-4", T).await;
    // Inside the window: a member down for 10 entries catches up from the
    // log, entry by entry, with no state transfer.
    let down = nodes.pop().unwrap();
    down.kill().await;
    for i in 0..10 {
        nodes[0].propose(&format!("in-{i}"), T).await.unwrap();
    }
    let back = GroupNode::start("t85", &addrs[2], &dirs[2], Start::Resume, &window).await;
    for i in 0..10 {
        back.wait_committed(&format!("in-{i}"), T).await;
    }
    assert!(
        !back.committed().values().any(|id| id.starts_with("early")),
        "entries the member already had are not delivered again"
    );
    assert!(
        !back.seen(|e| e["event"] == "snapshot"),
        "no state transfer inside the window"
    );
    nodes.push(back);

    // Outside the window: down for 200 entries, the log is purged past it.
    let down = nodes.pop().unwrap();
    down.kill().await;
    let mut last = 0;
    for i in 0..200 {
        last = nodes[0].propose(&format!("out-{i}"), T).await.unwrap();
    }
    wait_until(
        "the leader's log to be purged past the absent member",
        || {
            segment_starts(&dirs[0])
                .first()
                .is_some_and(|first| *first > 150)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: segments {:?}", segment_starts(&dirs[0])));
    let kept = last + 1 - segment_starts(&dirs[0])[0];
    assert!(
        kept >= 40,
        "the window itself is kept: {kept} entries (last {last})"
    );
    let back = GroupNode::start("t85", &addrs[2], &dirs[2], Start::Resume, &window).await;
    let snapshot = back
        .wait_event("a state-transfer notice", T, |e| e["event"] == "snapshot")
        .await;
    let at = snapshot["seqno"].as_u64().unwrap();
    assert!(
        at > 150,
        "state transfer needed up to the purge point, got {at}"
    );
    // After the notice, the rest arrives from the log.
    nodes[0].propose("after", T).await.unwrap();
    back.wait_committed("after", T).await;
    assert!(
        back.committed().keys().all(|seqno| *seqno > at),
        "nothing at or below the state-transfer point is delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t86_retention_bytes_bound_the_log_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 8192u64;
    let settings = [
        "--retention-bytes",
        "8192",
        "--purge-interval-ms",
        "100",
        "--segment-bytes",
        "2048",
    ];
    let (_addrs, mut nodes) = cluster(dir.path(), "t86", 1, &settings).await;
    let n0 = dir.path().join("n0");
    for i in 0..400 {
        nodes[0]
            .propose(&format!("entry-with-some-payload-{i:06}"), T)
            .await
            .unwrap();
    }
    // 400 entries of ~80 bytes on disk each are ~4 times the limit: the
    // oldest must be gone, and what is left within the limit (plus the
    // segment being written).
    wait_until("the log to shrink to the byte limit", || {
        segment_starts(&n0)
            .first()
            .is_some_and(|first| *first > 100)
            && log_bytes(&n0) <= limit + 2048 + 512
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: segments {:?}, {} bytes",
            segment_starts(&n0),
            log_bytes(&n0)
        )
    });
    nodes[0].propose("still-works", T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t87_retention_age_purges_old_segments_but_keeps_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        "--retention-age-s",
        "1",
        "--purge-interval-ms",
        "100",
        "--segment-bytes",
        "2048",
    ];
    let (_addrs, mut nodes) = cluster(dir.path(), "t87", 1, &settings).await;
    let n0 = dir.path().join("n0");
    for i in 0..200 {
        nodes[0]
            .propose(&format!("entry-with-some-payload-{i:06}"), T)
            .await
            .unwrap();
    }
    // Far below the entry and byte limits: only age can purge. Once the
    // closed segments are over a second old they go; the one being
    // written stays, however old.
    wait_until("the old segments to be purged by age", || {
        // (At most one more: an empty segment opened at a rollover.)
        let starts = segment_starts(&n0);
        starts.len() <= 2 && starts.first().is_some_and(|first| *first > 100)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: segments {:?}", segment_starts(&n0)));
    nodes[0].propose("still-works", T).await.unwrap();
}

/// A CA, and a certificate + key it signed for the given IP addresses.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str, hosts: &[String]) -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(hosts.to_vec()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} member"));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

impl TestPki {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-ca", &self.ca),
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
        ] {
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        args
    }
}

async fn garbd(args: &[String], data_dir: &Path) -> std::process::Output {
    tokio::process::Command::new(e2e::binary("garbd"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_members_talk_mutual_tls_and_refuse_others() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = addresses(4);
    let hosts: Vec<String> = addrs
        .iter()
        .map(|a| a.split(':').next().unwrap().to_string())
        .collect();
    let pki = make_pki(&dir.path().join("pki"), "t90", &hosts);
    let tls = pki.args();
    let tls_refs: Vec<&str> = tls.iter().map(String::as_str).collect();

    // Three members over TLS (the cluster helper takes its own addresses).
    let (cluster_addrs, mut nodes) = cluster(dir.path(), "t90", 3, &tls_refs).await;
    let seqno = nodes[1].propose("over-tls", T).await.unwrap();
    for node in &nodes {
        assert_eq!(node.wait_committed("over-tls", T).await, seqno);
    }

    let base = |listen: &str| -> Vec<String> {
        [
            "--group",
            "t90",
            "--secret",
            SECRET,
            "--address",
            &cluster_addrs[0],
            "--listen",
            listen,
            "--rpc-timeout-ms",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // The status tool with the cluster's certificate gets an answer.
    let mut status = base(&addrs[3]);
    status.push("--status".into());
    status.extend(tls.iter().cloned());
    let out = garbd(&status, &dir.path().join("status")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("primary true"));

    // Without TLS: refused, even with the right name and secret.
    let out = garbd(&base(&addrs[3]), &dir.path().join("plain")).await;
    assert!(!out.status.success(), "a plain-TCP member was let in");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("joining"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With a certificate from another CA: refused.
    let other = make_pki(&dir.path().join("other"), "other", &hosts);
    let mut args = base(&addrs[3]);
    args.extend(other.args());
    let out = garbd(&args, &dir.path().join("other-ca")).await;
    assert!(!out.status.success(), "a member of another CA was let in");

    // Nothing changed.
    wait_voters(&mut nodes[0], 3).await;
    nodes[2].propose("still-tls", T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t95_a_partitioned_leader_steps_out_and_the_majority_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (addrs, mut nodes) = cluster(dir.path(), "t95", 3, &[]).await;
    let seqno = nodes[0].propose("before", T).await.unwrap();
    // The partition cuts off whoever leads now.
    let mut leader = None;
    for (i, node) in nodes.iter_mut().enumerate() {
        if node.status().await["role"] == "leader" {
            leader = Some(i);
        }
    }
    let cut = leader.expect("a leader");
    let (host, port) = addrs[cut].split_once(':').unwrap();
    let partition = e2e::partition::Partition::isolate(host, port.parse().unwrap());

    // The cut-off leader stops being primary (no quorum acknowledgement),
    // and refuses proposals; the majority elects a new leader and commits.
    nodes[cut].wait_primary(false, T).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    let during = nodes[others[0]].propose("during", T).await.unwrap();
    assert!(during > seqno);
    nodes[others[1]].wait_committed("during", T).await;
    let refused = nodes[cut].propose("minority", Duration::from_secs(8)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("not in the primary component")),
        "a minority member accepted a proposal: {refused:?}"
    );
    assert!(
        !nodes[cut].committed().values().any(|id| id == "during"),
        "the minority saw the majority's entry through the partition"
    );

    // Heal: the old leader rejoins as a follower and catches up, in order.
    drop(partition);
    nodes[cut].wait_primary(true, T).await;
    assert_eq!(nodes[cut].wait_committed("during", T).await, during);
    let after = nodes[cut].propose("after", T).await.unwrap();
    for node in &nodes {
        assert_eq!(node.wait_committed("after", T).await, after);
    }
    let reference = nodes[others[0]].committed();
    for node in &nodes {
        assert_eq!(
            node.committed(),
            reference,
            "every member holds the same log"
        );
    }
    assert!(
        !reference.values().any(|id| id == "minority"),
        "the refused proposal never committed"
    );
}
