//! The set of peers and the listening sockets that hand accepted connections to them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::codec::{CodecCtx, Message, Notification, cease_sub, encode_message};
use super::config::PeerConfig;
use super::event::{Command, Event, PeerId};
use super::session::{PeerHandle, spawn_session};
use super::socket;

/// How long a removed session gets to send its Cease and end.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

type Inbound = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

struct Listener {
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

/// Owns the sessions. Dropping it stops listening; sessions stop when their command
/// senders are dropped (they send a Cease first).
pub struct Speaker {
    events: mpsc::Sender<Event>,
    peers: HashMap<PeerId, PeerHandle>,
    configs: HashMap<PeerId, PeerConfig>,
    inbound: Inbound,
    listeners: Vec<Listener>,
}

impl Speaker {
    /// `events` receives the events of every peer.
    pub fn new(events: mpsc::Sender<Event>) -> Speaker {
        Speaker {
            events,
            peers: HashMap::new(),
            configs: HashMap::new(),
            inbound: Arc::new(Mutex::new(HashMap::new())),
            listeners: Vec::new(),
        }
    }

    /// Accepts BGP connections on `addr` (e.g. `0.0.0.0:179`, `[::]:179`); returns the
    /// bound address. Connections from unknown addresses get Cease / connection rejected.
    pub fn listen(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = Arc::new(socket::listen(addr)?);
        let local = listener.local_addr()?;
        for cfg in self.configs.values() {
            install_md5(&listener, cfg);
        }
        let inbound = self.inbound.clone();
        let l = listener.clone();
        let task = tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((stream, from)) => dispatch(&inbound, stream, from),
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        info!(%local, "BGP listening");
        self.listeners.push(Listener { listener, task });
        Ok(local)
    }

    /// Starts a session; its commands go through the returned sender (also kept here).
    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<mpsc::UnboundedSender<Command>, String> {
        cfg.validate()?;
        let peer = cfg.remote_addr;
        if self.peers.contains_key(&peer) {
            return Err(format!("peer {peer} already configured"));
        }
        for l in &self.listeners {
            install_md5(&l.listener, &cfg);
        }
        let handle = spawn_session(cfg.clone(), self.events.clone());
        let commands = handle.commands.clone();
        if let Ok(mut map) = self.inbound.lock() {
            map.insert(peer, handle.inbound.clone());
        }
        self.configs.insert(peer, cfg);
        self.peers.insert(peer, handle);
        Ok(commands)
    }

    /// Stops a session (Cease / administrative shutdown) and forgets the peer.
    pub async fn remove_peer(&mut self, peer: PeerId) {
        if let Ok(mut map) = self.inbound.lock() {
            map.remove(&peer);
        }
        if let Some(h) = self.peers.remove(&peer) {
            let _ = h.commands.send(Command::Shutdown);
            // The session says goodbye (Cease) and ends; one stuck handing its owner an
            // event (the owner is here, not reading them) is ended after a while, so
            // a removal never stops the owner for long.
            let mut task = h.task;
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(%peer, "BGP: session did not stop in time, ended");
                task.abort();
            }
        }
        if let Some(cfg) = self.configs.remove(&peer)
            && cfg.md5_password.is_some()
        {
            for l in &self.listeners {
                let v6 = l.listener.local_addr().is_ok_and(|a| a.is_ipv6());
                let _ = socket::set_md5(&*l.listener, v6, peer, &[]);
            }
        }
    }

    pub fn commands(&self, peer: PeerId) -> Option<mpsc::UnboundedSender<Command>> {
        self.peers.get(&peer).map(|h| h.commands.clone())
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// Shuts every session down and waits for them.
    pub async fn shutdown(mut self) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.remove_peer(p).await;
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.task.abort();
        }
    }
}

fn install_md5(listener: &TcpListener, cfg: &PeerConfig) {
    let Some(key) = &cfg.md5_password else { return };
    let v6 = listener.local_addr().is_ok_and(|a| a.is_ipv6());
    if v6 != cfg.remote_addr.is_ipv6() {
        return;
    }
    if let Err(e) = socket::set_md5(listener, v6, cfg.remote_addr, key.as_bytes()) {
        warn!(peer = %cfg.name, error = %e, "cannot install TCP MD5 key on listener");
    }
}

fn dispatch(inbound: &Inbound, stream: TcpStream, from: SocketAddr) {
    let ip = from.ip().to_canonical();
    let sender = inbound.lock().ok().and_then(|m| m.get(&ip).cloned());
    match sender {
        Some(tx) => {
            // A full queue means the session is flooded with connections: drop this one.
            if tx.try_send(stream).is_err() {
                warn!(%from, "session busy, connection dropped");
            }
        }
        None => {
            info!(%from, "connection from an unknown peer rejected");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let n = Notification::cease(cease_sub::CONNECTION_REJECTED);
                if let Ok(bytes) = encode_message(&Message::Notification(n), &CodecCtx::default()) {
                    let _ = stream.write_all(&bytes).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    }
}
