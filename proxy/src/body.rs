//! The body type every proxy response (and forwarded request) carries.
//!
//! Bodies stream: forwarded bodies are the peer's `Incoming` boxed once, and
//! proxy-made bodies are small `Full` buffers. Nothing here buffers a whole body.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// An error from any body or layer, boxed (tower's convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type-erased, streaming HTTP body.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A service a stack can end in or be built of: proxy requests in, proxy
/// responses out, boxed errors, cloneable and shareable across tasks. Every
/// `Service` with those properties is one (this only names the bounds once).
pub trait ProxyService:
    tower::Service<
        http::Request<BoxBody>,
        Response = http::Response<BoxBody>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> ProxyService for S where
    S: tower::Service<
            http::Request<BoxBody>,
            Response = http::Response<BoxBody>,
            Error = BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A body holding `bytes` (proxy-made responses).
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes a received body, keeping it streaming.
pub fn incoming(body: hyper::body::Incoming) -> BoxBody {
    body.map_err(BoxError::from).boxed()
}
