//! Listing a prefix in pages that form one snapshot (see [`crate::paging`]).

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{GetOptions, KvClient};
use registry_core::{BackendError, Listing};
use tracing::{debug, warn};

use crate::endpoints::Endpoints;
use crate::error::{revision_compacted, EtcdError};
use crate::paging::{self, Pager};
use crate::{oversized, NAME};

/// Lists `prefix`, pages of at most `page_keys` keys, all at the first page's revision.
pub(crate) async fn list(
    endpoints: &Endpoints,
    page_keys: usize,
    prefix: &str,
) -> Result<Listing, BackendError> {
    let limit = endpoints.max_decoding;
    let mut pager = Pager::new(prefix, page_keys, limit);
    loop {
        let request = pager.request();
        let outcome = endpoints
            .call(
                || format!("list {prefix}"),
                |client| read_page(client.kv_client(), limit, request.clone()),
            )
            .await?;
        match outcome {
            Page::Read(response) => {
                let revision = response.header().map_or(0, |h| h.revision());
                let kvs = response.kvs().iter().map(|kv| (kv.key(), kv.value()));
                if pager.page(revision, kvs, response.more()) {
                    break;
                }
            }
            Page::TooLarge(too_large, error) => {
                let keys = pager.page_keys();
                if !pager.too_large(too_large.found) {
                    warn!(
                        %prefix, limit, found = ?too_large.found,
                        "an etcd entry is larger than the decode limit: raise EtcdSettings::max_decoding_message_size"
                    );
                    return Err(BackendError::request(
                        NAME,
                        format!("list {prefix}"),
                        EtcdError::EntryTooLarge {
                            prefix: prefix.to_owned(),
                            limit,
                            source: error,
                        },
                    ));
                }
                debug!(%prefix, keys, next = pager.page_keys(), found = ?too_large.found, "listing page too large, asking for fewer keys");
            }
            Page::Compacted(error) => {
                if !pager.compacted() {
                    return Err(BackendError::request(
                        NAME,
                        format!("list {prefix}"),
                        EtcdError::CompactedWhileListing {
                            prefix: prefix.to_owned(),
                            restarts: paging::MAX_RESTARTS,
                            source: error,
                        },
                    ));
                }
                debug!(%prefix, "listing revision compacted meanwhile, listing again");
            }
        }
    }
    let pages = pager.pages();
    let listing = pager.finish();
    debug!(%prefix, pages, entries = listing.entries.len(), revision = listing.revision, "listed");
    Ok(listing)
}

/// How a listing page read ended, beside the failures [`Endpoints::call`] handles.
enum Page {
    Read(etcd_client::GetResponse),
    TooLarge(oversized::TooLarge, etcd_client::Error),
    Compacted(etcd_client::Error),
}

/// Reads one page of a listing with the decode limit `limit`.
async fn read_page(
    client: KvClient,
    limit: usize,
    request: paging::PageRequest,
) -> Result<Page, etcd_client::Error> {
    let mut options = GetOptions::new()
        .with_range(request.range_end)
        .with_limit(request.limit);
    if let Some(revision) = request.revision {
        options = options.with_revision(revision);
    }
    let result = client
        .max_decoding_message_size(limit)
        .get(request.key, Some(options))
        .await;
    match result {
        Ok(response) => Ok(Page::Read(response)),
        Err(error) => {
            if let Some(too_large) = oversized::too_large(&error) {
                Ok(Page::TooLarge(too_large, error))
            } else if request.revision.is_some() && revision_compacted(&error) {
                Ok(Page::Compacted(error))
            } else {
                Err(error)
            }
        }
    }
}

/// Keys per page of the keys-only read behind `Backend::ttls`.
const TTL_PAGE_KEYS: i64 = 10_000;

/// One keys-only range read of `prefix` (in pages of [`TTL_PAGE_KEYS`] keys), then one
/// `LeaseTimeToLive` per distinct lease: a process's nodes share one lease, so listing
/// 5,000 nodes costs a handful of requests, not 5,000.
pub(crate) async fn ttls(
    endpoints: &Endpoints,
    prefix: &str,
) -> Result<HashMap<String, Duration>, BackendError> {
    let range_end = crate::paging::prefix_range_end(prefix.as_bytes());
    let mut by_lease: HashMap<i64, Vec<String>> = HashMap::new();
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let options = GetOptions::new()
            .with_range(range_end.clone())
            .with_keys_only()
            .with_limit(TTL_PAGE_KEYS);
        let key = from.clone();
        let page = endpoints
            .call(
                || format!("keys under {prefix}"),
                |c| {
                    let (mut c, key, options) = (c.kv_client(), key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                },
            )
            .await?;
        for kv in page.kvs() {
            if kv.lease() != 0 {
                if let Ok(key) = kv.key_str() {
                    by_lease.entry(kv.lease()).or_default().push(key.to_owned());
                }
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    let mut ttls = HashMap::new();
    for (lease, keys) in by_lease {
        let answer = endpoints
            .call(
                || format!("lease time-to-live {lease}"),
                |c| {
                    let mut c = c.lease_client();
                    async move { c.time_to_live(lease, None).await }
                },
            )
            .await?;
        if answer.ttl() >= 0 {
            let left = Duration::from_secs(answer.ttl() as u64);
            ttls.extend(keys.into_iter().map(|k| (k, left)));
        }
    }
    Ok(ttls)
}
