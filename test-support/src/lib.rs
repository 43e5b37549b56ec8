//! Test support, never published: real etcd, ZooKeeper and Redis servers as child processes.
//!
//! Each server runs on a free loopback port with a throwaway data dir and its log in that dir.
//! `start` waits until the server answers a probe (every probe has connect and read timeouts),
//! and fails with the server's exit status and log when it does not come up. Fault injection:
//! [`kill`](Server::kill) (SIGKILL), [`pause`](Server::pause) / [`resume`](Server::resume)
//! (SIGSTOP / SIGCONT), [`stop`](Server::stop) (SIGTERM), [`restart`](Server::restart) on the
//! same port (optionally with the data wiped). Dropping a server kills and reaps it; children get
//! `PR_SET_PDEATHSIG` so they die with the test process even when it is killed.
//!
//! A missing server binary is an error that names the Debian package to install: tests never
//! skip silently.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

mod spawn;
mod tls;
pub use tls::{CertFiles, TestPki, CLIENT_CN};
mod zk_ensemble;
pub use zk_ensemble::ZkEnsemble;

/// How long a server may take to answer its probe.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect and read timeout of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Bytes of the server log put into error messages.
const LOG_TAIL: usize = 4000;
/// The apt line that installs every server the tests use.
pub const INSTALL_HINT: &str =
    "apt-get install -y etcd-server etcd-client zookeeper redis-server (or run `make test`)";

/// The apt line that installs the browser of the console's browser test.
pub const BROWSER_INSTALL_HINT: &str =
    "apt-get install -y chromium chromium-driver (or run `make test`, which installs them)";

/// The install hint for a missing `what`.
fn install_hint(what: &str) -> &'static str {
    if what.starts_with("chrom") {
        BROWSER_INSTALL_HINT
    } else {
        INSTALL_HINT
    }
}

/// A harness failure.
#[derive(Debug)]
pub enum HarnessError {
    /// A server binary is not installed.
    Missing {
        /// The binary or file looked for.
        what: String,
    },
    /// Starting or controlling the process failed.
    Io {
        /// What was being done.
        doing: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The server exited or did not answer in time.
    NotReady {
        /// Which server.
        server: String,
        /// What happened.
        reason: String,
        /// The end of its log.
        log: String,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Missing { what } => {
                write!(f, "`{what}` is not installed: {}", install_hint(what))
            }
            HarnessError::Io { doing, source } => write!(f, "{doing}: {source}"),
            HarnessError::NotReady {
                server,
                reason,
                log,
            } => write!(
                f,
                "{server} did not come up: {reason}\n--- server log (tail) ---\n{log}"
            ),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let doing = doing.into();
    move |source| HarnessError::Io { doing, source }
}

/// A free loopback port.
///
/// # Panics
/// When the OS has no free port (the tests cannot run anyway).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports, each reserved for this test process until it exits.
///
/// A port is free when it is found free and then given to a server that binds it a moment
/// later (a JVM takes a second): in between, nothing else may take it. So the ports come from
/// below the kernel's ephemeral range (where the clients' own connections take their local
/// ports, thousands of times per test run), and each one is reserved across the test
/// processes running at once by an exclusive `flock` on a file named after it, held until
/// the process exits (`$TMPDIR/registry-test-ports/`). The first cause of a server failing
/// with "Address already in use" under load was a port picked with `bind(0)` and taken by a
/// client's connection before the server came up.
///
/// # Panics
/// When no port can be reserved (the tests cannot run anyway).
#[allow(clippy::expect_used)]
pub fn free_ports(n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| reserve_port().expect("reserve a free loopback port"))
        .collect()
}

/// The lowest port handed out; the highest is below the ephemeral range.
const RESERVED_PORTS_FROM: u16 = 20_000;

/// The reservation files of this process's ports: their locks last as long as the process.
static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

#[allow(unsafe_code)] // `flock` (`File::try_lock` is newer than this workspace's Rust 1.85).
fn reserve_port() -> Option<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::os::fd::AsRawFd;
    let below = ephemeral_start()
        .unwrap_or(32_768)
        .clamp(RESERVED_PORTS_FROM + 1_000, u16::MAX);
    let dir = std::env::temp_dir().join("registry-test-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..10_000 {
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        let span = u64::from(below - RESERVED_PORTS_FROM);
        let port = RESERVED_PORTS_FROM + u16::try_from(hasher.finish() % span).ok()?;
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        // SAFETY: `flock` only takes the descriptor of the file, open for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // Reserved by another test process.
        }
        // Reserved; still in use by something that does not reserve (another program)?
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        RESERVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(file);
        return Some(port);
    }
    None
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn which(binary: &str) -> Result<PathBuf, HarnessError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::Missing {
            what: binary.to_owned(),
        })
}

/// Sends raw bytes to a loopback port and reads the answer, with timeouts.
pub fn probe(port: u16, request: &[u8]) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) if !answer.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// An HTTP GET on a loopback port (HTTP/1.0, so the server closes the connection).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    probe(port, request.as_bytes())
}

type MakeCommand = Box<dyn Fn(&Path) -> Command + Send + Sync>;
type Ready = Box<dyn Fn() -> bool + Send + Sync>;

/// One server process, restartable on the same ports.
pub struct Server {
    name: String,
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    make: MakeCommand,
    ready: Ready,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Server {
    fn new(name: String, make: MakeCommand, ready: Ready) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .map_err(io("create a temp dir"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(io("create the data dir"))?;
        let log = dir.path().join("server.log");
        let mut server = Self {
            name,
            dir,
            data,
            log,
            child: None,
            paused: false,
            make,
            ready,
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("open the server log"))?;
        let err = log.try_clone().map_err(io("open the server log"))?;
        let mut command = (self.make)(&self.data);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .current_dir(self.dir.path());
        let child = spawn::spawn(command).map_err(io(format!("start {}", self.name)))?;
        self.child = Some(child);
        self.paused = false;
        let start = Instant::now();
        loop {
            if (self.ready)() {
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                return Err(self.not_ready(format!("exited with {status}")));
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready(format!("no answer within {READY_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn not_ready(&mut self, reason: String) -> HarnessError {
        self.kill();
        HarnessError::NotReady {
            server: self.name.clone(),
            reason,
            log: self.log_tail(),
        }
    }

    /// The server's name, e.g. `etcd`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let cut = log.len().saturating_sub(LOG_TAIL);
        let cut = (cut..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        log[cut..].to_owned()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server answers its probe now.
    pub fn is_ready(&self) -> bool {
        (self.ready)()
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            spawn::signal(pid, signal);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                spawn::signal(child.id(), spawn::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then reap (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                spawn::signal(child.id(), spawn::SIGCONT);
            }
            spawn::signal(child.id(), spawn::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the server stops answering but keeps its sockets and state.
    pub fn pause(&mut self) {
        self.signal(spawn::SIGSTOP);
        self.paused = true;
        // The signal is asynchronous: wait until the kernel shows the process stopped, so a
        // test's next step really meets a paused server.
        if let Some(pid) = self.pid() {
            let stat = format!("/proc/{pid}/stat");
            for _ in 0..200 {
                let stopped = std::fs::read_to_string(&stat).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().next())
                        .is_some_and(|state| state == "T" || state == "t")
                });
                if stopped {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        self.signal(spawn::SIGCONT);
        self.paused = false;
    }

    /// Kills the server if running and starts it again on the same ports with its data.
    ///
    /// # Errors
    /// [`HarnessError`] when it does not come back (retried a few times: a port can stay busy
    /// for a moment after a kill).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills the server, wipes its data dir and starts it again on the same ports.
    ///
    /// # Errors
    /// As [`restart`](Self::restart).
    pub fn restart_wiped(&mut self) -> Result<(), HarnessError> {
        self.kill();
        std::fs::remove_dir_all(&self.data).map_err(io("wipe the data dir"))?;
        std::fs::create_dir_all(&self.data).map_err(io("create the data dir"))?;
        self.restart()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options of an etcd member.
#[allow(clippy::too_many_arguments)]
fn etcd_command(
    binary: PathBuf,
    name: String,
    scheme: &'static str,
    client: u16,
    peer: u16,
    cluster: String,
    token: Option<String>,
    extra: Vec<String>,
) -> MakeCommand {
    Box::new(move |data: &Path| {
        let mut c = Command::new(&binary);
        c.arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{client}"))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{client}"))
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(&cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .arg("--unsafe-no-fsync")
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]);
        if let Some(token) = &token {
            c.arg("--initial-cluster-token").arg(token);
        }
        c.args(&extra);
        c
    })
}

fn etcd_ready(client: u16) -> Ready {
    Box::new(move || http_get(client, "/health").is_some_and(|a| a.contains("\"health\":\"true\"")))
}

/// A single-member etcd on loopback, with the fast election flags.
#[derive(Debug)]
pub struct EtcdServer {
    server: Server,
    client_port: u16,
    tls: bool,
}

impl EtcdServer {
    /// Starts etcd.
    ///
    /// # Errors
    /// [`HarnessError`] with the log when it does not come up, or when etcd is not installed.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    /// Starts etcd with extra command-line arguments.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let binary = which("etcd")?;
        let ports = free_ports(2);
        let (client, peer) = (ports[0], ports[1]);
        let make = etcd_command(
            binary,
            "n1".into(),
            "http",
            client,
            peer,
            format!("n1=http://127.0.0.1:{peer}"),
            None,
            extra.iter().map(|s| (*s).to_owned()).collect(),
        );
        let server = Server::new("etcd".into(), make, etcd_ready(client))?;
        Ok(Self {
            server,
            client_port: client,
            tls: false,
        })
    }

    /// Starts etcd serving clients over TLS only, with `pki.server` as its certificate;
    /// with `client_cert_auth` it asks every client for a certificate signed by `pki.ca`
    /// (mutual TLS). Readiness is probed on a plain metrics listener, so a client of the
    /// client port must speak TLS.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_tls(
        pki: &TestPki,
        server: &CertFiles,
        client_cert_auth: bool,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        let binary = which("etcd")?;
        let ports = free_ports(3);
        let (client, peer, metrics) = (ports[0], ports[1], ports[2]);
        let mut args: Vec<String> = vec![
            "--cert-file".into(),
            server.cert.display().to_string(),
            "--key-file".into(),
            server.key.display().to_string(),
            "--trusted-ca-file".into(),
            pki.ca.display().to_string(),
            "--listen-metrics-urls".into(),
            format!("http://127.0.0.1:{metrics}"),
        ];
        if client_cert_auth {
            args.push("--client-cert-auth".into());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let make = etcd_command(
            binary,
            "n1".into(),
            "https",
            client,
            peer,
            format!("n1=http://127.0.0.1:{peer}"),
            None,
            args,
        );
        let server = Server::new("etcd-tls".into(), make, etcd_ready(metrics))?;
        Ok(Self {
            server,
            client_port: client,
            tls: true,
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with [`start_tls`](Self::start_tls)).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The text of `/metrics` (Prometheus format).
    pub fn metrics(&self) -> String {
        http_get(self.client_port, "/metrics").unwrap_or_default()
    }

    /// Runs `etcdctl` against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoint(), args)
    }
}

impl std::ops::Deref for EtcdServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for EtcdServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// The value of a Prometheus metric line `name{...} value` summed over its label sets.
pub fn metric_sum(metrics: &str, name: &str, label_filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `etcdctl` (API v3) against `endpoints` (comma-separated).
///
/// # Panics
/// When `etcdctl` cannot be run at all (the message says what to install).
#[allow(clippy::expect_used)]
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run etcdctl ({e}): {INSTALL_HINT}"))
}

/// A 3-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts three members and waits until each answers.
    ///
    /// # Errors
    /// [`HarnessError`] with the failing member's log.
    pub fn start() -> Result<Self, HarnessError> {
        let binary = which("etcd")?;
        let ports = free_ports(6);
        let cluster = (0..3)
            .map(|i| format!("n{i}=http://127.0.0.1:{}", ports[3 + i]))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("cluster-{}", ports[0]);
        // Members must start together (each waits for a quorum): spawn all, then wait.
        let mut starting = Vec::new();
        for i in 0..3 {
            let (client, peer) = (ports[i], ports[3 + i]);
            let make = etcd_command(
                binary.clone(),
                format!("n{i}"),
                "http",
                client,
                peer,
                cluster.clone(),
                Some(token.clone()),
                Vec::new(),
            );
            let handle = std::thread::spawn(move || {
                Server::new(format!("etcd-n{i}"), make, etcd_ready(client)).map(|server| {
                    EtcdServer {
                        server,
                        client_port: client,
                        tls: false,
                    }
                })
            });
            starting.push(handle);
        }
        let mut members = Vec::new();
        for handle in starting {
            match handle.join() {
                Ok(Ok(member)) => members.push(member),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(HarnessError::NotReady {
                        server: "etcd cluster".into(),
                        reason: "a starter thread panicked".into(),
                        log: String::new(),
                    })
                }
            }
        }
        Ok(Self { members })
    }

    /// Every member's endpoint, comma-separated (the form `rpc.registryConfig.address` takes).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(EtcdServer::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member at `index`.
    pub fn member(&self, index: usize) -> &EtcdServer {
        &self.members[index]
    }

    /// The member at `index`, mutably (to kill, pause, restart it).
    pub fn member_mut(&mut self, index: usize) -> &mut EtcdServer {
        &mut self.members[index]
    }

    /// The index of the current leader among the running members, waiting up to 5 s for one.
    pub fn leader_index(&self) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            for (i, m) in self.members.iter().enumerate() {
                if m.pid().is_some() && metric_sum(&m.metrics(), "etcd_server_is_leader", "") == 1.0
                {
                    return Some(i);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A ZooKeeper server on loopback (`tickTime` 200 ms by default, so sessions expire fast).
#[derive(Debug)]
pub struct ZkServer {
    server: Server,
    port: u16,
    secure_port: Option<u16>,
}

/// The secure client port of a [`ZkServer`].
#[derive(Debug)]
struct ZkTls {
    port: u16,
    keystore: PathBuf,
    ca: PathBuf,
    client_certs: bool,
}

impl ZkServer {
    /// Starts ZooKeeper with `tickTime=200`.
    ///
    /// # Errors
    /// [`HarnessError`] with the log, or when ZooKeeper or Java is not installed.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with_tick(200)
    }

    /// Starts ZooKeeper with the given `tickTime` in milliseconds (sessions may last 2 to 20
    /// ticks).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_tick(tick_ms: u32) -> Result<Self, HarnessError> {
        Self::start_with_heap(tick_ms, 64)
    }

    /// Starts ZooKeeper with the given `tickTime` and a JVM heap of at most `heap_mb` MiB
    /// (`-Xmx`). The tests' 64 MiB holds a few tens of thousands of nodes (registrations fail
    /// at about 88,000 small ones); the scale benchmark asks for more. The heap starts at
    /// 16 MiB and grows only as needed, so a larger cap costs nothing until it is used.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_heap(tick_ms: u32, heap_mb: u32) -> Result<Self, HarnessError> {
        Self::start_inner(tick_ms, heap_mb, None)
    }

    /// Starts ZooKeeper (`tickTime=200`) with a secure client port besides the plain one
    /// (which the readiness probe uses): Netty (`NettyServerCnxnFactory`), the server's
    /// certificate and key `server` and the CA `pki.ca`, both as PEM (`ssl.keyStore.type=PEM`);
    /// with `client_certs` a client without a certificate signed by the CA is refused
    /// (`ssl.clientAuth=need`), otherwise none is asked for.
    ///
    /// Debian's `zookeeper.jar` lists the Netty jars it needs in its manifest but
    /// `netty-codec.jar`, which the secure port needs too: it is added to the class path.
    ///
    /// # Errors
    /// As [`start`](Self::start), and when the files cannot be read or written.
    pub fn start_tls(
        pki: &TestPki,
        server: &CertFiles,
        client_certs: bool,
    ) -> Result<Self, HarnessError> {
        // ZooKeeper's PEM key store is one file: the private key, then the certificate.
        let mut keystore =
            std::fs::read(&server.key).map_err(io(format!("read {}", server.key.display())))?;
        keystore.extend(
            std::fs::read(&server.cert).map_err(io(format!("read {}", server.cert.display())))?,
        );
        let keystore_path = pki.dir().join(format!("zk-keystore-{}.pem", free_port()));
        std::fs::write(&keystore_path, keystore)
            .map_err(io(format!("write {}", keystore_path.display())))?;
        let tls = ZkTls {
            port: free_port(),
            keystore: keystore_path,
            ca: pki.ca.clone(),
            client_certs,
        };
        let secure_port = tls.port;
        let started = Self::start_inner(200, 64, Some(tls))?;
        // The secure port opens after the plain one (its own Netty factory): wait for it too.
        let addr = SocketAddr::from(([127, 0, 0, 1], secure_port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_err() {
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    server: "zookeeper-tls".into(),
                    reason: format!(
                        "the secure client port {secure_port} does not accept connections"
                    ),
                    log: started.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(started)
    }

    fn start_inner(tick_ms: u32, heap_mb: u32, tls: Option<ZkTls>) -> Result<Self, HarnessError> {
        let java = which("java")?;
        let jar = PathBuf::from("/usr/share/java/zookeeper.jar");
        if !jar.is_file() {
            return Err(HarnessError::Missing {
                what: jar.display().to_string(),
            });
        }
        let port = free_port();
        let secure_port = tls.as_ref().map(|t| t.port);
        let mut class_path =
            String::from("/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar");
        let mut secure = String::new();
        if let Some(t) = &tls {
            class_path.push_str(":/usr/share/java/netty-codec.jar");
            secure = format!(
                "secureClientPort={}\nsecureClientPortAddress=127.0.0.1\n\
                 serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                 ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
                 ssl.trustStore.location={}\nssl.trustStore.type=PEM\nssl.clientAuth={}\n",
                t.port,
                t.keystore.display(),
                t.ca.display(),
                if t.client_certs { "need" } else { "none" }
            );
        }
        let make: MakeCommand = Box::new(move |data: &Path| {
            let config = data.with_file_name("zoo.cfg");
            let text = format!(
                "tickTime={tick_ms}\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
                 forceSync=no\n{secure}",
                data.display()
            );
            // `forceSync=no`: the log of a throwaway data dir is not synced to disk (as etcd's
            // `--unsafe-no-fsync`): the disk's flush times stay out of the figures.
            // Written again before each start: a wiped restart keeps the same settings.
            let _ = std::fs::write(&config, text);
            let mut c = Command::new(&java);
            c.arg(format!("-Xmx{heap_mb}m"))
                .args(["-Xms16m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                .arg("-cp")
                .arg(&class_path)
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&config);
            c
        });
        let ready: Ready = Box::new(move || {
            probe(port, b"srvr").is_some_and(|a| a.lines().any(|l| l.starts_with("Mode: ")))
        });
        let server = Server::new("zookeeper".into(), make, ready)?;
        Ok(Self {
            server,
            port,
            secure_port,
        })
    }

    /// `127.0.0.1:SECURE_PORT` when started with [`start_tls`](Self::start_tls).
    pub fn secure_connect_string(&self) -> Option<String> {
        self.secure_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// `127.0.0.1:PORT`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::ops::Deref for ZkServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for ZkServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// A Redis server on loopback, persistence off, `--hz 100`.
#[derive(Debug)]
pub struct RedisServer {
    server: Server,
    port: u16,
    tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts Redis.
    ///
    /// # Errors
    /// [`HarnessError`] with the log, or when Redis is not installed.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    /// Starts Redis with extra arguments (e.g. `["--notify-keyspace-events", "Exg"]`).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let binary = which("redis-server")?;
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let make: MakeCommand = Box::new(move |data: &Path| {
            let mut c = Command::new(&binary);
            c.arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--dir"])
                .arg(data)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--hz", "100", "--loglevel", "warning"])
                .args(&extra);
            c
        });
        // With `--requirepass`, an unauthenticated PING is answered `-NOAUTH`: up all the same.
        let ready: Ready = Box::new(move || {
            probe_redis(port, "PING")
                .is_some_and(|a| a.starts_with("+PONG") || a.starts_with("-NOAUTH"))
        });
        let server = Server::new("redis".into(), make, ready)?;
        Ok(Self {
            server,
            port,
            tls_port: None,
        })
    }

    /// Starts Redis with a TLS port (certificate `server`, clients verified against
    /// `pki.ca`; with `client_certs` a client without a certificate is refused) besides its
    /// plain port, which the readiness probe and [`command`](Self::command) use.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_tls(
        pki: &TestPki,
        server: &CertFiles,
        client_certs: bool,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        let tls_port = free_port();
        let mut args: Vec<String> = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            server.cert.display().to_string(),
            "--tls-key-file".into(),
            server.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            pki.ca.display().to_string(),
            "--tls-auth-clients".into(),
            (if client_certs { "yes" } else { "no" }).into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut started = Self::start_with(&args)?;
        started.tls_port = Some(tls_port);
        // The TLS listener opens with the plain one; check it too.
        let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
        if TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_err() {
            let log = started.log_tail();
            return Err(HarnessError::NotReady {
                server: "redis-tls".into(),
                reason: format!("the TLS port {tls_port} does not accept connections"),
                log,
            });
        }
        Ok(started)
    }

    /// `rediss://127.0.0.1:TLS_PORT` when started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }
    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one inline command (e.g. `SET k v`) and returns the raw reply.
    pub fn command(&self, inline: &str) -> Option<String> {
        probe_redis(self.port, inline)
    }
}

/// One inline Redis command; returns the first reply line (with the bulk payload, if any).
fn probe_redis(port: u16, inline: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(format!("{inline}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl std::ops::Deref for RedisServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

mod redis_sentinel;
pub use redis_sentinel::{RedisNode, RedisSentinel, MASTER_NAME};

/// `chromedriver` (Debian's `chromium-driver`) on a free loopback port, for WebDriver tests
/// of the console in a real, headless Chromium. Killed on drop.
#[derive(Debug)]
pub struct ChromeDriver {
    server: Server,
    port: u16,
    browser: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver.
    ///
    /// # Errors
    /// [`HarnessError::Missing`] naming the packages to install when `chromedriver` or
    /// `chromium` is not installed; [`HarnessError::NotReady`] with its log when it does not
    /// come up.
    pub fn start() -> Result<Self, HarnessError> {
        let driver = which("chromedriver")?;
        let browser = which("chromium")?;
        let port = free_port();
        let make: MakeCommand = Box::new(move |data: &Path| {
            let mut c = Command::new(&driver);
            c.arg(format!("--port={port}")).arg(format!(
                "--log-path={}",
                data.join("chromedriver.log").display()
            ));
            c
        });
        let ready: Ready = Box::new(move || {
            // chromedriver does not answer HTTP/1.0.
            let request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            probe(port, request).is_some_and(|a| a.contains("\"ready\":true"))
        });
        let server = Server::new("chromedriver".into(), make, ready)?;
        Ok(Self {
            server,
            port,
            browser,
        })
    }

    /// `http://127.0.0.1:PORT`, the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Chromium binary (for `goog:chromeOptions.binary`).
    pub fn browser(&self) -> &Path {
        &self.browser
    }

    /// chromedriver's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.server.data_dir().join("chromedriver.log"))
            .unwrap_or_default();
        let cut = log.len().saturating_sub(LOG_TAIL);
        let cut = (cut..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        log[cut..].to_owned()
    }
}
