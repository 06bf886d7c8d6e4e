//! Who this member is and which cluster it belongs to: `identity.json` in
//! the data directory, and the credentials presented on every RPC.

use std::path::Path;

use proto::v1::ClusterCredentials;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log_store::write_file_atomically;

/// Persisted identity of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Random, made at the member's first start; never reused.
    pub node_id: u64,
    pub cluster_name: String,
    /// Made when the cluster is bootstrapped; learned when joining.
    pub cluster_uuid: Option<[u8; 16]>,
    /// Set when the member left the voting membership gracefully: on its
    /// next start it must join again (as a learner first) rather than act
    /// on the membership it remembers.
    #[serde(default)]
    pub left: bool,
}

/// Why a request was refused admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("request carries no credentials")]
    Missing,
    #[error("request is for cluster {got:?}, this is cluster {ours:?}")]
    WrongCluster { got: String, ours: String },
    #[error("request presents the wrong shared secret for cluster {cluster:?}")]
    WrongSecret { cluster: String },
    #[error("request is for another cluster with the same name (UUID mismatch)")]
    WrongUuid,
}

impl Identity {
    const FILE: &'static str = "identity.json";

    /// Load the identity, or make a new one for `cluster_name`.
    pub fn load_or_create(dir: &Path, cluster_name: &str) -> std::io::Result<Self> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let identity: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::other(format!("{} is corrupt: {e}", path.display()))
                })?;
                if identity.cluster_name != cluster_name {
                    return Err(std::io::Error::other(format!(
                        "{} belongs to cluster {:?}, not {cluster_name:?}",
                        dir.display(),
                        identity.cluster_name
                    )));
                }
                Ok(identity)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let identity = Identity {
                    node_id: rand::random::<u64>() >> 1 | 1,
                    cluster_name: cluster_name.to_string(),
                    cluster_uuid: None,
                    left: false,
                };
                identity.save(dir)?;
                Ok(identity)
            }
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_file_atomically(&dir.join(Self::FILE), &bytes).map_err(std::io::Error::other)
    }
}

/// A digest of the shared secret bound to the cluster name: what members
/// present instead of the secret itself.
pub fn secret_proof(cluster_name: &str, secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"replicator.v1 cluster secret\0");
    h.update(cluster_name.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// Checks the credentials of incoming requests.
#[derive(Debug, Clone)]
pub struct Admission {
    pub cluster_name: String,
    pub proof: Vec<u8>,
}

impl Admission {
    /// Admit `credentials` for a cluster whose UUID is `uuid` (`None` while
    /// this member has not joined one). `allow_unknown_uuid` is for Join.
    pub fn check(
        &self,
        credentials: Option<&ClusterCredentials>,
        uuid: Option<[u8; 16]>,
        allow_unknown_uuid: bool,
    ) -> Result<(), AdmissionError> {
        let c = credentials.ok_or(AdmissionError::Missing)?;
        if c.cluster_name != self.cluster_name {
            return Err(AdmissionError::WrongCluster {
                got: c.cluster_name.clone(),
                ours: self.cluster_name.clone(),
            });
        }
        // Constant-time comparison: no timing hint about the secret digest.
        let same = c.secret_proof.len() == self.proof.len()
            && c.secret_proof
                .iter()
                .zip(&self.proof)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(AdmissionError::WrongSecret {
                cluster: self.cluster_name.clone(),
            });
        }
        // A member that has not joined yet (no UUID) accepts the UUID of
        // the cluster it is joining: its leader will replicate to it.
        let mismatch = uuid.is_some_and(|ours| c.cluster_uuid.as_slice() != ours);
        let joiner = allow_unknown_uuid && c.cluster_uuid.is_empty();
        if mismatch && !joiner {
            return Err(AdmissionError::WrongUuid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(name: &str, secret: &str, uuid: &[u8]) -> ClusterCredentials {
        ClusterCredentials {
            cluster_name: name.into(),
            cluster_uuid: uuid.to_vec(),
            secret_proof: secret_proof(name, secret),
            node_id: 7,
        }
    }

    #[test]
    fn strangers_are_refused() {
        let admission = Admission {
            cluster_name: "prod".into(),
            proof: secret_proof("prod", "s3cret"),
        };
        let uuid = Some([1u8; 16]);
        assert_eq!(
            admission.check(Some(&creds("prod", "s3cret", &[1; 16])), uuid, false),
            Ok(())
        );
        assert!(matches!(
            admission.check(Some(&creds("test", "s3cret", &[1; 16])), uuid, false),
            Err(AdmissionError::WrongCluster { .. })
        ));
        assert!(matches!(
            admission.check(Some(&creds("prod", "guess", &[1; 16])), uuid, false),
            Err(AdmissionError::WrongSecret { .. })
        ));
        assert_eq!(
            admission.check(Some(&creds("prod", "s3cret", &[2; 16])), uuid, false),
            Err(AdmissionError::WrongUuid)
        );
        assert_eq!(
            admission.check(None, uuid, false),
            Err(AdmissionError::Missing)
        );
        // A joiner without a UUID is admitted only where joining is allowed.
        assert_eq!(
            admission.check(Some(&creds("prod", "s3cret", &[])), uuid, false),
            Err(AdmissionError::WrongUuid)
        );
        assert_eq!(
            admission.check(Some(&creds("prod", "s3cret", &[])), uuid, true),
            Ok(())
        );
    }

    #[test]
    fn identity_persists_and_belongs_to_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), "prod").unwrap();
        let b = Identity::load_or_create(dir.path(), "prod").unwrap();
        assert_eq!(a, b);
        assert!(a.node_id > 0);
        assert!(Identity::load_or_create(dir.path(), "other").is_err());
    }
}
