//! Strata's gRPC wire contract, generated from `proto/strata/v1/` at build
//! time (by `protox` and `tonic-prost-build`; no system `protoc`).
//!
//! The `.proto` files are the documentation of every message and field;
//! `docs/format.md` ("Replication messages") describes how they carry the
//! on-disk formats.
//!
//! # Examples
//!
//! ```
//! use strata_proto::v1::{Heartbeat, UpstreamMessage, upstream_message::Kind};
//! use prost::Message;
//! let message = UpstreamMessage { kind: Some(Kind::Heartbeat(Heartbeat { durable_seq: 7, sent_at_micros: 1 })) };
//! let bytes = message.encode_to_vec();
//! assert_eq!(UpstreamMessage::decode(bytes.as_slice()).unwrap(), message);
//! ```

/// Version 1 of the contract (`package strata.v1`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC server
/// reflection (so `grpcurl` and similar tools work without the files).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));
