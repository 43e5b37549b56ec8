//! Writing a key under the ownership rule: a key bound to another live lease is not taken
//! over (see [`Backend::put`](registry_core::Backend::put)).

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use registry_core::BackendError;

use crate::endpoints::Endpoints;
use crate::error::is_transport;

/// Why [`put_owned`] did not write.
pub(crate) enum PutError {
    /// Another live lease holds the key.
    Held(i64),
    /// The key changed between two steps: try again.
    Changed,
    /// No endpoint could be reached.
    Backend(BackendError),
    /// The request failed.
    Etcd(etcd_client::Error),
}

/// Puts `key` with `lease` unless another live lease holds it: one transaction, "if the
/// key has no lease (absent, or written without one) put it, else read it", and a second
/// one only when the key turns out to be ours already (an update).
pub(crate) async fn put_owned(
    endpoints: &Endpoints,
    key: &str,
    value: &[u8],
    lease: i64,
) -> Result<(), PutError> {
    let put = || TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
    let (index, mut client) = endpoints
        .client(Client::kv_client)
        .await
        .map_err(PutError::Backend)?;
    let fail = |e: etcd_client::Error| {
        if is_transport(&e) {
            endpoints.rotate_from(index);
        }
        PutError::Etcd(e)
    };
    let unleased = Txn::new()
        .when([Compare::lease(key, CompareOp::Equal, 0)])
        .and_then([put()])
        .or_else([TxnOp::get(key, None)]);
    let response = client.txn(unleased).await.map_err(fail)?;
    if response.succeeded() {
        return Ok(());
    }
    let holder = response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
        _ => None,
    });
    match holder {
        Some(holder) if holder == lease => {
            let ours = Txn::new()
                .when([Compare::lease(key, CompareOp::Equal, lease)])
                .and_then([put()]);
            if client.txn(ours).await.map_err(fail)?.succeeded() {
                Ok(())
            } else {
                Err(PutError::Changed)
            }
        }
        Some(holder) if holder != 0 => Err(PutError::Held(holder)),
        // Gone (or unleased) between the compare and the read: try again.
        _ => Err(PutError::Changed),
    }
}
