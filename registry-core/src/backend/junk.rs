//! Junk met by one listing, reported once.

use tracing::warn;

/// Store entries one listing skipped because they are not registry nodes: counted, a few kept
/// as examples, and reported in one warning (5,000 junk keys make one line per listing, not
/// 5,000). Used by the cache for entries it cannot decode, and by backends for entries they do
/// not read at all (ZooKeeper's znodes that cannot be nodes).
///
/// ```
/// use registry_core::backend::Junk;
///
/// let mut junk = Junk::default();
/// junk.note("/rpc/a:1.0/x", "not a node path");
/// assert_eq!(junk.count(), 1);
/// junk.report("/rpc/", "store entries that are not registry nodes");
/// ```
#[derive(Debug, Default)]
pub struct Junk {
    count: usize,
    examples: Vec<String>,
}

impl Junk {
    const EXAMPLES: usize = 3;

    /// Records one skipped entry and why it was skipped (control characters escaped).
    pub fn note(&mut self, key: &str, why: &str) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples
                .push(format!("{} ({why})", key.escape_debug()));
        }
    }

    /// How many entries were skipped.
    pub fn count(&self) -> usize {
        self.count
    }

    /// One warning for the listing of `prefix` saying what was skipped (`what`), when
    /// anything was.
    pub fn report(&self, prefix: &str, what: &str) {
        if self.count > 0 {
            warn!(
                %prefix,
                skipped = self.count,
                examples = ?self.examples,
                "skipped {what}"
            );
        }
    }
}
