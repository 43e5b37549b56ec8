//! What registryctl prints: aligned tables for people, one JSON object per line for scripts.
//!
//! Names, hosts and metadata come from the store, where anyone may have written them: in
//! human output every control character is escaped (`\u{1b}`, `\n`), so no escape sequence
//! reaches the terminal and no newline forges a row. JSON output escapes them by nature.
//! Every function returns the write error, so a closed pipe (`registryctl watch | head -1`)
//! ends the command.

use std::borrow::Cow;
use std::io::{self, Write};
use std::time::SystemTime;

use registry_core::{NodeStatus, ServiceChange};
use serde_json::json;

/// `text` with its control characters escaped.
pub(crate) fn cell(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_millis(t).to_string())
}

/// A node's traffic status: `up`, `disabled` (out of traffic), `unhealthy`, or both.
fn status(node: &registry_core::ServiceMetaInfo) -> &'static str {
    match (node.enabled, node.healthy) {
        (true, true) => "up",
        (false, true) => "disabled",
        (true, false) => "unhealthy",
        (false, false) => "disabled,unhealthy",
    }
}

/// `list`: a table, or JSON lines.
pub(crate) fn print_list(out: &mut impl Write, nodes: &[NodeStatus], json: bool) -> io::Result<()> {
    if json {
        for s in nodes {
            let n = &s.node;
            let line = json!({
                "service": n.service_key(),
                "node": n.address(),
                "version": n.service_version,
                "group": n.service_group,
                "weight": n.weight,
                "enabled": n.enabled,
                "healthy": n.healthy,
                "registeredAt": rfc3339(n.register_time),
                "ttlRemainingMs": s.ttl_remaining.map(|d| d.as_millis() as u64),
                "metadata": n.metadata,
            });
            writeln!(out, "{line}")?;
        }
        return out.flush();
    }
    let header = [
        "SERVICE",
        "NODE",
        "VERSION",
        "GROUP",
        "WEIGHT",
        "STATUS",
        "REGISTERED",
        "TTL",
        "METADATA",
    ];
    let rows: Vec<[String; 9]> = nodes
        .iter()
        .map(|s| {
            let n = &s.node;
            [
                cell(&n.service_key()).into_owned(),
                cell(&n.address()).into_owned(),
                cell(&n.service_version).into_owned(),
                cell(&n.service_group).into_owned(),
                n.weight.to_string(),
                status(n).into(),
                rfc3339(n.register_time).unwrap_or_else(|| "-".into()),
                s.ttl_remaining
                    .map(|d| format!("{:.1}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "-".into()),
                n.metadata
                    .iter()
                    .map(|(k, v)| format!("{}={}", cell(k), cell(v)))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut print_row = |cells: &[&str]| -> io::Result<()> {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())
    };
    print_row(&header)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        print_row(&cells)?;
    }
    if rows.is_empty() {
        writeln!(out, "(no nodes)")?;
    }
    out.flush()
}

/// `watch`: one line per node added, updated or removed.
pub(crate) fn print_change(
    out: &mut impl Write,
    change: &ServiceChange,
    json: bool,
) -> io::Result<()> {
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let events = [
        ("added", &change.diff.added),
        ("updated", &change.diff.updated),
        ("removed", &change.diff.removed),
    ];
    for (event, nodes) in events {
        for n in nodes.iter() {
            if json {
                let line = json!({
                    "event": event,
                    "service": n.service_key(),
                    "node": n.address(),
                    "at": at,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{at}  {event:<8} {:<30} {}",
                    cell(&n.service_key()),
                    cell(&n.address())
                )?;
            }
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use registry_core::ServiceMetaInfo;

    #[test]
    fn control_characters_in_the_store_reach_no_terminal_raw() {
        let mut node = ServiceMetaInfo::new("svc", "10.0.0.1", 80);
        node.service_host = "evil\u{1b}[2J".into();
        node.metadata
            .insert("note".into(), "a\nsvc:1.0  1.2.3.4:5  forged".into());
        let mut out = Vec::new();
        print_list(
            &mut out,
            &[NodeStatus {
                node,
                ttl_remaining: None,
            }],
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert_eq!(text.lines().count(), 2, "header and one row: {text:?}");
        assert!(text.contains("evil\\u{1b}[2J"), "{text:?}");
        assert!(text.contains("a\\nsvc:1.0"), "{text:?}");
    }
}
