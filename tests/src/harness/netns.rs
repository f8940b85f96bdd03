//! Network namespaces for the transparent-mode tests: a namespace the test
//! creates (`ip netns add levee-t-<random>`) and always deletes (a `Drop`
//! guard, so also when the test fails), commands run inside it
//! (`ip netns exec`), TCP listeners and connections made inside it from
//! this process, `levee-proxy` run inside it as the proxy uid, and two
//! namespaces joined by a veth pair whose addresses (10.213.0.0/24,
//! fd00:1e7e::/64) exist only inside them.
//!
//! Creating namespaces needs root. Without it the tests fail loudly with
//! that reason: CI runs as root, and a skipped test would hide the gap.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    process::Output,
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    process::Command,
};

use super::{
    Process, STARTUP_DEADLINE, binary,
    startup::{clean_env, wait_addr_file},
};

/// The veth pair's addresses: side `a` and side `b`.
pub const A_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 1));
pub const B_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 2));
pub const A_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x1e7e, 0, 0, 0, 0, 0, 1));
pub const B_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x1e7e, 0, 0, 0, 0, 0, 2));

/// How long one command inside a namespace (an `ip`, an `iptables-save`, a
/// connect) may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(10);

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with its loopback up. Panics with the
    /// reason when it cannot (not root, no `ip`).
    pub fn create() -> Netns {
        require_root();
        let name = format!("levee-t-{:08x}", rand::random::<u32>());
        run_checked(std::process::Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file (`/run/netns/<name>`), for [`enter_netns`].
    pub fn open(&self) -> io::Result<File> {
        File::open(format!("/run/netns/{}", self.name))
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `program args` inside the namespace to its end (with a deadline).
    pub async fn output(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        match tokio::time::timeout(COMMAND_DEADLINE, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("running {program} in {}: {e}", self.name),
            Err(_) => panic!(
                "{program} {args:?} in {} ran over {COMMAND_DEADLINE:?}",
                self.name
            ),
        }
    }

    /// Like [`Netns::output`], panicking with stderr unless it succeeds; its stdout.
    pub async fn stdout(&self, program: &str, args: &[&str]) -> String {
        let out = self.output(program, args).await;
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed ({}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip args…` inside the namespace (`ip -n`), panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        run_checked(
            std::process::Command::new("ip")
                .args(["-n", &self.name])
                .args(args),
        );
    }

    /// Runs `f` on a thread that joined the namespace: sockets it makes
    /// belong to the namespace, and stay there when used from anywhere.
    fn inside<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&self.open()?)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread inside the namespace panicked")))
        })
    }

    /// A TCP listener bound to `addr` inside the namespace. `[::]` listens
    /// on IPv4 too (the namespace's bindv6only is 0).
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        let listener = self.inside(|| {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        });
        match listener {
            Ok(listener) => {
                TcpListener::from_std(listener).expect("a tokio listener (inside a runtime)")
            }
            Err(e) => panic!("binding {addr} in {}: {e}", self.name),
        }
    }

    /// A TCP connection to `target` opened from inside the namespace by this
    /// (root) process: the namespace's OUTPUT rules apply to it.
    pub fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        let stream = self.inside(|| {
            let stream = std::net::TcpStream::connect_timeout(&target, COMMAND_DEADLINE)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })?;
        TcpStream::from_std(stream)
    }

    /// Opens a TCP connection to `target` from inside the namespace, as
    /// `uid` (root when `None`), and sends `token` and a newline. bash's
    /// `/dev/tcp` makes it a plain `connect` from a process of that uid,
    /// which is what an iptables owner match sees.
    pub async fn send_tcp(
        &self,
        target: SocketAddr,
        uid: Option<u32>,
        token: &str,
    ) -> Result<(), String> {
        let script = format!("echo {token} > /dev/tcp/{}/{}", target.ip(), target.port());
        let mut cmd = match uid {
            Some(uid) => {
                let mut cmd = self.command("setpriv");
                cmd.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".to_owned(),
                    "bash".to_owned(),
                ]);
                cmd
            }
            None => self.command("bash"),
        };
        cmd.args(["-c", &script]);
        let out = tokio::time::timeout(COMMAND_DEADLINE, cmd.output())
            .await
            .map_err(|_| format!("connecting to {target} ran over {COMMAND_DEADLINE:?}"))?
            .map_err(|e| format!("running bash in {}: {e}", self.name))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "connecting to {target} from {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// `levee-proxy` running inside a namespace (see [`Netns::start_proxy`]).
pub struct NetnsProxy {
    pub process: Process,
    /// Holds the addr file and the log; removed on drop.
    _dir: tempfile::TempDir,
}

impl Netns {
    /// Starts `levee-proxy` inside the namespace as `uid` (the proxy uid,
    /// 2102, for its own connections to go uncaptured), its outbound and
    /// inbound listeners on every address of both families (`[::]:4140`,
    /// `[::]:4143`, admin `[::]:4191`), plus `extra` flags; returns once it
    /// has bound them. It sees none of the caller's `LEVEE_*` variables.
    pub async fn start_proxy(&self, uid: u32, extra: &[&str]) -> NetnsProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        // The proxy, maybe not root, writes its addr file here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod the temp dir");
        let addr_file = dir.path().join("addrs.json");
        let mut cmd = self.command("setpriv");
        clean_env(&mut cmd, "info");
        cmd.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .arg(binary("levee-proxy"))
        .args(["--outbound-addr", "[::]:4140"])
        .args(["--inbound-addr", "[::]:4143"])
        .args(["--admin-addr", "[::]:4191", "--addr-file"])
        .arg(&addr_file)
        .args(extra);
        let mut process = Process::spawn("levee-proxy", cmd, &dir.path().join("proxy.log"))
            .expect("spawn levee-proxy");
        wait_addr_file::<serde_json::Value>(&mut process, &addr_file, STARTUP_DEADLINE).await;
        NetnsProxy { process, _dir: dir }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the name frees the namespace once nothing uses it
        // (sockets still open in it keep it alive until they close).
        let status = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

/// Two namespaces joined by a veth pair: `a` holds [`A_V4`] and [`A_V6`],
/// `b` holds [`B_V4`] and [`B_V6`].
pub struct NetnsPair {
    pub a: Netns,
    pub b: Netns,
}

impl NetnsPair {
    pub fn create() -> NetnsPair {
        let (a, b) = (Netns::create(), Netns::create());
        for ns in [&a, &b] {
            // No duplicate-address detection on the new interfaces (their
            // link-local addresses included): a tentative address delays
            // the first IPv6 exchanges by a second or more.
            run_checked(
                std::process::Command::new("ip")
                    .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
                    .args([
                        "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0",
                    ]),
            );
        }
        // Made inside `a` with its peer moved to `b`: the short interface
        // names never exist in the host's namespace, so tests never clash.
        a.ip(&[
            "link",
            "add",
            "veth-a",
            "type",
            "veth",
            "peer",
            "name",
            "veth-b",
            "netns",
            b.name(),
        ]);
        for (ns, dev, v4, v6) in [(&a, "veth-a", A_V4, A_V6), (&b, "veth-b", B_V4, B_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        let pair = NetnsPair { a, b };
        pair.wait_until_linked();
        pair
    }

    /// Returns once `a` reaches `b` over both families. A fresh veth pair
    /// can lose the first IPv6 packets (TCP then retransmits after 1 s,
    /// longer than a proxy's connect timeout), so the pair is only handed
    /// out once a connection succeeds promptly.
    fn wait_until_linked(&self) {
        let deadline = std::time::Instant::now() + COMMAND_DEADLINE;
        for ip in [B_V4, B_V6] {
            let probe = self
                .b
                .inside(|| std::net::TcpListener::bind(SocketAddr::new(ip, 0)))
                .unwrap_or_else(|e| panic!("binding a probe on {ip} in {}: {e}", self.b.name));
            let target = probe.local_addr().expect("the probe's address");
            loop {
                let attempt = self.a.inside(|| {
                    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200))
                });
                match attempt {
                    Ok(_) => break,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        panic!(
                            "{} cannot reach {target} in {}: {e}",
                            self.a.name, self.b.name
                        )
                    }
                    Err(_) => continue,
                }
            }
        }
    }
}

fn require_root() {
    let euid = current_euid();
    assert!(
        euid == 0,
        "network-namespace tests need root (they run `ip netns add` and iptables); \
         this test runs as uid {euid}. CI runs them as root; run them so"
    );
}

/// This process's effective uid (namespaces and iptables need 0).
#[allow(unsafe_code)]
pub fn current_euid() -> u32 {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

/// Moves the calling thread into the network namespace `file` refers to
/// (see [`Netns::open`]); only that thread, and threads it starts later.
#[allow(unsafe_code)]
pub fn enter_netns(file: &File) -> io::Result<()> {
    // SAFETY: setns(2) takes a descriptor we own (alive for the call) and a
    // flag; it changes only this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn run_checked(cmd: &mut std::process::Command) {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("running {cmd:?}: {e} (install iproute2)"),
    };
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
