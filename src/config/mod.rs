//! Every setting of a node, its default and its `T4_*` environment variable, in one place.
//! The `t4 run` command line is [`Config`] (flags win over the environment); embedded users build it
//! with [`Config::new`] and adjust fields.
//!
//! Files: `limits` (every default and limit, with its reason), `settings` (`Config`: the flags and
//! their `T4_*` variables, the embedded defaults), `object_store` (`ObjectStoreArgs`), `validate`
//! (what a node refuses to start with, and values derived from the settings), `flags` (parsing of
//! address and URL flags).

mod flags;
mod limits;
mod object_store;
mod settings;
mod validate;

pub use limits::*;
pub use object_store::ObjectStoreArgs;
pub use settings::Config;
