//! An object store in a local folder: one file per object, written to a temporary file, synced and
//! renamed into place, so a reader never sees half an object. An object's file name ends with `%`,
//! so `a/b` (file `a/b%`) and `a/b/c` (file `a/b/c%` in folder `a/b`) can coexist as in S3; key
//! segments ending with `%` are therefore refused. Mutations hold an exclusive `flock` on
//! the folder's lock file, which makes the conditional writes atomic across processes too. Calls do
//! blocking file I/O: make them from a thread that may block (the uploader's), not an executor.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Object, ObjectError, ObjectResult, ObjectStore, check_key, content_etag};

/// Names under the root that are the store's own, never objects.
const TEMP_DIR: &str = ".t4-tmp";
const LOCK_FILE: &str = ".t4-lock";
/// Ends every object's file name.
const OBJECT_SUFFIX: char = '%';

/// Objects as files under a root folder.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    /// Makes temporary file names unique within this process (the pid makes them unique across).
    next_temp: AtomicU64,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ObjectError {
    ObjectError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl DirStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> ObjectResult<DirStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TEMP_DIR)).map_err(|e| io_error("create", &root, e))?;
        Ok(DirStore { root, next_temp: AtomicU64::new(0) })
    }

    fn path(&self, key: &str) -> ObjectResult<PathBuf> {
        check_key(key)?;
        let first = key.split('/').next().unwrap_or_default();
        if first == TEMP_DIR || first == LOCK_FILE || key.split('/').any(|s| s.ends_with(OBJECT_SUFFIX)) {
            return Err(ObjectError::Fatal(format!("object key {key:?} is reserved by the directory store")));
        }
        Ok(self.root.join(format!("{key}{OBJECT_SUFFIX}")))
    }

    /// Holds the store's lock until dropped.
    fn lock(&self) -> ObjectResult<File> {
        let path = self.root.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        file.lock().map_err(|e| io_error("lock", &path, e))?;
        Ok(file)
    }

    /// Writes `bytes` to a synced temporary file and returns its path.
    fn write_temp(&self, bytes: &[u8]) -> ObjectResult<PathBuf> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(TEMP_DIR).join(format!("{}-{n}", std::process::id()));
        let mut file = File::create(&path).map_err(|e| io_error("create", &path, e))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io_error("write", &path, e))?;
        Ok(path)
    }

    /// Moves a temporary file to `dest`, replacing what is there.
    fn install(&self, temp: &Path, dest: &Path) -> ObjectResult<()> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
        }
        std::fs::rename(temp, dest).map_err(|e| io_error("rename to", dest, e))
    }

    fn read(&self, path: &Path) -> ObjectResult<Option<Object>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(Object { etag: content_etag(&bytes), bytes })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", path, e)),
        }
    }

    fn collect_keys(&self, dir: &Path, prefix: &str, keys: &mut Vec<String>) -> ObjectResult<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if dir == self.root && (name == TEMP_DIR || name == LOCK_FILE) {
                continue;
            }
            let kind = entry.file_type().map_err(|e| io_error("stat", &entry.path(), e))?;
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if kind.is_dir() {
                self.collect_keys(&entry.path(), &path, keys)?;
            } else if let Some(key) = path.strip_suffix(OBJECT_SUFFIX) {
                keys.push(key.to_string());
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for DirStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        let dest = self.path(key)?;
        let temp = self.write_temp(&bytes)?;
        let _lock = self.lock()?;
        self.install(&temp, &dest)?;
        Ok(content_etag(&bytes))
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> ObjectResult<String> {
        let dest = self.path(key)?;
        let temp = self.write_temp(&bytes)?;
        let _lock = self.lock()?;
        if dest.exists() {
            let _ = std::fs::remove_file(&temp);
            return Err(ObjectError::PreconditionFailed(key.to_string()));
        }
        self.install(&temp, &dest)?;
        Ok(content_etag(&bytes))
    }

    async fn put_if_match(&self, key: &str, bytes: Vec<u8>, etag: &str) -> ObjectResult<String> {
        let dest = self.path(key)?;
        let temp = self.write_temp(&bytes)?;
        let _lock = self.lock()?;
        if self.read(&dest)?.is_none_or(|current| current.etag != etag) {
            let _ = std::fs::remove_file(&temp);
            return Err(ObjectError::PreconditionFailed(key.to_string()));
        }
        self.install(&temp, &dest)?;
        Ok(content_etag(&bytes))
    }

    async fn get(&self, key: &str) -> ObjectResult<Option<Object>> {
        self.read(&self.path(key)?)
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        let path = self.path(key)?;
        let _lock = self.lock()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path, e)),
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> ObjectResult<Vec<String>> {
        let mut keys = Vec::new();
        self.collect_keys(&self.root, "", &mut keys)?;
        keys.retain(|k| k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after));
        keys.sort_unstable();
        Ok(keys)
    }
}
