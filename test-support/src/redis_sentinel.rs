//! A Redis primary with one replica and three Sentinels on loopback: the setup of a Redis
//! failover test.
//!
//! The primary runs with `--repl-diskless-sync-delay 0` (the first sync would wait 5 s); the
//! replica starts once the primary answers and is ready when its link is up; each Sentinel
//! has its own writable config file (`sentinel monitor mymaster 127.0.0.1 PORT 2`,
//! `down-after-milliseconds 1000`, `failover-timeout 3000`), and [`RedisSentinel::start`]
//! returns once every Sentinel knows the replica and the two other Sentinels, so a failover
//! can happen. A SIGKILLed primary is replaced in about 2 s.
//!
//! Why 1000 ms and not less: a Sentinel counts a server down once a PING is unanswered for
//! that long, and a link it has just made after a failover starts counting at once. At
//! 200 ms, on a loaded 2-core machine, the Sentinels took the just-promoted primary for
//! down and failed over back and forth (3 runs in 15, up to 5 failovers in one), once onto
//! a replica restarted a moment before and still empty, which wiped the data. At 1000 ms:
//! none in 15 runs on the same load, and the promotion takes 0.2 s longer.
//!
//! Needs `redis-server` and `redis-sentinel` (Debian packages of the same names).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{free_ports, probe_redis, which, HarnessError, MakeCommand, Ready, Server, TestPki};

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";
/// How long the Sentinels may take to find each other and the replica.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS settings of a [`RedisSentinel`] setup started with
/// [`start_tls`](RedisSentinel::start_tls): every node and Sentinel serves TLS on a second
/// port and talks TLS to the others (`tls-replication yes`).
#[derive(Debug)]
struct SetupTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    client_certs: bool,
}

impl SetupTls {
    /// The settings as `redis-server` arguments (`--name value`) or config lines.
    fn settings(&self, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("tls-port", port.to_string()),
            ("tls-cert-file", self.cert.display().to_string()),
            ("tls-key-file", self.key.display().to_string()),
            ("tls-ca-cert-file", self.ca.display().to_string()),
            (
                "tls-auth-clients",
                (if self.client_certs { "yes" } else { "no" }).into(),
            ),
            ("tls-replication", "yes".into()),
        ]
    }
}

/// One data node (primary or replica) of a [`RedisSentinel`] setup.
pub struct RedisNode {
    server: Server,
    port: u16,
    /// The TLS port, when the setup runs TLS.
    tls_port: Option<u16>,
    /// The primary this node replicates when (re)started; `None`: it starts as a primary.
    replica_of: Arc<Mutex<Option<u16>>>,
}

impl fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNode")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("server", &self.server)
            .finish()
    }
}

impl RedisNode {
    fn start(
        binary: &Path,
        name: String,
        port: u16,
        replica_of: Option<u16>,
        tls: Option<(Arc<SetupTls>, u16)>,
    ) -> Result<Self, HarnessError> {
        let replica_of = Arc::new(Mutex::new(replica_of));
        let tls_port = tls.as_ref().map(|t| t.1);
        let binary = binary.to_owned();
        let primary = Arc::clone(&replica_of);
        let make: MakeCommand = Box::new(move |data: &Path| {
            let mut c = Command::new(&binary);
            c.arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--dir"])
                .arg(data)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--hz", "100", "--loglevel", "warning"])
                .args(["--repl-diskless-sync-delay", "0"]);
            if let Some((tls, tls_port)) = &tls {
                for (name, value) in tls.settings(*tls_port) {
                    c.arg(format!("--{name}")).arg(value);
                }
            }
            if let Some(primary) = *lock(&primary) {
                c.args(["--replicaof", "127.0.0.1"])
                    .arg(primary.to_string());
            }
            c
        });
        let primary = Arc::clone(&replica_of);
        let ready: Ready = Box::new(move || {
            let pong = probe_redis(port, "PING").is_some_and(|a| a.starts_with("+PONG"));
            // A replica is ready once its link to the primary is up (its data synced).
            pong && (lock(&primary).is_none()
                || probe_redis(port, "INFO replication")
                    .is_some_and(|a| a.contains("master_link_status:up")))
        });
        let server = Server::new(name, make, ready)?;
        Ok(RedisNode {
            server,
            port,
            tls_port,
            replica_of,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when the setup was started with
    /// [`start_tls`](RedisSentinel::start_tls).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The port the Sentinels and the replicas use: the TLS one in a TLS setup.
    fn announced_port(&self) -> u16 {
        self.tls_port.unwrap_or(self.port)
    }

    /// `redis://127.0.0.1:PORT`: this node itself, whatever its role.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one inline command (e.g. `SET k v`) and returns the raw reply.
    pub fn command(&self, inline: &str) -> Option<String> {
        probe_redis(self.port, inline)
    }

    /// The role this node reports (`master`, `slave`), `None` when it does not answer.
    pub fn role(&self) -> Option<String> {
        let info = self.command("INFO replication")?;
        info.lines()
            .find_map(|l| l.strip_prefix("role:"))
            .map(|r| r.trim().to_owned())
    }
}

impl std::ops::Deref for RedisNode {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for RedisNode {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Redis primary, one replica and three Sentinels on loopback.
#[derive(Debug)]
pub struct RedisSentinel {
    nodes: Vec<RedisNode>,
    sentinels: Vec<Server>,
    sentinel_ports: Vec<u16>,
    /// The Sentinels' TLS ports in a TLS setup.
    sentinel_tls_ports: Option<Vec<u16>>,
}

impl RedisSentinel {
    /// Starts the primary (node 0), the replica (node 1) and three Sentinels, and waits until
    /// every Sentinel knows the replica and the other Sentinels.
    ///
    /// # Errors
    /// [`HarnessError`] with the failing server's log, or when `redis-server` or
    /// `redis-sentinel` is not installed.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_inner(None)
    }

    /// As [`start`](Self::start), every node and Sentinel also serving TLS on a second port
    /// (certificate `pki.server`, clients checked against `pki.ca`; with `client_certs` a
    /// client without a certificate is refused) and talking TLS to the others
    /// (`tls-replication yes`): the Sentinels monitor and name the nodes' TLS ports, and
    /// [`address`](Self::address) lists the Sentinels' TLS ports. The plain ports stay for
    /// the harness's own probes.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_tls(pki: &TestPki, client_certs: bool) -> Result<Self, HarnessError> {
        Self::start_inner(Some(Arc::new(SetupTls {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            ca: pki.ca.clone(),
            client_certs,
        })))
    }

    fn start_inner(tls: Option<Arc<SetupTls>>) -> Result<Self, HarnessError> {
        let server = which("redis-server")?;
        let sentinel = which("redis-sentinel").map_err(|_| HarnessError::Missing {
            what: "redis-sentinel (Debian package redis-sentinel: apt-get install -y \
                   redis-sentinel)"
                .into(),
        })?;
        let ports = free_ports(10);
        // Plain ports first, TLS ports (used only in a TLS setup) after.
        let with_tls = |i: usize| tls.clone().map(|t| (t, ports[5 + i]));
        let primary_port = if tls.is_some() { ports[5] } else { ports[0] };
        let primary =
            RedisNode::start(&server, "redis-primary".into(), ports[0], None, with_tls(0))?;
        let replica = RedisNode::start(
            &server,
            "redis-replica".into(),
            ports[1],
            Some(primary_port),
            with_tls(1),
        )?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            sentinels.push(start_sentinel(
                &sentinel,
                i,
                ports[2 + i],
                primary_port,
                with_tls(2 + i),
            )?);
        }
        let setup = RedisSentinel {
            nodes: vec![primary, replica],
            sentinels,
            sentinel_ports: ports[2..5].to_vec(),
            sentinel_tls_ports: tls.map(|_| ports[7..10].to_vec()),
        };
        setup.wait_for_discovery()?;
        Ok(setup)
    }

    /// Waits until every Sentinel reports the primary with one replica and three Sentinels.
    fn wait_for_discovery(&self) -> Result<(), HarnessError> {
        let start = Instant::now();
        let known = |port: u16| {
            probe_redis(port, "INFO sentinel").is_some_and(|a| {
                a.contains(&format!("name={MASTER_NAME},status=ok"))
                    && a.contains("slaves=1,sentinels=3")
            })
        };
        while start.elapsed() < DISCOVERY_TIMEOUT {
            if self.sentinel_ports.iter().all(|p| known(*p)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::NotReady {
            server: "redis-sentinel".into(),
            reason: format!(
                "the Sentinels did not find the replica and each other within \
                 {DISCOVERY_TIMEOUT:?}"
            ),
            log: self
                .sentinels
                .first()
                .map(Server::log_tail)
                .unwrap_or_default(),
        })
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`: the form
    /// `rpc.registryConfig.address` takes (the Sentinels' TLS ports in a TLS setup).
    pub fn address(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinel_tls_ports
            .as_ref()
            .unwrap_or(&self.sentinel_ports)
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// The name the Sentinels monitor the primary under.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The data node at `index` (0 started as the primary, 1 as its replica).
    pub fn node(&self, index: usize) -> &RedisNode {
        &self.nodes[index]
    }

    /// The data node at `index`, mutably (to kill, pause, restart it).
    pub fn node_mut(&mut self, index: usize) -> &mut RedisNode {
        &mut self.nodes[index]
    }

    /// The Sentinel at `index` (0 to 2).
    pub fn sentinel(&self, index: usize) -> &Server {
        &self.sentinels[index]
    }

    /// The index of the data node the Sentinels name as the primary now (the first Sentinel
    /// that answers), `None` when none answers or it names no node of this setup.
    pub fn primary_index(&self) -> Option<usize> {
        let port = self.sentinel_ports.iter().find_map(|&p| {
            let answer = probe_redis(
                p,
                &format!("SENTINEL get-master-addr-by-name {MASTER_NAME}"),
            )?;
            // `*2 $9 127.0.0.1 $5 PORT`: the last line that is a number.
            answer
                .lines()
                .filter_map(|l| l.trim().parse::<u16>().ok())
                .next_back()
        })?;
        self.nodes.iter().position(|n| n.announced_port() == port)
    }

    /// Waits until the Sentinels name a primary other than `except` that reports itself a
    /// master (so it takes writes), and returns its index.
    ///
    /// # Errors
    /// [`HarnessError::NotReady`] when none does within `within`, with the first
    /// Sentinel's log.
    pub fn wait_for_primary(
        &self,
        except: Option<usize>,
        within: Duration,
    ) -> Result<usize, HarnessError> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(i) = self.primary_index().filter(|i| Some(*i) != except) {
                if self.nodes[i].role().as_deref() == Some("master") {
                    return Ok(i);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::NotReady {
            server: "redis-sentinel".into(),
            reason: format!("no primary other than {except:?} within {within:?}"),
            log: self
                .sentinels
                .first()
                .map(Server::log_tail)
                .unwrap_or_default(),
        })
    }

    /// SIGKILLs the primary the Sentinels name and returns its index.
    ///
    /// # Errors
    /// [`HarnessError::NotReady`] when no primary is named.
    pub fn kill_primary(&mut self) -> Result<usize, HarnessError> {
        let primary = self.wait_for_primary(None, Duration::from_secs(5))?;
        self.nodes[primary].kill();
        Ok(primary)
    }

    /// Restarts node `index` (killed before, or killed now) as a replica of the primary the
    /// Sentinels name, and waits until its link is up.
    ///
    /// # Errors
    /// [`HarnessError`] when no other primary is named or the node does not come back.
    pub fn restart_as_replica(&mut self, index: usize) -> Result<(), HarnessError> {
        let primary = self.wait_for_primary(Some(index), Duration::from_secs(30))?;
        let port = self.nodes[primary].announced_port();
        *lock(&self.nodes[index].replica_of) = Some(port);
        self.nodes[index].restart()
    }
}

/// A Sentinel on `port` monitoring the primary on `primary`; its config file is written
/// once (a Sentinel rewrites it with what it learns, kept across a restart).
fn start_sentinel(
    binary: &Path,
    index: usize,
    port: u16,
    primary: u16,
    tls: Option<(Arc<SetupTls>, u16)>,
) -> Result<Server, HarnessError> {
    let binary = binary.to_owned();
    let tls_lines: String = tls
        .map(|(tls, tls_port)| {
            tls.settings(tls_port)
                .into_iter()
                .map(|(name, value)| format!("{name} \"{value}\"\n"))
                .collect()
        })
        .unwrap_or_default();
    let make: MakeCommand = Box::new(move |data: &Path| {
        let config = data.with_file_name("sentinel.conf");
        if !config.exists() {
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile \"\"\n\
                 loglevel notice\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n{tls_lines}",
                data.display()
            );
            // A failure shows as the Sentinel not starting, with its log.
            let _ = std::fs::write(&config, text);
        }
        let mut c = Command::new(&binary);
        c.arg(&config);
        c
    });
    let ready: Ready =
        Box::new(move || probe_redis(port, "PING").is_some_and(|a| a.starts_with("+PONG")));
    Server::new(format!("redis-sentinel-{index}"), make, ready)
}
