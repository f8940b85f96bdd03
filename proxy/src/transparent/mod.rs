//! Transparent outbound, first step. A connection that `init-iptables`
//! redirected to the outbound listener still knows where the app meant to
//! go: conntrack keeps its original destination (`SO_ORIGINAL_DST`,
//! `IP6T_SO_ORIGINAL_DST`). Destinations are not yet mapped to services
//! (that needs discovery by address), so every redirected connection is an
//! unknown destination: forwarded to its original address byte for byte
//! (opaque passthrough, half-close respected, connect and idle timeouts).
//! A connection made to the listener itself (explicit mode, `HTTP_PROXY`)
//! has no other original destination and is served as HTTP, as before.
//!
//! Layout: `original_dst` reads the socket option; `passthrough` forwards;
//! `own_ports` tells the proxy's own connections coming back (a loop).

mod original_dst;
mod own_ports;
mod passthrough;

pub use original_dst::redirected_destination;
pub use passthrough::Passthrough;
