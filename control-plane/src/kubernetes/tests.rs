//! Kubernetes mode against the recorded API-server exchanges
//! (tests/fixtures/kubernetes), through kube's mock client.

mod lease;
mod mock;
mod pods;
mod reflect;
mod refs;
mod replicas;
mod status;
mod translate;
mod trust_bundle;
