//! What the proxy records about each request it handles, as opposed to how
//! it forwards it: the per-request metrics observation ([`Observation`],
//! `levee_requests_total` and latency at the end of the response body) and
//! the JSON access log ([`access_log`]).

pub mod access_log;
mod request;

pub use request::Observation;
