//! A TCP gate in front of a test server: open, it forwards every byte both
//! ways; closed, it cuts the connections in flight and drops new ones as soon
//! as they arrive, so the client sees the service as unreachable (connection
//! reset), not as answering errors.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A switch for the service behind the gate.
#[derive(Clone)]
pub struct Gate {
    open: watch::Sender<bool>,
}

impl Gate {
    /// Listens on a free loopback port and forwards to `backend`. Returns the
    /// gate, open, and its address.
    pub async fn start(backend: SocketAddr) -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, _) = watch::channel(true);
        let gate = Self { open };
        let state = gate.open.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut is_open = state.subscribe();
                if !*is_open.borrow_and_update() {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = is_open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        (gate, addr)
    }

    /// The service becomes unreachable.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// The service is reachable again.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}
