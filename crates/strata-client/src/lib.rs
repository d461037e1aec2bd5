//! An async client of a Strata range group: writes go to the group's
//! primary and come back as commit tokens; reads go to the primary or to
//! any replica, and a read after a token is answered only from a history
//! that still holds its write.
//!
//! - [`Client`] with [`ClientConfig`]: finds the primary in etcd
//!   ([`EtcdSource`]) or by asking seed nodes, follows it across
//!   failovers ("not primary" answers naming a newer epoch, rediscovery
//!   within [`ClientConfig::failover_wait`]).
//! - [`ShardedClient`]: every group of a cluster, each request routed by
//!   the range map in etcd to the group owning its keys (one [`Client`]
//!   per group); its writes return a [`GroupToken`] (`group/epoch:seq`),
//!   its reads take a [`ShardedRead`].
//! - [`Token`]: `(epoch, seq)` of an acknowledged write.
//! - [`ReadPolicy`]: the primary, or the replicas (round robin) with an
//!   optional token.
//! - [`Error`]: every failure with its evidence; [`Error::OutcomeUnknown`]
//!   for a write that may or may not have been applied (never retried),
//!   [`Error::WriteLost`] for a token a failover dropped.
//!
//! The rules are written up in `docs/design/cluster.md`, "The client".
//!
//! # Examples
//!
//! ```no_run
//! use strata_client::{Client, ClientConfig, ReadPolicy, WriteBatch};
//! # async fn run() -> Result<(), strata_client::Error> {
//! let client = Client::new(ClientConfig::seeds(["127.0.0.1:7001", "127.0.0.1:7002"]))?;
//! let token = client.write(WriteBatch::new().put(b"a", b"1").put(b"b", b"2")).await?;
//! println!("committed as {token}"); // epoch:seq
//! let read = client.get(b"a", ReadPolicy::Replicas { token: Some(token) }).await?;
//! assert_eq!(read.value.as_deref(), Some(&b"1"[..]));
//! # Ok(()) }
//! ```

mod accept;
mod client;
mod config;
mod discovery;
mod error;
mod pool;
mod read;
mod route;
mod sharded;
mod status;
mod token;
mod wire;
mod write;

pub use client::Client;
pub use config::{Bearer, ClientConfig, EtcdSource};
pub use discovery::Primary;
pub use error::{Attempt, Error, Result};
pub use read::{GetAnswer, ReadPolicy, ScanAnswer, ScanRange};
pub use sharded::{ScanPiece, ShardedClient, ShardedGet, ShardedRead, ShardedScan};
pub use status::{GroupStatus, MemberStatus};
pub use token::{GroupToken, ParseGroupTokenError, ParseTokenError, Token};
pub use write::WriteBatch;
