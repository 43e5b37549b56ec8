//! A ZooKeeper ensemble of three servers on loopback, like the 3-member etcd cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_ports, probe, which, HarnessError, MakeCommand, Ready, Server, ZkServer};

/// Members of the ensemble.
const MEMBERS: usize = 3;
/// `tickTime` of every member: sessions of 0.4–4 s are allowed, as on [`ZkServer::start`].
const TICK_MS: u32 = 200;

/// A 3-server ZooKeeper ensemble on loopback (`tickTime` 200 ms, so sessions may last 0.4 to
/// 4 s), each member a [`ZkServer`] with its own client port and data dir.
///
/// Every member whitelists the four-letter commands `ruok`, `srvr`, `stat`, `mntr` and `cons`
/// (`cons` lists each client connection with its session id, `sid=0x...`: which member a
/// session is connected to). A member is ready when it serves clients (`srvr` shows a
/// `Mode:`), which needs a quorum: restarting one member of three while another is down waits
/// for the two of them to form one.
#[derive(Debug)]
pub struct ZkEnsemble {
    members: Vec<ZkServer>,
}

impl ZkEnsemble {
    /// Starts three members and waits until each serves clients (all within ~1.5 s on an idle
    /// machine).
    ///
    /// # Errors
    /// [`HarnessError`] with the failing member's log, or when ZooKeeper or Java is not
    /// installed.
    pub fn start() -> Result<Self, HarnessError> {
        let java = which("java")?;
        let jar = PathBuf::from("/usr/share/java/zookeeper.jar");
        if !jar.is_file() {
            return Err(HarnessError::Missing {
                what: jar.display().to_string(),
            });
        }
        // Client, quorum and election ports of every member, all picked while every listener
        // is open, so none comes back twice.
        let ports = free_ports(3 * MEMBERS);
        let servers: String = (0..MEMBERS)
            .map(|i| {
                format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    i + 1,
                    ports[MEMBERS + i],
                    ports[2 * MEMBERS + i]
                )
            })
            .collect();
        // Members elect a leader together (each waits for a quorum): spawn all, then wait.
        let starting: Vec<_> = (0..MEMBERS)
            .map(|i| {
                let port = ports[i];
                let make = member_command(java.clone(), i + 1, port, servers.clone());
                let ready: Ready = Box::new(move || mode(port).is_some());
                std::thread::spawn(move || {
                    Server::new(format!("zookeeper-{}", i + 1), make, ready).map(|server| {
                        ZkServer {
                            server,
                            port,
                            secure_port: None,
                        }
                    })
                })
            })
            .collect();
        let mut members = Vec::with_capacity(MEMBERS);
        let mut failed = None;
        for handle in starting {
            match handle.join() {
                Ok(Ok(member)) => members.push(member),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(HarnessError::NotReady {
                        server: "zookeeper ensemble".into(),
                        reason: "a starter thread panicked".into(),
                        log: String::new(),
                    });
                }
            }
        }
        // The members that did come up are dropped (killed) with `members`.
        match failed {
            Some(e) => Err(e),
            None => Ok(Self { members }),
        }
    }

    /// Every member's `127.0.0.1:PORT`, comma-separated (the form `rpc.registryConfig.address`
    /// takes).
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(ZkServer::connect_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member at `index` (0, 1 or 2; its `myid` is `index + 1`).
    ///
    /// # Panics
    /// When `index` is not below 3.
    pub fn member(&self, index: usize) -> &ZkServer {
        &self.members[index]
    }

    /// The member at `index`, mutably (to kill, pause, resume or restart it).
    ///
    /// # Panics
    /// When `index` is not below 3.
    pub fn member_mut(&mut self, index: usize) -> &mut ZkServer {
        &mut self.members[index]
    }

    /// What `srvr` says the member at `index` is now (`leader`, `follower`), `None` when it
    /// does not serve clients (down, paused, or without a quorum).
    ///
    /// # Panics
    /// When `index` is not below 3.
    pub fn mode(&self, index: usize) -> Option<String> {
        mode(self.members[index].port)
    }

    /// The index of the member whose `srvr` shows `Mode: leader`, waiting up to 5 s for one
    /// (an election after a leader died takes ~0.4 s).
    pub fn leader_index(&self) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let leader = (0..MEMBERS).find(|&i| {
                self.members[i].pid().is_some() && self.mode(i).as_deref() == Some("leader")
            });
            if leader.is_some() {
                return leader;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The index of the member a client session (`session_id`, as ZooKeeper prints it in
    /// hexadecimal) is connected to, from each running member's `cons`.
    pub fn member_serving(&self, session_id: i64) -> Option<usize> {
        let needle = format!("sid={session_id:#x},");
        (0..MEMBERS).find(|&i| {
            self.members[i].pid().is_some()
                && probe(self.members[i].port, b"cons").is_some_and(|a| a.contains(&needle))
        })
    }
}

/// The `Mode:` of the server on `port` (`standalone`, `leader`, `follower`), `None` when it
/// does not answer or does not serve clients.
fn mode(port: u16) -> Option<String> {
    let answer = probe(port, b"srvr")?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_owned())
}

/// The command of member `id` (1-based): its `zoo.cfg` and `myid` are written again before
/// each start, so a wiped restart keeps the same settings.
fn member_command(java: PathBuf, id: usize, client_port: u16, servers: String) -> MakeCommand {
    Box::new(move |data: &Path| {
        let config = data.with_file_name("zoo.cfg");
        let text = format!(
            "tickTime={TICK_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client_port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr,cons\nforceSync=no\n{servers}",
            data.display()
        );
        // A failed write shows as the member not coming up, with its log.
        let _ = std::fs::write(&config, text);
        let _ = std::fs::write(data.join("myid"), format!("{id}\n"));
        let mut c = Command::new(&java);
        c.args([
            "-Xmx64m",
            "-Xms16m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
        ])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg("/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar")
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&config);
        c
    })
}
