//! The one place where T4 errors become gRPC statuses: etcd's codes and exact message strings
//! (clients such as clientv3 match on the text).

use tonic::{Code, Status};

use crate::error::Error;

/// The status etcd returns for `error`.
pub fn to_status(error: Error) -> Status {
    let (code, message) = match &error {
        Error::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        Error::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        Error::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        Error::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        Error::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request"),
        Error::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
        Error::Compacted => (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
        Error::FutureRevision => (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
        Error::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        Error::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        Error::Closed => (Code::Unavailable, "etcdserver: server stopped"),
        Error::Storage(_)
        | Error::Corrupt(_)
        | Error::Runtime(_)
        | Error::DataDir { .. }
        | Error::DataDirLocked(_)
        | Error::Listen { .. } => {
            tracing::error!(error = %error, "request failed");
            return Status::new(Code::Unavailable, format!("etcdserver: {error}"));
        }
    };
    Status::new(code, message)
}
