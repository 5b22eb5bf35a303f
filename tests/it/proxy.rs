//! A TCP proxy between szb-sync and Postgres that can partition the network the way a real one
//! fails: packets vanish with no RST and no FIN. Sockets stay open; the proxy just stops copying
//! bytes, in both directions, on every connection, old and new.
//!
//! - [`Proxy::heal`] starts copying again, as when a partition shorter than TCP's retransmission
//!   timeout ends: whatever was sent meanwhile arrives (a close too).
//! - [`Proxy::fail_over`] ends a partition the way a failover does: every connection made so far
//!   stays silent for good on szb-sync's side, while Postgres sees it closed (the new primary
//!   has none of those sessions); new connections work.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    open: bool,
    /// Connections made before the latest failover are dead for good.
    generation: u64,
}

pub struct Proxy {
    /// The proxy's address, to put in a database URL in place of Postgres's.
    pub addr: std::net::SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<Mutex<u64>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`), forwarding.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, watching) = watch::channel(State {
            open: true,
            generation: 0,
        });
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        // Client sides of connections lost in a failover: kept open, never read or written.
        let graveyard: Arc<Mutex<Vec<(OwnedReadHalf, OwnedWriteHalf)>>> = Arc::default();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                *count.lock().unwrap() += 1;
                let (watching, graveyard) = (watching.clone(), graveyard.clone());
                tokio::spawn(serve(client, server, watching, graveyard));
            }
        });
        Proxy {
            addr,
            state,
            accepted,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }

    /// `url` (a Postgres URL) with the proxy in place of the server.
    pub fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some(&self.addr.ip().to_string())).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// Stops copying bytes, on every connection, old and new.
    pub fn partition(&self) {
        self.state.send_modify(|s| s.open = false);
    }

    /// Copies again, on every connection.
    pub fn heal(&self) {
        self.state.send_modify(|s| s.open = true);
    }

    /// Ends the partition as a failover does: connections made so far never carry a byte again
    /// to szb-sync, and are closed towards Postgres; new ones work.
    pub fn fail_over(&self) {
        self.state.send_modify(|s| {
            s.open = true;
            s.generation += 1;
        });
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.accepted.lock().unwrap()
    }
}

async fn serve(
    client: TcpStream,
    server: TcpStream,
    mut state: watch::Receiver<State>,
    graveyard: Arc<Mutex<Vec<(OwnedReadHalf, OwnedWriteHalf)>>>,
) {
    let generation = state.borrow().generation;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let failed_over = {
        let up = pump(&mut client_read, &mut server_write, state.clone());
        let down = pump(&mut server_read, &mut client_write, state.clone());
        tokio::select! {
            _ = futures_util::future::join(up, down) => false,
            _ = state.wait_for(|s| s.generation > generation) => true,
        }
    };
    if failed_over {
        // The server's halves drop here: Postgres sees the connection end.
        graveyard.lock().unwrap().push((client_read, client_write));
    }
}

/// Copies `from` to `to` while the network is open; at the end of `from`, ends `to`.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.wait_for(|s| s.open).await.is_err() {
            return;
        }
        let n = from.read(&mut buf).await.unwrap_or(0);
        if state.wait_for(|s| s.open).await.is_err() {
            return;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
