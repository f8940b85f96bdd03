//! Shared code of Levee's fuzz targets (`fuzz_targets/*.rs`, one per input
//! kind; see docs/security.md "Fuzzing").
//!
//! - [`policy`]: what every accepted policy must survive: printing and
//!   re-reading, the protobuf round trip, the proxy's snapshot, the
//!   compiled route tables and calls through them.
//! - [`listener`]: a real proxy (outbound and inbound listeners) running in
//!   this process on loopback, fed raw bytes.

pub mod listener;
pub mod policy;
