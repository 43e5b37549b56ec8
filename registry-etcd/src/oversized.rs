//! Responses larger than the client decodes: recognising the error.

use crate::tonic_code;

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
}
