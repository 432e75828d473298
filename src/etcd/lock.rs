//! The `v3lockpb.Lock` service, as etcd 3.4 serves it (`v3lock` over `concurrency.Mutex`): Lock puts
//! `name/<lease hex>` bound to the lease (a new 60 s lease if none is given) unless that key exists,
//! and holds the lock once every key under `name/` created before it is gone; Unlock deletes the key.
//! So a lock taken here and one taken by `etcdctl lock` (the same recipe, client-side) exclude each
//! other. A waiting Lock ends when its client leaves (its key is deleted, as etcd does) or the node
//! shuts down (its key stays with its lease).

use tonic::{Request, Response, Status};

use super::Services;
use super::concurrency::{CleanupIfAbandoned, delete_txn};
use super::status::to_status;
use crate::error::Error;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

impl Services {
    /// Takes lock `name` for `lease`, waiting for the holders ahead (`Mutex.Lock`).
    async fn lock(&self, request: LockRequest) -> Result<LockResponse, Status> {
        // Join the waiters (or find the key this lease already has) and read the holder, at once.
        let entry = self.enter(&request.name, request.lease, b"", true).await?;
        let my_revision = entry.created();
        if entry.owner.as_ref().is_none_or(|holder| holder.create_revision == my_revision) {
            return Ok(LockResponse { header: entry.header, key: entry.key });
        }
        let cleanup = CleanupIfAbandoned::new(self, delete_txn(&entry.key));
        let waited = self.until_shutdown(self.wait_deletes(&entry.prefix, my_revision - 1)).await;
        cleanup.disarm();
        match waited {
            Some(Ok(header)) => Ok(LockResponse { header: Some(header), key: entry.key }),
            Some(Err(status)) => {
                // etcd releases the key when the wait fails.
                if let Err(e) = self.client_delete(&entry.key).await {
                    tracing::warn!(error = %e, "cannot release a lock key after its wait failed");
                }
                Err(status)
            }
            None => Err(to_status(Error::Closed)),
        }
    }
}

#[tonic::async_trait]
impl Lock for Services {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        Services::lock(self, request.into_inner()).await.map(Response::new)
    }

    /// Deletes the key Lock returned (whatever key it is, as etcd does).
    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let resp = self.client_delete(&request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: resp.header }))
    }
}
