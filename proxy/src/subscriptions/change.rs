//! [`Change`]: what the subscription tables ([`super::Subscriptions`] and
//! its [`super::addresses::AddressBook`]) tell the watch task, in order.

use std::net::SocketAddr;

use levee_proto::policy::ServiceKey;

/// What the watch task is told, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A destination met for the first time (or again after it was dropped).
    Subscribe(ServiceKey),
    /// A destination no longer kept: its discovered state goes too.
    Unsubscribe(ServiceKey),
    /// A destination address met on a redirected connection
    /// ([`super::addresses`]).
    SubscribeAddress(SocketAddr),
    /// An address dropped from the (full) address book.
    UnsubscribeAddress(SocketAddr),
}
