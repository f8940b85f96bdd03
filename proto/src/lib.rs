//! Levee's wire contracts and shared policy model.
//!
//! Layout:
//! - `v1`: Rust generated from `levee/v1/*.proto` (prost + tonic).
//! - `policy`: the typed, validated policy model used by proxy and control plane.
//! - `identity`: the default trust domain of workload identities (the one
//!   SPIFFE ID type is `policy::SpiffeId`).
//! - `fs`: writing a file atomically and durably (caches, address files).

#![forbid(unsafe_code)]

/// Generated protobuf messages and gRPC stubs for `levee.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("levee.v1");
}

pub mod fs;
pub mod identity;
pub mod policy;
