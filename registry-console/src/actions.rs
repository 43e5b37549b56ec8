//! The actions: take a node out of traffic and back in, change its weight, deregister it.
//! Each needs the admin token as `Authorization: Bearer TOKEN` (401 without it or with
//! another one; 403 when the console was started without a token: read-only).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::Json;
use registry_core::{error_chain, RegistryError, ServiceMetaInfo};
use serde_json::json;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::hub::Hub;

/// `POST /api/services/{key}/nodes/{node}/{action}`: `disable`, `enable`, `weight` (body
/// `{"weight": N}`, or `{"weight": null}` for the registered weight) or `deregister`.
pub(crate) async fn act(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((key, node, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&hub, &headers, peer)?;
    check_node(&key, &node)?;
    let present = hub.model().has_node(&key, &node);
    let registry = &hub.registry;
    let written = match action.as_str() {
        "disable" => {
            registry
                .set_override(&key, &node, |o| o.enabled = Some(false))
                .await
        }
        // Enabled is the default: clear the override rather than store `true`.
        "enable" => {
            registry
                .set_override(&key, &node, |o| o.enabled = None)
                .await
        }
        "weight" => {
            let weight = parse_weight(&body)?;
            registry
                .set_override(&key, &node, |o| o.weight = weight)
                .await
        }
        "deregister" => {
            if !present {
                return Err(ApiError::not_found(format!("{key} has no node {node} now")));
            }
            registry
                .force_deregister(&key, &node)
                .await
                .map(|()| registry_core::NodeOverride::default())
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no action {action:?} (disable, enable, weight, deregister)"
            )))
        }
    };
    let written = written.map_err(|e| store_error(&e))?;
    info!(service = %key, node = %node, action = %action, %peer, "console action");
    Ok(Json(json!({
        "ok": true,
        "service": key,
        "node": node,
        "action": action,
        "present": present,
        "override": written,
    })))
}

/// 403 when read-only, 401 unless `Authorization: Bearer TOKEN` carries the token (compared
/// in constant time). The token is never logged.
fn authorize(hub: &Hub, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    let Some(token) = &hub.options.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this console is read-only: start it with an admin token (--admin-token or REGISTRY_CONSOLE_TOKEN) to allow actions",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        });
    match presented {
        Some(presented) if token.matches(presented) => Ok(()),
        Some(_) => {
            warn!(%peer, "console action refused: wrong admin token");
            Err(unauthorized("wrong admin token"))
        }
        None => Err(unauthorized(
            "an action needs the admin token: Authorization: Bearer TOKEN",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// The key must be a service key (`name:version[:group]`) and the node `host:port`, both as
/// a registration would accept them.
fn check_node(key: &str, node: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = key.split(':').collect();
    let (name, version, group) = match parts[..] {
        [name, version] => (name, version, registry_core::DEFAULT_GROUP),
        [name, version, group] => (name, version, group),
        _ => {
            return Err(ApiError::bad_request(format!(
                "{key:?} is not a service key (name:version[:group])"
            )))
        }
    };
    let bad_node = || ApiError::bad_request(format!("{node:?} is not a node address (host:port)"));
    let (host, port) = node.rsplit_once(':').ok_or_else(bad_node)?;
    let port: u16 = port.parse().map_err(|_| bad_node())?;
    let probe = ServiceMetaInfo::new(name, host, port)
        .with_version(version)
        .with_group(group);
    probe
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if probe.service_key() != key {
        return Err(ApiError::bad_request(format!(
            "{key:?} is not a service key (the default group is left out: {})",
            probe.service_key()
        )));
    }
    Ok(())
}

/// `{"weight": N}` with N at least 1, or `{"weight": null}` (the registered weight).
fn parse_weight(body: &[u8]) -> Result<Option<u32>, ApiError> {
    let bad = || {
        ApiError::bad_request(r#"the body must be {"weight": N} (N from 1) or {"weight": null}"#)
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
    match value.get("weight") {
        Some(serde_json::Value::Null) => Ok(None),
        Some(w) => match w.as_u64().and_then(|w| u32::try_from(w).ok()) {
            Some(w) if w >= 1 => Ok(Some(w)),
            _ => Err(bad()),
        },
        None => Err(bad()),
    }
}

fn store_error(error: &RegistryError) -> ApiError {
    let status = match error {
        RegistryError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_weight_checks() {
        assert!(check_node("users:1.0", "10.0.0.1:80").is_ok());
        assert!(check_node("users:1.0:canary", "[::1]:80").is_ok());
        assert!(check_node("users", "10.0.0.1:80").is_err());
        assert!(check_node("users:1.0:default", "10.0.0.1:80").is_err());
        assert!(check_node("users:1.0", "10.0.0.1").is_err());
        assert!(check_node("users:1.0", "10.0.0.1:0").is_err());
        assert!(check_node("us/ers:1.0", "10.0.0.1:80").is_err());
        assert_eq!(parse_weight(br#"{"weight":3}"#).ok(), Some(Some(3)));
        assert_eq!(parse_weight(br#"{"weight":null}"#).ok(), Some(None));
        assert!(parse_weight(br#"{"weight":0}"#).is_err());
        assert!(parse_weight(br#"{"weight":"x"}"#).is_err());
        assert!(parse_weight(b"junk").is_err());
    }
}
