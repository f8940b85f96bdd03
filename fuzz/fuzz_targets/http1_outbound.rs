//! Raw bytes → the outbound listener of a real in-process proxy (HTTP/1
//! request head handling, routing, forwarding); it must answer or close
//! within the deadline, never panic.
#![no_main]

use levee_fuzz::listener::{Listener, exchange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: levee_fuzz::listener::start_proxy(),
    |data: &[u8]| exchange(Listener::Outbound, data)
);
