//! An object store that counts every call of the store it wraps, by operation and result, with its
//! duration (`t4_object_store_*` in `/metrics`). Wrapped once, where the node opens its store, so
//! uploads, checkpoints, restores and GC are all counted without knowing it.

use std::sync::Arc;
use std::time::Instant;

use super::{Object, ObjectError, ObjectResult, ObjectStore};
use crate::metrics::ObjectStats;

/// Indexes of [`crate::metrics::OBJECT_OPERATIONS`].
#[derive(Clone, Copy)]
enum Operation {
    Put = 0,
    PutIfAbsent = 1,
    PutIfMatch = 2,
    Get = 3,
    Delete = 4,
    DeleteMany = 5,
    List = 6,
}

/// `store`, counted in `stats`.
pub struct CountedStore {
    store: Arc<dyn ObjectStore>,
    stats: Arc<ObjectStats>,
}

impl CountedStore {
    pub fn new(store: Arc<dyn ObjectStore>, stats: Arc<ObjectStats>) -> CountedStore {
        CountedStore { store, stats }
    }

    async fn counted<T>(&self, operation: Operation, call: impl Future<Output = ObjectResult<T>>) -> ObjectResult<T> {
        let started = Instant::now();
        let result = call.await;
        // Indexes of crate::metrics::OBJECT_RESULTS.
        let outcome = match &result {
            Ok(_) => 0,
            Err(ObjectError::PreconditionFailed(_)) => 1,
            Err(ObjectError::Unavailable(_)) => 2,
            Err(ObjectError::Fatal(_)) => 3,
        };
        self.stats.record(operation as usize, outcome, started.elapsed());
        result
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountedStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        self.counted(Operation::Put, self.store.put(key, bytes)).await
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        self.counted(Operation::PutIfAbsent, self.store.put_if_absent(key, bytes)).await
    }

    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String> {
        self.counted(Operation::PutIfMatch, self.store.put_if_match(key, bytes, etag)).await
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Object>> {
        self.counted(Operation::Get, self.store.get(key)).await
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        self.counted(Operation::Delete, self.store.delete(key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> ObjectResult<()> {
        self.counted(Operation::DeleteMany, self.store.delete_many(keys)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>> {
        self.counted(Operation::List, self.store.list(prefix, start_after)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{OBJECT_OPERATIONS, OBJECT_RESULTS};
    use crate::object::MemStore;

    #[tokio::test]
    async fn calls_are_counted_by_operation_and_result() {
        let stats = Arc::new(ObjectStats::default());
        let store = CountedStore::new(Arc::new(MemStore::default()), stats.clone());
        store.put_if_absent("a", b"1".to_vec()).await.unwrap();
        store.put_if_absent("a", b"2".to_vec()).await.expect_err("taken");
        store.get("a").await.unwrap();
        store.get("missing").await.unwrap();
        store.put("bad//key", Vec::new()).await.expect_err("an invalid key");
        let count = |operation: &str, result: &str| {
            let o = OBJECT_OPERATIONS.iter().position(|op| *op == operation).unwrap();
            let r = OBJECT_RESULTS.iter().position(|res| *res == result).unwrap();
            stats.requests(o, r)
        };
        assert_eq!(count("put_if_absent", "ok"), 1);
        assert_eq!(count("put_if_absent", "precondition_failed"), 1);
        assert_eq!(count("get", "ok"), 2);
        assert_eq!(count("put", "fatal"), 1);
        assert_eq!(count("list", "ok"), 0);
    }
}
