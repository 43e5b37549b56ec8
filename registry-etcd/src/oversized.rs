//! Responses larger than the client decodes: recognising the error, and not watching into the
//! same undecodable response again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::error::tonic_code;

/// A response the client refused because it is larger than its decode limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooLarge {
    /// Size of the refused message, when the error says.
    pub(crate) found: Option<usize>,
    /// The limit it exceeded, when the error says.
    pub(crate) limit: Option<usize>,
}

/// gRPC codes a decode-limit error has come with (tonic 0.14 answers `OutOfRange`; other
/// versions and gRPC stacks use `ResourceExhausted` or `Internal`).
const CODES: [tonic_code::Code; 3] = [
    tonic_code::OUT_OF_RANGE,
    tonic_code::RESOURCE_EXHAUSTED,
    tonic_code::INTERNAL,
];

/// Whether `error` is the client refusing a response above its decode limit. tonic 0.14
/// reports it as `OutOfRange` with the message `Error, decoded message length too large:
/// found 5600127 bytes, the limit is: 4194304 bytes`. (etcd itself uses `OutOfRange` for
/// compacted and future revisions too, hence the message check.)
pub(crate) fn too_large(error: &etcd_client::Error) -> Option<TooLarge> {
    let (code, message) = tonic_code::of(error)?;
    too_large_status(code, message)
}

fn too_large_status(code: tonic_code::Code, message: &str) -> Option<TooLarge> {
    if !CODES.contains(&code) || !message.contains("message length too large") {
        return None;
    }
    Some(TooLarge {
        found: number_after(message, "found "),
        limit: number_after(message, "limit is: "),
    })
}

/// The decimal number right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<usize> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Where a watch could not decode its first response, per prefix.
///
/// The core relists after such a watch and watches again from the listing's revision *R*
/// itself (it replays *R* in case a watch broke in the middle of it). When *R* is the
/// undecodable revision (nothing was written after it), that watch would fail the same way,
/// forever. So: a watch whose first response was undecodable records its start revision; a new
/// watch of the same prefix asked to start exactly there starts one revision later. The
/// listing the core made in between holds that revision, so nothing is lost.
#[derive(Debug, Default)]
pub(crate) struct UndecodableStarts(Mutex<HashMap<String, i64>>);

impl UndecodableStarts {
    /// A watch of `prefix` starting at `start` could not decode its first response.
    pub(crate) fn record(&self, prefix: &str, start: i64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(prefix.to_owned(), start);
    }

    /// The revision a new watch of `prefix` asked to start at `start` should start at, and
    /// whether it skips one. Forgets what was recorded for `prefix` either way.
    pub(crate) fn start_for(&self, prefix: &str, start: i64) -> (i64, bool) {
        let recorded = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(prefix);
        if recorded == Some(start) {
            (start + 1, true)
        } else {
            (start, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_decode_limit_error_seen_from_tonic() {
        let message =
            "Error, decoded message length too large: found 5600127 bytes, the limit is: 4194304 bytes";
        assert_eq!(
            too_large_status(tonic_code::OUT_OF_RANGE, message),
            Some(TooLarge {
                found: Some(5_600_127),
                limit: Some(4_194_304)
            })
        );
        assert_eq!(
            too_large_status(tonic_code::RESOURCE_EXHAUSTED, "message length too large"),
            Some(TooLarge {
                found: None,
                limit: None
            })
        );
    }

    #[test]
    fn other_out_of_range_errors_are_not_too_large() {
        for message in [
            "etcdserver: mvcc: required revision has been compacted",
            "etcdserver: mvcc: required revision is a future revision",
        ] {
            assert_eq!(too_large_status(tonic_code::OUT_OF_RANGE, message), None);
        }
        // The text alone is not enough: an `Unavailable` is a transport failure.
        assert_eq!(
            too_large_status(tonic_code::UNAVAILABLE, "message length too large"),
            None
        );
    }

    #[test]
    fn a_client_error_that_is_not_a_status_is_not_too_large() {
        assert_eq!(
            too_large(&etcd_client::Error::WatchError(
                "message length too large".into()
            )),
            None
        );
    }

    #[test]
    fn a_watch_restarted_at_an_undecodable_start_skips_it_once() {
        let starts = UndecodableStarts::default();
        assert_eq!(starts.start_for("/rpc/a/", 10), (10, false));
        starts.record("/rpc/a/", 10);
        assert_eq!(starts.start_for("/rpc/b/", 10), (10, false), "other prefix");
        assert_eq!(starts.start_for("/rpc/a/", 10), (11, true));
        assert_eq!(starts.start_for("/rpc/a/", 10), (10, false), "only once");
    }

    #[test]
    fn a_watch_restarted_elsewhere_forgets_the_undecodable_start() {
        let starts = UndecodableStarts::default();
        starts.record("/rpc/a/", 10);
        assert_eq!(starts.start_for("/rpc/a/", 12), (12, false));
        assert_eq!(starts.start_for("/rpc/a/", 10), (10, false));
    }
}
