//! `<data-dir>/LOCK`: one process at a time opens a data directory. The holder keeps an exclusive
//! `flock` on the file for as long as it has the database open, and writes who it is into it
//! (`pid=…`, `role=…`, `listen=…` lines), so another process refused the lock can name the holder.
//!
//! Invariant: fjall is opened only by the process holding this lock (fjall must never be opened by
//! two processes at once), and the contents are rewritten only by the holder.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Bytes of a holder record read at most (it is a few short lines).
const HOLDER_BYTES_MAX: u64 = 4096;

/// What the holder of a data directory is doing with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRole {
    /// A node (`t4 run` or an embedded node) that writes to the directory.
    Node,
    /// `t4 inspect`, reading it.
    Inspect,
}

impl LockRole {
    fn name(self) -> &'static str {
        match self {
            LockRole::Node => "node",
            LockRole::Inspect => "inspect",
        }
    }
}

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file; the `flock` goes with the descriptor.
    file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir`, creating the lock file if `create` (a reader must not create
    /// anything), and records this process as the holder. Refused with [`Error::DataDirLocked`],
    /// naming the holder, when another process has it.
    pub fn acquire(data_dir: &Path, create: bool, role: LockRole) -> Result<DataDirLock> {
        let dir_error = |reason: String| Error::DataDir { path: data_dir.to_path_buf(), reason };
        let path = data_dir.join(LOCK_FILE);
        let file = File::options()
            .create(create)
            .truncate(false) // the holder's record stays until we have the lock
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    dir_error(format!("not a T4 data directory: no {LOCK_FILE} file in it"))
                }
                _ => dir_error(format!("cannot open lock file: {e}")),
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(locked_error(data_dir, file)),
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_error(format!("cannot lock: {e}"))),
        }
        let lock = DataDirLock { file };
        lock.record_holder(role, None).map_err(|e| dir_error(format!("cannot write lock file: {e}")))?;
        Ok(lock)
    }

    /// Rewrites the holder record: this process, its role and the address it serves, if any.
    pub fn record_holder(&self, role: LockRole, listen: Option<SocketAddr>) -> std::io::Result<()> {
        let mut record = format!("pid={}\nrole={}\n", std::process::id(), role.name());
        if let Some(addr) = listen {
            record.push_str(&format!("listen={addr}\n"));
        }
        let mut file = &self.file;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(record.as_bytes())
    }
}

/// The error a node starting on `data_dir` would get because another process holds it, if one
/// does: found out without creating anything or writing the lock file (a free lock is taken and
/// dropped at once).
pub fn held_by_another(data_dir: &Path) -> Option<Error> {
    let file = File::open(data_dir.join(LOCK_FILE)).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Some(locked_error(data_dir, file)),
        Ok(()) | Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Who holds a data directory, as its lock file says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Holder {
    pid: Option<u32>,
    role: Option<String>,
    listen: Option<String>,
}

impl Holder {
    /// Parses a holder record; unknown lines are ignored (a newer build may write more).
    fn parse(record: &str) -> Holder {
        let mut holder = Holder::default();
        for line in record.lines() {
            match line.split_once('=') {
                Some(("pid", pid)) => holder.pid = pid.trim().parse().ok(),
                Some(("role", role)) => holder.role = Some(role.trim().to_string()),
                Some(("listen", listen)) => holder.listen = Some(listen.trim().to_string()),
                _ => {}
            }
        }
        holder
    }
}

/// The error for a data directory whose lock `file` another process holds.
fn locked_error(data_dir: &Path, mut file: File) -> Error {
    let mut record = String::new();
    // The holder writes its record right after locking; an unreadable or torn one names nobody.
    let _ = (&mut file).take(HOLDER_BYTES_MAX).read_to_string(&mut record);
    locked(data_dir.to_path_buf(), Holder::parse(&record))
}

fn locked(path: PathBuf, holder: Holder) -> Error {
    let pid = holder.pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
    let (holder, advice) = match holder.role.as_deref() {
        Some("inspect") => (format!("t4 inspect ({pid})"), "try again when it is done".to_string()),
        Some(_) => {
            let endpoint = holder.listen.clone().unwrap_or_else(|| "HOST:PORT".to_string());
            let serving = holder.listen.map(|addr| format!(", serving {addr}")).unwrap_or_default();
            (format!("t4 ({pid}{serving})"), format!("stop it or use `t4 status --endpoint {endpoint}`"))
        }
        // A build from before holder records, or another program.
        None => (format!("another process ({pid})"), "stop it or use `t4 status --endpoint HOST:PORT`".to_string()),
    };
    Error::DataDirLocked { path, holder, advice }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_its_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), true, LockRole::Node).unwrap();
        first.record_holder(LockRole::Node, Some("127.0.0.1:4000".parse().unwrap())).unwrap();
        let err = DataDirLock::acquire(dir.path(), false, LockRole::Inspect).unwrap_err().to_string();
        let expected = format!(
            "data directory {} is in use by t4 (pid {}, serving 127.0.0.1:4000); stop it or use `t4 status \
             --endpoint 127.0.0.1:4000`",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(err, expected);
        drop(first);
        let _again = DataDirLock::acquire(dir.path(), false, LockRole::Inspect).unwrap();
    }

    #[test]
    fn asking_who_holds_a_directory_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(held_by_another(dir.path()).is_none(), "no lock file: nobody");
        assert!(!dir.path().join(LOCK_FILE).exists());
        let first = DataDirLock::acquire(dir.path(), true, LockRole::Node).unwrap();
        let err = held_by_another(dir.path()).expect("held").to_string();
        assert!(err.contains(&format!("is in use by t4 (pid {})", std::process::id())), "{err}");
        drop(first);
        let record = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(held_by_another(dir.path()).is_none(), "released");
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), record, "record untouched");
        let _again = DataDirLock::acquire(dir.path(), false, LockRole::Node).unwrap();
    }

    #[test]
    fn a_reader_does_not_create_a_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDirLock::acquire(dir.path(), false, LockRole::Inspect).unwrap_err().to_string();
        assert!(err.contains("not a T4 data directory"), "{err}");
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn holder_records_without_a_role_name_another_process() {
        assert_eq!(Holder::parse("pid=12\nfuture=x\n"), Holder { pid: Some(12), ..Holder::default() });
        let err = locked(PathBuf::from("/d"), Holder::parse("")).to_string();
        assert_eq!(
            err,
            "data directory /d is in use by another process (pid unknown); stop it or use `t4 status --endpoint \
             HOST:PORT`"
        );
    }
}
