//! T4: a key-value database for infrastructure state that speaks the etcd v3 API.
//!
//! Run it as a server (`t4 run`) or embed it: [`Node::open`] starts the node's executors in this
//! process, and its async methods work from any runtime.
//!
//! ```no_run
//! # async fn demo() -> t4::Result<()> {
//! let node = t4::Node::open(t4::Config::new("./t4-data"))?;
//! let revision = node.put("greeting", "hello").await?;
//! assert_eq!(node.get("greeting").await?.unwrap().mod_revision, revision);
//! node.close().await
//! # }
//! ```

mod actor;
mod alarms;
mod auto_compaction;
mod config;
mod durability;
mod error;
mod etcd;
mod ids;
pub mod inspect;
mod kv;
mod log;
mod metrics;
mod mvcc;
mod node;
pub mod object;
mod runtime;
mod sequencer;
mod shard;
mod types;

pub use config::{Config, ObjectStoreArgs};
pub use error::{
    DurabilityError, Error, Internal, LogError, Result, RuntimeError, SequencerError, StoreError, UploadError,
};
pub use node::{Node, Watch};
pub use types::{
    Compare, CompareOp, Event, EventKind, KeyValue, Lease, LeaseStatus, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions, prefix_end,
};

/// Defaults and limits of [`Config`].
/// Snapshots of a whole node (Maintenance.Snapshot, `etcdctl snapshot save`), in T4's own format.
pub mod snapshot {
    pub use crate::durability::snapshot::{SnapshotInfo, restore_data_dir};
}

pub mod defaults {
    pub use crate::config::{
        DEFAULT_DATA_DIR, DEFAULT_INSPECT_LIMIT, DEFAULT_LISTEN, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS,
        DEFAULT_STATUS_TIMEOUT_MS, GRPC_OVERHEAD_BYTES,
    };
}

/// The etcd v3 wire types, services and clients generated from `proto/`.
#[doc(hidden)]
pub mod proto {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    pub mod grpc_health {
        tonic::include_proto!("grpc.health.v1");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
    }
}
