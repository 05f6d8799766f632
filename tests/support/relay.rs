//! A TCP relay in front of a service (PostgreSQL, NATS) that a test can
//! cut (every connection through it dropped, new ones refused at once) and
//! restore: the service going away for one client only, while it stays up
//! for everyone else.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on each cut: a relayed connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
}

impl Relay {
    /// A relay on a port of its own, to `upstream` (`HOST:PORT`).
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = upstream.to_owned();
        let cut = Arc::new(AtomicBool::new(false));
        let (cuts, _) = tokio::sync::watch::channel(0);
        let stop = CancellationToken::new();
        let relay = Relay {
            addr,
            cut: cut.clone(),
            cuts: cuts.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if cut.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.subscribe();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        relay
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
