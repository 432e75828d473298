//! An in-memory object store (tests, and embedded nodes that want no durability beyond the disk).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Object, ObjectError, ObjectResult, ObjectStore, check_key, content_etag};

/// Objects in a map; every call is atomic.
#[derive(Debug, Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Object>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn objects(&self) -> ObjectResult<std::sync::MutexGuard<'_, BTreeMap<String, Object>>> {
        self.objects.lock().map_err(|_| ObjectError::Fatal("memory store poisoned".into()))
    }

    fn store(objects: &mut BTreeMap<String, Object>, key: &str, bytes: Vec<u8>) -> String {
        let etag = content_etag(&bytes);
        objects.insert(key.to_string(), Object { bytes, etag: etag.clone() });
        etag
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        check_key(key)?;
        Ok(Self::store(&mut *self.objects()?, key, bytes))
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        check_key(key)?;
        let mut objects = self.objects()?;
        if objects.contains_key(key) {
            return Err(ObjectError::PreconditionFailed(key.to_string()));
        }
        Ok(Self::store(&mut objects, key, bytes))
    }

    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String> {
        check_key(key)?;
        let mut objects = self.objects()?;
        if objects.get(key).is_none_or(|o| o.etag != etag) {
            return Err(ObjectError::PreconditionFailed(key.to_string()));
        }
        Ok(Self::store(&mut objects, key, bytes))
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Object>> {
        check_key(key)?;
        Ok(self.objects()?.get(key).cloned())
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        check_key(key)?;
        self.objects()?.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>> {
        let objects = self.objects()?;
        Ok(objects
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| start_after.is_none_or(|after| k.as_str() > after))
            .cloned()
            .collect())
    }
}
