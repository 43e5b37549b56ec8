//! Reading the change stream: `XREAD` replies as entries, entries as watch events, and runs of
//! consecutive revisions as batches.

use redis::Value;
use registry_core::{KeyValue, Revision, WatchEvent};

use crate::watch::Shared;

/// One entry of the change stream: its id and its field/value pairs.
pub(crate) type Entry = (String, Vec<(String, Vec<u8>)>);

/// Entries of consecutive revisions (`first` to `last`), as changes.
pub(crate) struct Batch {
    pub(crate) first: Revision,
    pub(crate) last: Revision,
    /// Every change of those revisions, whatever its key.
    pub(crate) events: Vec<WatchEvent>,
    /// The revisions before `first` may be missing: the receiver checks that the batch follows
    /// on what it saw. Unset on a batch the reader read right after the one before, which it
    /// hands only to the watches it concerns (a watch then misses only revisions that did not
    /// concern it).
    pub(crate) gap: bool,
}

/// Stream entries as batches of consecutive revisions: a new batch starts where a revision
/// is more than one above the previous one (a gap). Entries that record no change are
/// skipped, with one warning per client.
pub(crate) fn batches(entries: Vec<Entry>, shared: &Shared) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for (id, fields) in entries {
        let revision = revision_of(&id);
        let event = parse_change(&fields, revision);
        if event.is_none() {
            shared.malformed(&id, revision);
        }
        match out.last_mut() {
            Some(batch) if revision <= batch.last.saturating_add(1) => {
                batch.last = batch.last.max(revision);
                batch.events.extend(event);
            }
            _ => out.push(Batch {
                first: revision,
                last: revision,
                events: event.into_iter().collect(),
                gap: true,
            }),
        }
    }
    out
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `XREAD` reply -> the entries of the one stream read, in order. Nil (the block timed out)
/// -> nothing; parts of another shape are skipped.
pub(crate) fn stream_entries(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        out.extend(range_entries(parts.remove(1)));
    }
    out
}

/// `XRANGE` reply (or the entries part of an `XREAD` reply) -> its entries, in order; parts
/// of another shape are skipped.
pub(crate) fn range_entries(reply: Value) -> Vec<Entry> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(mut entry) = entry else {
            continue;
        };
        if entry.len() != 2 {
            continue;
        }
        let fields = entry.remove(1);
        let Some(id) = text(&entry[0]) else { continue };
        let mut pairs = Vec::new();
        if let Value::Array(flat) = fields {
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                let value = match v {
                    Value::BulkString(b) => b,
                    Value::SimpleString(s) => s.into_bytes(),
                    _ => continue,
                };
                if let Some(k) = text(&k) {
                    pairs.push((k, value));
                }
            }
        }
        out.push((id, pairs));
    }
    out
}

/// The revision of a stream entry id (`<revision>-<n>`); 0 when it is not one.
pub(crate) fn revision_of(id: &str) -> Revision {
    id.split('-')
        .next()
        .and_then(|r| r.parse::<Revision>().ok())
        .unwrap_or(0)
}

/// The change an entry records, `None` when it is not one (unknown `op`, missing fields).
pub(crate) fn parse_change(fields: &[(String, Vec<u8>)], revision: Revision) -> Option<WatchEvent> {
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let key = String::from_utf8(get("key")?.clone()).ok()?;
    match get("op")?.as_slice() {
        b"put" => Some(WatchEvent::Put {
            kv: KeyValue {
                key,
                value: get("value")?.clone(),
            },
            revision,
        }),
        b"del" => Some(WatchEvent::Delete { key, revision }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripts::CHANGES;

    #[test]
    fn xread_replies_are_parsed_and_junk_entries_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                bulk(id),
                Value::Array(fields.iter().map(|f| bulk(f)).collect()),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(CHANGES),
            Value::Array(vec![
                entry(
                    "7-1",
                    &["op", "put", "key", "/rpc/a:1.0/h:1", "value", "{}"],
                ),
                entry("8-1", &["op", "del", "key", "/rpc/a:1.0/h:1"]),
                entry("8-2", &["op", "frobnicate", "key", "x"]),
                entry("9-1", &["op", "put"]),
            ]),
        ])]);
        let entries = stream_entries(reply);
        assert_eq!(entries.len(), 4);
        let events: Vec<Option<WatchEvent>> = entries
            .iter()
            .map(|(id, f)| parse_change(f, revision_of(id)))
            .collect();
        assert_eq!(
            events[0],
            Some(WatchEvent::Put {
                kv: KeyValue {
                    key: "/rpc/a:1.0/h:1".into(),
                    value: b"{}".to_vec()
                },
                revision: 7
            })
        );
        assert_eq!(
            events[1],
            Some(WatchEvent::Delete {
                key: "/rpc/a:1.0/h:1".into(),
                revision: 8
            })
        );
        assert_eq!(events[2], None);
        assert_eq!(events[3], None);
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
