//! NATS for the tests of the bus between servers: the machine's server
//! (`$WSGATE_TEST_NATS`, default nats://127.0.0.1:4222), started if it is
//! down; a test that needs it fails saying so if it cannot be had, never
//! skipped. Each test takes a subject prefix of its own
//! ([`subject_prefix`]), so tests share the server without hearing each
//! other.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long to wait for a NATS server started by a test to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The NATS server the tests use.
pub fn url() -> String {
    ensure_up();
    base_url()
}

/// A subject prefix no other test uses.
pub fn subject_prefix() -> String {
    format!("t{:016x}", fastrand::u64(..))
}

fn base_url() -> String {
    std::env::var("WSGATE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn answers() -> bool {
    let url = base_url();
    let address = url.trim_start_matches("nats://");
    let Ok(mut addrs) = address.to_socket_addrs() else {
        return false;
    };
    addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Checks once per process that NATS answers, starting the machine's
/// nats-server if it does not; panics if it cannot be had.
fn ensure_up() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        if answers() {
            return Ok(());
        }
        // The machine's server, as its setup starts it (JetStream on, its
        // store in /var/lib/nats-server).
        let status = std::process::Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/nats-server",
                "--",
                "-a",
                "127.0.0.1",
                "-p",
                "4222",
                "-js",
                "-sd",
                "/var/lib/nats-server",
            ])
            .status()
            .map_err(|e| format!("it is down, and it cannot be started: {e}"))?;
        if !status.success() {
            return Err(format!("it is down, and starting it failed ({status})"));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers() {
            if Instant::now() > deadline {
                return Err("started, but it does not accept connections".into());
            }
            // Polling a server that is starting: it announces nothing.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    if let Err(e) = up {
        panic!(
            "this test needs NATS at {} (set WSGATE_TEST_NATS to use another): {e}",
            base_url()
        );
    }
}
