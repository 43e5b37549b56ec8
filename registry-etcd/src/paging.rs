//! Listing a prefix in pages that all read the revision of the first page.
//!
//! [`Pager`] is the pure part: which range, limit and revision to ask for next, how to size the
//! next page from the bytes seen, what to do when a page is too large to decode or its revision
//! was compacted. The I/O loop lives in the backend's `list`.

use registry_core::{KeyValue, Listing, Revision};
use tracing::warn;

/// Most times one listing starts over because its revision was compacted while it was read.
pub(crate) const MAX_RESTARTS: u32 = 3;

/// Bytes an entry costs in a range response beside its key and value (revisions, version,
/// lease, framing): an estimate, used to size pages.
const ENTRY_OVERHEAD: usize = 48;

/// The end of the range holding every key that starts with `prefix`, as etcd computes it for
/// `--prefix`: the prefix with its last byte below `0xff` incremented and what follows it
/// dropped; `\0` (every key from the start key on) when there is no such byte.
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One range request of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// First key of the page.
    pub(crate) key: Vec<u8>,
    /// End of the range (exclusive), the same for every page.
    pub(crate) range_end: Vec<u8>,
    /// Most keys to return.
    pub(crate) limit: i64,
    /// Revision to read at; `None` for the first page (the current revision).
    pub(crate) revision: Option<i64>,
}

/// The state of one paged listing.
#[derive(Debug)]
pub(crate) struct Pager {
    prefix: Vec<u8>,
    range_end: Vec<u8>,
    max_keys: usize,
    /// Bytes a page should stay under: a quarter of the decode limit.
    target_bytes: usize,
    /// Keys the next page asks for.
    keys: usize,
    revision: Option<i64>,
    next_key: Vec<u8>,
    entries: Vec<KeyValue>,
    /// Key and value bytes of the entries read, to size the next page.
    bytes: usize,
    read: usize,
    pages: usize,
    restarts: u32,
}

impl Pager {
    /// A listing of `prefix` with pages of at most `max_keys` keys, for a client that decodes
    /// responses up to `max_decoding` bytes.
    pub(crate) fn new(prefix: &str, max_keys: usize, max_decoding: usize) -> Self {
        let prefix = prefix.as_bytes().to_vec();
        let max_keys = max_keys.max(1);
        Self {
            range_end: prefix_range_end(&prefix),
            // etcd refuses an empty key: the whole key space starts at `\0`.
            next_key: if prefix.is_empty() {
                vec![0]
            } else {
                prefix.clone()
            },
            prefix,
            max_keys,
            target_bytes: (max_decoding / 4).max(1),
            keys: max_keys,
            revision: None,
            entries: Vec::new(),
            bytes: 0,
            read: 0,
            pages: 0,
            restarts: 0,
        }
    }

    /// The next page to read.
    pub(crate) fn request(&self) -> PageRequest {
        PageRequest {
            key: self.next_key.clone(),
            range_end: self.range_end.clone(),
            limit: i64::try_from(self.keys).unwrap_or(i64::MAX),
            revision: self.revision,
        }
    }

    /// Keys the next page asks for.
    pub(crate) fn page_keys(&self) -> usize {
        self.keys
    }

    /// Pages read so far (since the last restart).
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    /// Takes a page read with [`request`](Self::request): its header revision, its entries
    /// (raw key and value) and etcd's `more` flag. Returns true when the listing is complete.
    pub(crate) fn page<'a>(
        &mut self,
        header_revision: i64,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        more: bool,
    ) -> bool {
        self.pages += 1;
        if self.revision.is_none() {
            self.revision = Some(header_revision);
        }
        let mut last = None;
        for (key, value) in kvs {
            self.read += 1;
            self.bytes = self.bytes.saturating_add(key.len() + value.len());
            match std::str::from_utf8(key) {
                Ok(text) => self.entries.push(KeyValue {
                    key: text.to_owned(),
                    value: value.to_vec(),
                }),
                Err(_) => warn!("skipping an etcd key that is not UTF-8"),
            }
            last = Some(key);
        }
        let Some(last) = last else {
            // No entry: nothing follows (a `more` without entries cannot be continued).
            return true;
        };
        if !more {
            return true;
        }
        // The next page starts right after the last key: `key + "\0"` is its successor.
        self.next_key.clear();
        self.next_key.extend_from_slice(last);
        self.next_key.push(0);
        let average = self.bytes / self.read.max(1) + ENTRY_OVERHEAD;
        self.keys = (self.target_bytes / average).clamp(1, self.max_keys);
        false
    }

    /// The page asked for was too large to decode (`found` bytes, when the error says). Asks
    /// for fewer keys: half as many, or fewer still when `found` shows the page far above the
    /// target. Returns false when a page of one key is already too large.
    pub(crate) fn too_large(&mut self, found: Option<usize>) -> bool {
        if self.keys <= 1 {
            return false;
        }
        let halved = self.keys / 2;
        let by_size = found
            .filter(|f| *f > 0)
            .map_or(halved, |f| self.keys.saturating_mul(self.target_bytes) / f);
        self.keys = halved.min(by_size).max(1);
        true
    }

    /// The revision of the first page was compacted before the listing ended: starts over from
    /// the current revision. Returns false after [`MAX_RESTARTS`] restarts.
    pub(crate) fn compacted(&mut self) -> bool {
        if self.restarts >= MAX_RESTARTS {
            return false;
        }
        self.restarts += 1;
        self.revision = None;
        self.next_key = if self.prefix.is_empty() {
            vec![0]
        } else {
            self.prefix.clone()
        };
        self.entries.clear();
        self.pages = 0;
        true
    }

    /// The listing: every entry read, at the first page's revision.
    pub(crate) fn finish(self) -> Listing {
        Listing {
            entries: self.entries,
            revision: self.revision.unwrap_or(0).max(0) as Revision,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn kv(key: &str, value_len: usize) -> (Vec<u8>, Vec<u8>) {
        (key.as_bytes().to_vec(), vec![b'v'; value_len])
    }

    fn feed(pager: &mut Pager, revision: i64, kvs: &[(Vec<u8>, Vec<u8>)], more: bool) -> bool {
        pager.page(
            revision,
            kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            more,
        )
    }

    #[test]
    fn range_end_is_the_prefix_incremented() {
        assert_eq!(prefix_range_end(b"/rpc/"), b"/rpc0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn pages_continue_after_the_last_key_at_the_first_revision() {
        let mut pager = Pager::new("/rpc/", 2, 64 * 1024 * 1024);
        let first = pager.request();
        assert_eq!(first.key, b"/rpc/".to_vec());
        assert_eq!(first.range_end, b"/rpc0".to_vec());
        assert_eq!(first.limit, 2);
        assert_eq!(first.revision, None);

        let done = feed(&mut pager, 42, &[kv("/rpc/a", 10), kv("/rpc/b", 10)], true);
        assert!(!done);
        let second = pager.request();
        assert_eq!(second.key, b"/rpc/b\0".to_vec());
        assert_eq!(second.range_end, b"/rpc0".to_vec());
        assert_eq!(
            second.revision,
            Some(42),
            "later pages read the first page's revision"
        );

        // A later page's header shows the store's current revision: the listing keeps 42.
        assert!(feed(&mut pager, 50, &[kv("/rpc/c", 10)], false));
        assert_eq!(pager.pages(), 2);
        let listing = pager.finish();
        assert_eq!(listing.revision, 42);
        let keys: Vec<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/rpc/a", "/rpc/b", "/rpc/c"]);
    }

    #[test]
    fn an_empty_first_page_is_an_empty_listing() {
        let mut pager = Pager::new("/rpc/", 500, 1 << 20);
        assert!(feed(&mut pager, 7, &[], false));
        assert_eq!(
            pager.finish(),
            Listing {
                entries: Vec::new(),
                revision: 7
            }
        );
    }

    #[test]
    fn a_page_without_entries_ends_the_listing_even_with_more() {
        let mut pager = Pager::new("/rpc/", 500, 1 << 20);
        assert!(!feed(&mut pager, 7, &[kv("/rpc/a", 1)], true));
        assert!(feed(&mut pager, 7, &[], true));
    }

    #[test]
    fn pages_shrink_to_the_entry_size_seen() {
        // 4 MiB limit: pages aim at 1 MiB. After 1.4 MB values, one key per page.
        let mut pager = Pager::new("/rpc/", 1000, 4 << 20);
        assert!(!feed(&mut pager, 1, &[kv("/rpc/big", 1_400_000)], true));
        assert_eq!(pager.page_keys(), 1);
        // Small entries grow the page again, up to the maximum.
        let mut pager = Pager::new("/rpc/", 1000, 4 << 20);
        assert!(!feed(
            &mut pager,
            1,
            &[kv("/rpc/a", 200), kv("/rpc/b", 200)],
            true
        ));
        assert_eq!(pager.page_keys(), 1000);
        let mut pager = Pager::new("/rpc/", 1000, 4 << 20);
        assert!(!feed(&mut pager, 1, &[kv("/rpc/a", 100_000)], true));
        assert_eq!(
            pager.page_keys(),
            (1 << 20) / (100_000 + 6 + ENTRY_OVERHEAD)
        );
    }

    #[test]
    fn a_page_too_large_asks_for_fewer_keys_down_to_one() {
        let mut pager = Pager::new("/rpc/", 1000, 4 << 20);
        // Unknown size: halve.
        assert!(pager.too_large(None));
        assert_eq!(pager.page_keys(), 500);
        // 64 MiB found against a 1 MiB target: 500 * 1 / 64.
        assert!(pager.too_large(Some(64 << 20)));
        assert_eq!(pager.page_keys(), 7);
        // Just above the limit: halve anyway.
        assert!(pager.too_large(Some((4 << 20) + 1)));
        assert_eq!(pager.page_keys(), 1);
        assert!(!pager.too_large(Some(5 << 20)), "one key is the floor");
        assert_eq!(pager.request().limit, 1);
    }

    #[test]
    fn a_compacted_revision_starts_over_a_bounded_number_of_times() {
        let mut pager = Pager::new("/rpc/", 1, 1 << 20);
        assert!(!feed(&mut pager, 10, &[kv("/rpc/a", 1)], true));
        for _ in 0..MAX_RESTARTS {
            assert!(pager.compacted());
            let request = pager.request();
            assert_eq!(request.key, b"/rpc/".to_vec());
            assert_eq!(request.revision, None);
        }
        assert!(!pager.compacted());
        // After a restart the listing is the new pass only, at its own revision.
        assert!(feed(&mut pager, 20, &[kv("/rpc/b", 1)], false));
        let listing = pager.finish();
        assert_eq!(listing.revision, 20);
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].key, "/rpc/b");
    }

    #[test]
    fn the_whole_key_space_starts_at_nul() {
        let pager = Pager::new("", 10, 1 << 20);
        let request = pager.request();
        assert_eq!(request.key, vec![0]);
        assert_eq!(request.range_end, vec![0]);
    }

    #[test]
    fn non_utf8_keys_are_skipped_but_paging_continues_after_them() {
        let mut pager = Pager::new("/rpc/", 2, 1 << 20);
        let kvs = vec![kv("/rpc/a", 1), (b"/rpc/\xff".to_vec(), b"x".to_vec())];
        assert!(!feed(&mut pager, 3, &kvs, true));
        assert_eq!(pager.request().key, b"/rpc/\xff\0".to_vec());
        assert!(feed(&mut pager, 3, &[], false));
        assert_eq!(pager.finish().entries.len(), 1);
    }
}
