//! Forwarding proposals from a follower to the leader in batches: every
//! proposal waiting when a batch leaves goes in the same RPC, and a few
//! batches may be in flight at once, so a busy follower pays one round
//! trip per batch rather than per proposal.

use std::collections::HashMap;
use std::sync::Arc;

use proto::v1::ProposeRequest;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::member::{GroupError, Inner};

/// Largest number of proposals in one forwarded batch.
const MAX_BATCH: usize = 512;
/// Batches in flight at once.
const IN_FLIGHT: usize = 8;

type Reply = oneshot::Sender<Result<u64, GroupError>>;

pub(crate) struct Forwarder {
    tx: mpsc::UnboundedSender<(String, Vec<u8>, Reply)>,
}

impl Forwarder {
    pub fn start(inner: std::sync::Weak<Inner>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(inner, rx));
        Self { tx }
    }

    /// Forward one proposal to the leader at `address`; its seqno, or why
    /// it failed (the caller decides whether to retry).
    pub async fn forward(&self, address: String, data: Vec<u8>) -> Result<u64, GroupError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((address, data, reply))
            .map_err(|_| GroupError::Stopped("forwarder stopped".into()))?;
        rx.await
            .map_err(|_| GroupError::Stopped("forwarder stopped".into()))?
    }
}

async fn run(
    inner: std::sync::Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<(String, Vec<u8>, Reply)>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        // Everything queued while we waited for a slot joins this batch.
        let mut batches: HashMap<String, Vec<(Vec<u8>, Reply)>> = HashMap::new();
        let mut queued = vec![first];
        while queued.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => queued.push(item),
                Err(_) => break,
            }
        }
        for (address, data, reply) in queued {
            batches.entry(address).or_default().push((data, reply));
        }
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            for (address, batch) in batches {
                send_batch(&inner, &address, batch).await;
            }
            drop(permit);
        });
    }
}

async fn send_batch(inner: &Inner, address: &str, batch: Vec<(Vec<u8>, Reply)>) {
    let (entries, replies): (Vec<Vec<u8>>, Vec<Reply>) = batch.into_iter().unzip();
    let result = match inner.group_client(address) {
        Ok(mut client) => client
            .propose(ProposeRequest {
                credentials: Some(inner.credentials.to_proto()),
                entries,
            })
            .await
            .map(|r| r.into_inner().seqnos)
            .map_err(|s| GroupError::Transport(s.message().to_string())),
        Err(e) => Err(e),
    };
    match result {
        Ok(seqnos) if seqnos.len() == replies.len() => {
            for (reply, seqno) in replies.into_iter().zip(seqnos) {
                let _ = reply.send(Ok(seqno));
            }
        }
        Ok(seqnos) => {
            let msg = format!(
                "leader answered {} seqnos for {} proposals",
                seqnos.len(),
                replies.len()
            );
            for reply in replies {
                let _ = reply.send(Err(GroupError::Transport(msg.clone())));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(GroupError::Transport(msg.clone())));
            }
        }
    }
}
