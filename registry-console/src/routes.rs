//! The HTTP side: the router, the read-only JSON API, and what every answer carries (security
//! headers, the DNS-rebinding guard).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use registry_core::backend::with_timeout;
use serde::Deserialize;
use serde_json::json;
use tower_http::compression::CompressionLayer;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::model::epoch_ms;
use crate::{actions, assets, events};

/// What the page may load: only this origin, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes over `hub`.
pub(crate) fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/overview", get(overview))
        .route("/api/services", get(services))
        .route("/api/services/{key}", get(service))
        .route("/api/events", get(events::stream))
        .route(
            "/api/services/{key}/nodes/{node}/{action}",
            post(actions::act),
        )
        .fallback(|| async { ApiError::not_found("no such page") })
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(hub.clone(), guard))
        .with_state(hub)
}

/// Refuses requests for another host name while listening on loopback (a page of another
/// site rebound to 127.0.0.1 would name its own host), and adds the security headers.
async fn guard(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    if hub.options.listen.ip().is_loopback() {
        if let Some(host) = request.headers().get(header::HOST) {
            if !is_loopback_host(host.as_bytes()) {
                return ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this console listens on loopback and answers only to localhost, 127.0.0.1 or [::1]",
                )
                .into_response();
            }
        }
    }
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /api/overview`.
async fn overview(State(hub): State<Arc<Hub>>) -> Json<serde_json::Value> {
    let health = hub.health();
    let model = hub.model();
    let (services, nodes) = model.counts();
    Json(json!({
        "store": hub.store(),
        "health": health,
        "actions": hub.actions(),
        "loaded": model.loaded,
        "services": services,
        "nodes": nodes,
        "lastChange": model.last_change,
        "seq": model.seq,
    }))
}

/// The query of `GET /api/services`.
#[derive(Debug, Deserialize)]
struct Search {
    /// Only services whose key contains this (case-insensitive).
    q: Option<String>,
}

/// `GET /api/services[?q=TEXT]`: every service's line, sorted by key.
async fn services(
    State(hub): State<Arc<Hub>>,
    Query(search): Query<Search>,
) -> Json<serde_json::Value> {
    let model = hub.model();
    let mut services = model.summaries();
    if let Some(q) = search.q.as_deref().map(str::to_lowercase) {
        services.retain(|s| s.key.to_lowercase().contains(&q));
    }
    Json(json!({ "seq": model.seq, "services": services }))
}

/// `GET /api/services/{key}`: its nodes (with the TTLs left, read from the store now) and its
/// change log.
async fn service(
    State(hub): State<Arc<Hub>>,
    Path(key): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ttls = read_ttls(&hub, &key).await;
    let model = hub.model();
    let Some(mut view) = model.service(&key) else {
        return Err(ApiError::not_found(format!(
            "no service {key} has nodes now"
        )));
    };
    let now = epoch_ms(SystemTime::now());
    if let Some(ttls) = ttls {
        for node in &mut view.nodes {
            node.expires_at = ttls
                .get(&node.address)
                .map(|left| now.saturating_add(u64::try_from(left.as_millis()).unwrap_or(0)));
        }
    }
    Ok(Json(json!({
        "seq": model.seq,
        "now": now,
        "key": view.key,
        "name": view.name,
        "version": view.version,
        "group": view.group,
        "nodes": view.nodes,
        "log": model.log(Some(&key)),
    })))
}

/// The TTLs left of `key`'s nodes by address, straight from the store; `None` when it does
/// not answer (the last ones read are shown then).
async fn read_ttls(hub: &Hub, key: &str) -> Option<HashMap<String, std::time::Duration>> {
    let backend = hub.registry.backend();
    let prefix = hub.registry.options().keys.service_prefix(key);
    let timeout = hub.registry.options().timeout;
    let ttls = with_timeout(
        backend.name(),
        timeout,
        || format!("ttls {prefix}"),
        backend.ttls(&prefix),
    )
    .await
    .and_then(|r| r)
    .ok()?;
    Some(
        ttls.into_iter()
            .filter_map(|(k, left)| Some((k.strip_prefix(&prefix)?.to_owned(), left)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8500",
            "127.0.0.1:1",
            "127.3.4.5",
            "[::1]:8500",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host.as_bytes()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8500",
            "10.0.0.1:8500",
            "[::2]:80",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host.as_bytes()), "{host}");
        }
    }
}
