//! How many requests each sidecar counted (`levee_requests_total` from its
//! `/metrics`, scraped from inside the client pod), once the count has
//! stopped moving.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use super::layout::{ADMIN_PORT, SCRAPE_DEADLINE};
use super::lifecycle::Pods;
use crate::harness::{BoxError, Metrics, get_http1, netns::B_V4};

/// Which sidecar's request counter: the client's outbound or the server's inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    ClientOutbound,
    ServerInbound,
}

impl Pods {
    /// `levee_requests_total` of one side, once it has stopped moving
    /// (requests are counted when they finish, just after the client has
    /// its answer).
    pub async fn requests(&self, side: Side) -> Result<f64, BoxError> {
        let mut last = self.scrape(side).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.scrape(side).await?;
            if now == last || Instant::now() >= deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    async fn scrape(&self, side: Side) -> Result<f64, BoxError> {
        let (admin, direction) = match side {
            Side::ClientOutbound => (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), ADMIN_PORT),
                "outbound",
            ),
            Side::ServerInbound => (SocketAddr::new(B_V4, ADMIN_PORT), "inbound"),
        };
        let text = self
            .load
            .run(async move {
                let scrape = get_http1(admin, "localhost", "/metrics");
                match tokio::time::timeout(SCRAPE_DEADLINE, scrape).await {
                    Ok(Ok(resp)) => Ok(resp.text()),
                    Ok(Err(e)) => Err(format!("scraping {admin}: {e}")),
                    Err(_) => Err(format!(
                        "scraping {admin}: no answer in {SCRAPE_DEADLINE:?}"
                    )),
                }
            })
            .await??;
        let metrics = Metrics::parse(&text)?;
        Ok(metrics
            .sum("levee_requests_total", &[("direction", direction)])
            .unwrap_or(0.0))
    }
}
