//! What Levee is compared with: a direct call to the upstream, HAProxy
//! and nginx, each proxy ready once a call through it succeeds.

use std::{net::SocketAddr, path::Path};

use super::contender::Contender;
use super::env::Env;
use super::launch::{answers, command, free_port, wait_for};
use super::upstreams::Upstream;
use crate::bench::{configs, procfs::Usage};
use crate::harness::{BoxError, write_atomically};

impl Env {
    pub fn direct(&self, upstream: &Upstream) -> Contender {
        Contender {
            name: "direct",
            addr: upstream.addr,
            authority: configs::SERVICE.into(),
            h2: true,
            usage: Usage::new(Vec::new(), self.ticks_per_sec),
            load: None,
            procs: Vec::new(),
        }
    }

    pub async fn haproxy(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        self.haproxy_with("haproxy", |listen| configs::haproxy(listen, upstream.addr))
            .await
    }

    /// HAProxy with the config `render` makes for its listen address.
    pub async fn haproxy_with(
        &self,
        name: &'static str,
        render: impl FnOnce(SocketAddr) -> String,
    ) -> Result<Contender, BoxError> {
        let listen = free_port()?;
        let cfg = self.path(&format!("{name}.cfg"));
        write_atomically(&cfg, &render(listen))?;
        let mut cmd = command(Path::new("haproxy"), self.pinning.proxy.as_deref());
        cmd.arg("-f").arg(&cfg).arg("-db");
        let mut process = self.spawn(name, cmd)?;
        wait_for(&mut process, name, || answers(listen, configs::SERVICE)).await?;
        Ok(self.contender(name, listen, false, vec![process]))
    }

    pub async fn nginx(&self, upstream: &Upstream) -> Result<Contender, BoxError> {
        let listen = free_port()?;
        let prefix = self.path("nginx");
        std::fs::create_dir_all(&prefix)?;
        let cfg = prefix.join("nginx.conf");
        write_atomically(&cfg, &configs::nginx(&prefix, listen, upstream.addr))?;
        let mut cmd = command(Path::new("nginx"), self.pinning.proxy.as_deref());
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"));
        cmd.arg("-c").arg(&cfg).args(["-g", "daemon off;"]);
        let mut process = self.spawn("nginx", cmd)?;
        wait_for(&mut process, "nginx", || answers(listen, configs::SERVICE)).await?;
        Ok(self.contender("nginx", listen, false, vec![process]))
    }
}
