//! Workload mTLS between sidecars (docs/identity.md, "mTLS between sidecars").
//!
//! The proxy's credentials arrive on a `watch` channel of [`Credentials`]
//! (from the files of [`files`], or from the control plane's
//! `Identity.Certify` through [`crate::identity::mesh_credentials`]).
//! Every change rebuilds the
//! rustls configurations once ([`TlsConfigs`]) and swaps them in
//! ([`arc_swap`]): handshakes load the current ones without a lock, and
//! connections already up keep the certificate they were made with, as
//! long as the current one is valid ([`Expiring`]).
//!
//! Layout:
//! - `credentials`: [`Credentials`] and reading them from DER/PEM.
//! - `files`: the `--identity-cert-file` / `--identity-key-file` /
//!   `--trust-bundle-file` source, reloaded on change or SIGHUP.
//! - `verify`: the SPIFFE ID of a certificate, and the server verifier
//!   (chain to the trust roots, then the expected URI SAN; no DNS names).
//! - `configs`: the rustls client and server configurations built from
//!   one set of credentials, and the task that rebuilds them.
//! - `origination`: outbound: TLS 1.3 to an endpoint that has an expected
//!   identity, with its errors ([`OriginateError`]); the identity a
//!   response's server proved ([`ServerIdentity`]).
//! - `termination`: inbound: accepting TLS on the plaintext port and the
//!   verified client identity ([`ClientIdentity`]).
//! - `expiry`: [`Expiring`], what both sides wrap their TLS stream in: an
//!   open mTLS connection ends once this proxy's current certificate has
//!   expired unrenewed.
//! - `stream`: [`Stream`], a connection that may or may not be TLS.
//! - `server_name`: the SNI origination sends (a name for the expected
//!   identity) and how a callee recognises a peer proxy's ClientHello.

mod configs;
mod credentials;
mod expiry;
pub mod files;
mod origination;
pub mod server_name;
mod stream;
mod termination;
pub mod verify;

pub use configs::{TlsConfigs, watch_credentials};
pub use credentials::{Credentials, CredentialsError};
pub use expiry::Expiring;
pub use origination::{Alpn, OriginateError, Origination, ServerIdentity};
pub use stream::{ClientTls, ServerTls, Stream};
pub use termination::{Accepted, CLIENT_ID_HEADER, ClientIdentity, Termination};

#[cfg(test)]
mod tests;
