//! [`EndpointSet`]: the endpoints the balancer chooses from, with their load
//! estimates. Replaced as a whole when discovery changes the set; endpoints
//! that stay keep their estimate, and requests in flight hold their own
//! reference, so a change never drops them.

use std::net::SocketAddr;
use std::sync::Arc;

use super::EndpointRef;
use super::ewma::PeakEwma;

/// One endpoint and its load.
#[derive(Debug)]
pub struct EndpointStats {
    pub addr: SocketAddr,
    pub load: PeakEwma,
}

impl EndpointStats {
    /// This endpoint as the gate knows it, at position `at` of its set.
    pub fn at(&self, at: usize) -> EndpointRef {
        EndpointRef {
            at,
            addr: self.addr,
        }
    }
}

/// An immutable set of endpoints.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// What discovery said, to notice an unchanged answer cheaply.
    pub source: Option<Arc<[SocketAddr]>>,
    pub endpoints: Vec<Arc<EndpointStats>>,
}

impl EndpointSet {
    /// Whether `addrs` is the set this was built from.
    pub fn is_same(&self, addrs: &Arc<[SocketAddr]>) -> bool {
        match &self.source {
            Some(source) => Arc::ptr_eq(source, addrs) || **source == **addrs,
            None => false,
        }
    }

    /// The next set: `addrs`, reusing the stats of endpoints that stay.
    pub fn next(&self, addrs: Arc<[SocketAddr]>) -> EndpointSet {
        let mut endpoints = Vec::with_capacity(addrs.len());
        for addr in addrs.iter() {
            if endpoints
                .iter()
                .any(|e: &Arc<EndpointStats>| e.addr == *addr)
            {
                continue; // duplicates in discovery answers count once
            }
            let kept = self.endpoints.iter().find(|e| e.addr == *addr).cloned();
            endpoints.push(kept.unwrap_or_else(|| {
                Arc::new(EndpointStats {
                    addr: *addr,
                    load: PeakEwma::default(),
                })
            }));
        }
        EndpointSet {
            source: Some(addrs),
            endpoints,
        }
    }
}
