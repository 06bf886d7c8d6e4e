//! The node's HTTP endpoints, on their own port: `/health` (200 only when
//! the node is in the primary component and synced, else 503 — a target
//! for HAProxy's `httpchk`, like Galera's clustercheck) and `/metrics`
//! (Prometheus text format, from the same state as `SHOW STATUS LIKE
//! 'wsrep%'`).
//!
//! Reads the node's state through [`CommitService`]; changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::proxy::transaction::CommitService;

type Service = Arc<dyn CommitService>;

/// Serve until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, service: Service) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(service);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the HTTP endpoint stopped");
    }
}

async fn health(State(service): State<Service>) -> impl IntoResponse {
    let status = service.status();
    let state = value(&status, "wsrep_local_state_comment").unwrap_or("Unknown");
    let healthy = service.is_primary() && state == "Synced";
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let cluster = value(&status, "wsrep_cluster_status").unwrap_or("Unknown");
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{state} ({cluster})\n"),
    )
}

async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    let status = service.status();
    let mut body = exposition(&status);
    body.push_str(&format!(
        "# TYPE replicator_primary gauge\nreplicator_primary {}\n",
        u8::from(service.is_primary())
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn value<'a>(status: &'a [(String, String)], name: &str) -> Option<&'a str> {
    status
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The numeric status variables as Prometheus gauges (`wsrep_x` becomes
/// `replicator_wsrep_x`); ON/OFF become 1/0; other text is left out.
pub fn exposition(status: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in status {
        let number = match value.as_str() {
            "ON" => Some(1.0),
            "OFF" => Some(0.0),
            v => v.parse::<f64>().ok(),
        };
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if let (Some(number), true) = (number, valid_name) {
            out.push_str(&format!(
                "# TYPE replicator_{name} gauge\nreplicator_{name} {number}\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::exposition;

    #[test]
    fn numbers_and_switches_become_gauges_and_text_is_left_out() {
        let status = vec![
            ("wsrep_last_committed".to_string(), "42".to_string()),
            ("wsrep_ready".to_string(), "ON".to_string()),
            ("wsrep_cluster_status".to_string(), "Primary".to_string()),
            ("bad name".to_string(), "1".to_string()),
        ];
        assert_eq!(
            exposition(&status),
            "# TYPE replicator_wsrep_last_committed gauge\nreplicator_wsrep_last_committed 42\n\
             # TYPE replicator_wsrep_ready gauge\nreplicator_wsrep_ready 1\n"
        );
    }
}
