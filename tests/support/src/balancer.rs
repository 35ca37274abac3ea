//! A real TCP load balancer (Debian's `haproxy`) in front of several servers: connections go
//! round-robin to the servers whose HTTP health check answers 200, checked every 200 ms, and
//! a connection a server refuses is tried on another. TLS passes through untouched, so each
//! server sees its clients' certificates. Stopped when dropped.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Guarded, free_port};

/// One server behind the balancer: where it serves, and where its health check is.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `host:port` of the TCP service.
    pub address: String,
    /// `host:port` of plain HTTP answering `GET <path>` with 200 while it takes connections.
    pub health: String,
}

/// A running `haproxy`.
#[derive(Debug)]
pub struct Balancer {
    _process: Guarded,
    _dir: tempfile::TempDir,
    /// `host:port` clients connect to.
    pub address: String,
}

impl Balancer {
    /// Balances over `backends`, each checked with `GET health_path`.
    pub fn start(backends: &[Backend], health_path: &str) -> anyhow::Result<Balancer> {
        let dir = tempfile::Builder::new()
            .prefix("plinth-test-haproxy-")
            .tempdir()?;
        let address = format!("127.0.0.1:{}", free_port());
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(n, backend)| {
                let (host, port) = backend
                    .health
                    .rsplit_once(':')
                    .context("a health address is host:port")?;
                anyhow::Ok(format!(
                    "  server s{n} {} check addr {host} port {port}\n",
                    backend.address
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let config = format!(
            "global\n  maxconn 2000\n\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10m\n  \
             timeout server 10m\n  timeout check 1s\n  retries 3\n  option redispatch\n\n\
             listen front\n  bind {address}\n  balance roundrobin\n  \
             option httpchk GET {health_path}\n  http-check expect status 200\n  \
             default-server inter 200ms fall 1 rise 1\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let mut command = std::process::Command::new("/usr/sbin/haproxy");
        command.arg("-db").arg("-f").arg(&path);
        let mut process = Guarded::spawn(&command, &dir.path().join("haproxy.log"))
            .context("start haproxy (Debian's haproxy package)")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&address).is_err() {
            if let Some(status) = process.try_wait()? {
                bail!(
                    "haproxy exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen on {address}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Balancer {
            _process: process,
            _dir: dir,
            address,
        })
    }
}
