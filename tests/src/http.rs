//! Plain HTTP/1.1 requests to a node's `/health` and `/metrics`, with a
//! timeout: what a load balancer's health check or a scraper does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::replication_cluster::ReplicationCluster;

/// A plain HTTP/1.1 GET: status code, headers (lower-case names) and
/// body.
pub async fn http_get(
    address: &str,
    path: &str,
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::other("no HTTP answer within 5 s"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "a chunked answer (this client reads only plain bodies): {headers:?}"
    );
    Ok((code, headers, body.to_string()))
}

/// `/health`'s status code and body on node `i` (`None`: no answer).
pub async fn health(c: &ReplicationCluster, i: usize) -> Option<(u16, String)> {
    http_get(&c.http_address(i), "/health")
        .await
        .ok()
        .map(|(code, _, body)| (code, body))
}
