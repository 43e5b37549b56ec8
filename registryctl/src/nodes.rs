//! The nodes `register` is asked for, and its `--ttl`.

use std::collections::BTreeMap;
use std::time::Duration;

use registry_core::options::{MAX_TTL, MIN_TTL};
use registry_core::ServiceMetaInfo;
use rpc_config::config::RpcConfig;

use crate::setup::Failure;

/// `--ttl`: the TTL; the heartbeat becomes a third of it unless the configuration sets a usable
/// one of its own. Bounded like `rpc.registryConfig.ttl`.
pub(crate) fn apply_ttl(config: &mut RpcConfig, seconds: f64) -> Result<(), Failure> {
    let ttl = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|ttl| (MIN_TTL..=MAX_TTL).contains(ttl))
        .ok_or_else(|| {
            Failure::usage(format!(
                "--ttl must be from {MIN_TTL:?} to {MAX_TTL:?} (in seconds), got {seconds}"
            ))
        })?;
    let registry = &mut config.registry_config;
    let configured = registry.heartbeat_interval != rpc_config::config::DEFAULT_HEARTBEAT_INTERVAL;
    registry.ttl = ttl;
    if !(configured && registry.heartbeat_interval < ttl / 2) {
        registry.heartbeat_interval = ttl / 3;
    }
    Ok(())
}

/// `name:version[:group]` and `host:port` into nodes.
pub(crate) fn parse_nodes(
    service_key: &str,
    addrs: &[String],
    metadata: &[String],
) -> Result<Vec<ServiceMetaInfo>, Failure> {
    let bad_key = || {
        Failure::usage(format!(
            "SERVICE_KEY must be name:version[:group], got `{}`",
            service_key.escape_debug()
        ))
    };
    let mut parts = service_key.split(':');
    let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
        return Err(bad_key());
    };
    let group = parts.next();
    if parts.next().is_some() || name.is_empty() || version.is_empty() {
        return Err(bad_key());
    }
    let mut entries = BTreeMap::new();
    for item in metadata {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Failure::usage(format!(
                "--metadata takes k=v, got `{}`",
                item.escape_debug()
            )));
        };
        entries.insert(k.to_owned(), v.to_owned());
    }
    addrs
        .iter()
        .map(|addr| {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_start_matches('[').trim_end_matches(']'),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "ADDR must be host:port, got `{}`",
                        addr.escape_debug()
                    ))
                })?;
            let mut node = ServiceMetaInfo::new(name, host, port).with_version(version);
            if let Some(group) = group {
                node = node.with_group(group);
            }
            node.metadata = entries.clone();
            node.validate().map_err(|e| Failure::usage(e.to_string()))?;
            Ok(node)
        })
        .collect()
}

/// `weight`'s value: 1 or more, or `reset` (`None`: the registered weight again).
pub(crate) fn parse_weight(text: &str) -> Result<Option<u32>, Failure> {
    if text == "reset" {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(w) if w >= 1 => Ok(Some(w)),
        _ => Err(Failure::usage(format!(
            "WEIGHT must be a whole number from 1 to {}, or `reset`, got `{}`",
            u32::MAX,
            text.escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn huge_tiny_and_odd_ttls_are_usage_errors() {
        for seconds in [1e20, 1e300, f64::INFINITY, f64::NAN, -1.0, 0.0, 0.001] {
            let mut config = RpcConfig::default();
            let err = apply_ttl(&mut config, seconds).unwrap_err();
            assert_eq!(err.code, 2, "{seconds}");
        }
        let mut config = RpcConfig::default();
        apply_ttl(&mut config, 6.0).unwrap();
        assert_eq!(
            config.registry_config.heartbeat_interval,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn control_characters_and_port_zero_are_refused() {
        for (key, addr) in [
            ("svc\u{1b}[31m:1.0", "127.0.0.1:1"),
            ("svc:1.0", "h\nforged:1"),
            ("svc:1.0", "127.0.0.1:0"),
        ] {
            let err = parse_nodes(key, &[addr.to_owned()], &[]).unwrap_err();
            assert_eq!(err.code, 2, "{key} {addr}: {}", err.message);
            assert!(
                !err.message.contains('\u{1b}') && !err.message.contains('\n'),
                "{}",
                err.message
            );
        }
    }
}
