//! openraft's storage conformance suite against our log storage and state
//! machine, each test on a fresh directory.

use group::log_store::LogStoreOptions;
use group::state_machine::CommitStream;
use group::storage::RaftLog;
use group::types::TypeConfig;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

struct Builder;

impl StoreBuilder<TypeConfig, RaftLog, CommitStream, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RaftLog, CommitStream), StorageError<TypeConfig>> {
        let io = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
        };
        let dir = tempfile::tempdir().map_err(io)?;
        // Small segments, so the suite's truncations and purges cross them.
        let log = RaftLog::open(dir.path(), LogStoreOptions { segment_bytes: 256 }).map_err(io)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let sm = CommitStream::open(dir.path().join("sm"), tx, 0).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_storage_passes_openraft_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}
