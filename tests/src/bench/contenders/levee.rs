//! The Levee contenders: one `levee-proxy` started from a policy file and
//! ready once `/ready` answers, then one hop, two hops (plaintext and
//! mTLS) and one hop with the full policy or a given one.

use super::contender::Contender;
use super::env::Env;
use super::launch::{answers, command, read_json, wait_for};
use super::upstreams::Upstream;
use crate::bench::configs;
use crate::harness::certs::TestCa;
use crate::harness::{Addrs, BoxError, Process, get_http1, write_atomically, yaml};

impl Env {
    /// One `levee-proxy` with `policy` (if any) and `--app-port app_port`.
    async fn levee(
        &self,
        name: &str,
        policy: Option<&str>,
        app_port: u16,
    ) -> Result<(Process, Addrs), BoxError> {
        self.levee_args(name, policy, app_port, &[]).await
    }

    /// [`Env::levee`] with `extra` flags (e.g. tracing).
    pub(in crate::bench) async fn levee_args(
        &self,
        name: &str,
        policy: Option<&str>,
        app_port: u16,
        extra: &[String],
    ) -> Result<(Process, Addrs), BoxError> {
        let addr_file = self.path(&format!("{name}.addrs.json"));
        // A previous run of the same name left its addresses here.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = command(&self.levee_proxy, self.pinning.proxy.as_deref());
        for flag in ["--outbound-addr", "--inbound-addr", "--admin-addr"] {
            cmd.args([flag, "127.0.0.1:0"]);
        }
        cmd.arg("--addr-file").arg(&addr_file);
        cmd.args([
            "--service",
            configs::SERVICE,
            "--app-port",
            &app_port.to_string(),
        ]);
        if let Some(policy) = policy {
            let path = self.path(&format!("{name}.policy.yaml"));
            write_atomically(&path, policy)?;
            cmd.arg("--policy-file").arg(path);
        }
        cmd.args(extra);
        let mut process = self.spawn(name, cmd)?;
        let addrs: Addrs = wait_for(&mut process, name, || read_json(&addr_file)).await?;
        wait_for(&mut process, name, || async move {
            let resp = get_http1(addrs.admin, "localhost", "/ready").await?;
            if resp.status == 200 {
                Ok(())
            } else {
                Err(format!("/ready {}", resp.status).into())
            }
        })
        .await?;
        Ok((process, addrs))
    }

    /// Levee outbound in front of the upstream; `full_policy` adds every
    /// resilience layer of DESIGN.md §3.
    pub async fn levee_one_hop(
        &self,
        upstream: &Upstream,
        full_policy: bool,
    ) -> Result<Contender, BoxError> {
        let (name, policy) = if full_policy {
            ("levee-policy", configs::levee_full_policy(&[upstream.addr]))
        } else {
            ("levee-1hop", configs::levee_endpoints(&[upstream.addr]))
        };
        let (mut process, addrs) = self
            .levee(name, Some(&policy), upstream.addr.port())
            .await?;
        wait_for(&mut process, name, || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(name, addrs.outbound, true, vec![process]))
    }

    /// The mesh path: a client sidecar's outbound to a server sidecar's
    /// inbound, which forwards to the upstream as its local app.
    pub async fn levee_two_hop(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let (server, server_addrs) = self
            .levee("levee-server", None, upstream.addr.port())
            .await?;
        let policy = configs::levee_endpoints(&[server_addrs.inbound]);
        let (mut client, addrs) = self
            .levee("levee-client", Some(&policy), upstream.addr.port())
            .await?;
        wait_for(&mut client, "levee-2hop", || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender("levee-2hop", addrs.outbound, true, vec![client, server]))
    }

    /// [`Env::levee_two_hop`] with mTLS on the hop: both sidecars get a
    /// workload certificate from a test CA (rcgen) and the client expects
    /// the server's SPIFFE ID. Connections are kept alive, so a handshake
    /// is paid per connection, not per request.
    pub async fn levee_two_hop_mtls(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let ca = TestCa::new("levee-bench CA");
        let server_id = "spiffe://levee.bench/ns/default/sa/bench";
        let server_files = ca.workload(server_id).write(self.dir.path(), "server", &ca);
        let (server, server_addrs) = self
            .levee_args(
                "levee-mtls-server",
                None,
                upstream.addr.port(),
                &server_files.flags(),
            )
            .await?;
        let client_files = ca
            .workload("spiffe://levee.bench/ns/default/sa/client")
            .write(self.dir.path(), "client", &ca);
        let policy = yaml::documents(&[yaml::endpoints_with_identity(
            configs::SERVICE,
            configs::SERVICE_PORT,
            &[server_addrs.inbound],
            server_id,
        )]);
        let (mut client, addrs) = self
            .levee_args(
                "levee-mtls-client",
                Some(&policy),
                upstream.addr.port(),
                &client_files.flags(),
            )
            .await?;
        wait_for(&mut client, "levee-2hop-mtls", || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(
            "levee-2hop-mtls",
            addrs.outbound,
            true,
            vec![client, server],
        ))
    }

    /// One Levee hop with this policy file, ready when a call through it succeeds.
    pub async fn levee_with(
        &self,
        name: &'static str,
        policy: &str,
    ) -> Result<Contender, BoxError> {
        let (mut process, addrs) = self.levee(name, Some(policy), 1).await?;
        wait_for(&mut process, name, || {
            answers(addrs.outbound, configs::SERVICE)
        })
        .await?;
        Ok(self.contender(name, addrs.outbound, true, vec![process]))
    }
}
