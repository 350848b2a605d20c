//! One tokio task per peer: connects and/or accepts, runs the [`Fsm`], negotiates,
//! keeps the timers, decodes UPDATEs into [`Event`]s and sends what [`Command`]s ask.
//!
//! Failure containment: everything a peer owns lives in its task; errors end in a
//! NOTIFICATION, a `Down` event and a reconnect after an exponential back-off, never
//! in a panic or in anything shared with other peers.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::adj_rib_out::{self, AdjRibOut};
use super::codec::{
    self, CodecCtx, DecodeError, Family, Message, Notification, Open, PathAttrs, RouteRefresh,
    cease_sub,
};
use super::collision::{self, encode_plain, reject};
use super::config::{ConnectMode, MessageCounters, PeerConfig};
use super::event::{Command, DownReason, Event, PeerId, SessionInfo};
use super::export::ExportCtx;
use super::fsm::{Action, Fsm, FsmEvent, State};
use super::import::{ImportCtx, import_update};
use super::negotiate::{local_open, negotiate};
use super::socket;
use super::transport::{Connection, ReadError};

/// A session up for longer than this resets the back-off to its minimum.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The owner's side of a session task.
pub struct PeerHandle {
    pub peer: PeerId,
    /// Unbounded: the owner never waits to hand a session its commands (it would wait
    /// on a session that itself waits for the owner to take its events).
    pub commands: mpsc::UnboundedSender<Command>,
    /// Connections accepted by the listener for this peer.
    pub(super) inbound: mpsc::Sender<TcpStream>,
    pub task: JoinHandle<()>,
}

/// Starts the session task of one peer. Events go to `events` (shared by all peers).
pub fn spawn_session(cfg: PeerConfig, events: mpsc::Sender<Event>) -> PeerHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(4);
    let peer = cfg.remote_addr;
    let session = Session::new(cfg, events, cmd_rx, in_rx);
    let task = tokio::spawn(session.run());
    PeerHandle {
        peer,
        commands: cmd_tx,
        inbound: in_tx,
        task,
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
type Candidate = JoinHandle<Option<(Connection, Open)>>;

struct Session {
    cfg: PeerConfig,
    peer: PeerId,
    fsm: Fsm,
    events: mpsc::Sender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    inbound: mpsc::Receiver<TcpStream>,
    conn: Option<Connection>,
    connecting: Option<Connecting>,
    /// A second connection from the peer while we are in OpenSent/OpenConfirm, waiting
    /// for its OPEN so the collision can be resolved (RFC 4271 §6.8).
    candidate: Option<Candidate>,
    /// The connection taking over after a collision was sent our OPEN already.
    open_already_sent: bool,
    local_open: Open,
    info: Option<SessionInfo>,
    ctx: CodecCtx,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    retry_at: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    established_at: Option<Instant>,
    /// What the owner wants advertised; re-sent after every (re)connect and refresh.
    adj_rib_out: AdjRibOut,
    stopped: bool,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Up to ±25% of `d`, so that peers restarting together do not stay in lock-step.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = (nanos % 500) as f64 / 1000.0 + 0.75; // 0.75 ..= 1.249
    d.mul_f64(frac)
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Session {
    fn new(
        cfg: PeerConfig,
        events: mpsc::Sender<Event>,
        commands: mpsc::UnboundedReceiver<Command>,
        inbound: mpsc::Receiver<TcpStream>,
    ) -> Session {
        let fsm = Fsm::new(cfg.mode == ConnectMode::Active, cfg.keepalive);
        let local_open = local_open(&cfg);
        Session {
            peer: cfg.remote_addr,
            backoff: Duration::from_secs(cfg.backoff_min as u64),
            cfg,
            fsm,
            events,
            commands,
            inbound,
            conn: None,
            connecting: None,
            candidate: None,
            open_already_sent: false,
            local_open,
            info: None,
            ctx: CodecCtx::default(),
            hold_at: None,
            keepalive_at: None,
            retry_at: None,
            restart_at: None,
            established_at: None,
            adj_rib_out: AdjRibOut::default(),
            stopped: false,
        }
    }

    async fn run(mut self) {
        info!(peer = %self.cfg.name, "BGP session starting");
        self.dispatch(FsmEvent::Start).await;
        while !self.stopped {
            // Biased: messages already read come before timers, so a peer's KEEPALIVE
            // queued while we were busy (e.g. waiting for a slow owner) still counts
            // before our hold timer is looked at.
            tokio::select! {
                biased;
                Some(stream) = self.inbound.recv() => self.incoming(stream).await,
                msg = async {
                    match self.conn.as_mut() {
                        Some(c) => c.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.received(msg).await,
                res = async {
                    match self.connecting.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.connecting = None;
                    self.connected(res).await;
                }
                res = async {
                    match self.candidate.as_mut() {
                        Some(h) => h.await.ok().flatten(),
                        None => std::future::pending().await,
                    }
                } => {
                    self.candidate = None;
                    self.resolve_collision(res).await;
                }
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.command(c).await,
                    // The owner is gone: leave politely.
                    None => self.command(Command::Shutdown).await,
                },
                _ = sleep_until(self.hold_at) => {
                    self.hold_at = None;
                    warn!(peer = %self.cfg.name, "hold timer expired");
                    self.dispatch(FsmEvent::HoldTimerExpires).await;
                }
                _ = sleep_until(self.keepalive_at) => {
                    self.keepalive_at = None;
                    self.dispatch(FsmEvent::KeepaliveTimerExpires).await;
                }
                _ = sleep_until(self.retry_at) => {
                    self.retry_at = None;
                    self.dispatch(FsmEvent::ConnectRetryTimerExpires).await;
                }
                _ = sleep_until(self.restart_at) => {
                    self.restart_at = None;
                    self.dispatch(FsmEvent::Start).await;
                }
            }
        }
        info!(peer = %self.cfg.name, "BGP session stopped");
    }

    /// Feeds an event to the FSM and carries out its actions, and those of any events
    /// the actions cause (a failed send becomes `TcpFails`).
    async fn dispatch(&mut self, event: FsmEvent) {
        let mut queue = VecDeque::from([event]);
        while let Some(ev) = queue.pop_front() {
            let before = self.fsm.state();
            let actions = self.fsm.handle(ev);
            if before != self.fsm.state() {
                debug!(peer = %self.cfg.name, from = ?before, to = ?self.fsm.state(), "FSM");
            }
            for action in actions {
                if let Some(follow) = self.apply(action).await {
                    queue.push_back(follow);
                }
            }
        }
    }

    async fn send(&mut self, msg: &Message) -> Option<FsmEvent> {
        let bytes = match codec::encode_message(msg, &self.ctx) {
            Ok(b) => b,
            Err(e) => {
                warn!(peer = %self.cfg.name, error = %e, "cannot encode message");
                return None;
            }
        };
        self.send_raw(bytes).await
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) -> Option<FsmEvent> {
        let conn = self.conn.as_ref()?;
        // Type octet 2: UPDATE.
        let update = bytes.get(18) == Some(&2);
        match conn.send(bytes).await {
            Ok(()) => {
                let c = &self.cfg.counters.0;
                MessageCounters::add(&c.sent, 1);
                if update {
                    MessageCounters::add(&c.updates_sent, 1);
                }
                None
            }
            Err(()) => Some(FsmEvent::TcpFails("connection closed while sending".into())),
        }
    }

    fn timer(secs: u16) -> Option<Instant> {
        (secs > 0).then(|| Instant::now() + Duration::from_secs(secs as u64))
    }

    async fn apply(&mut self, action: Action) -> Option<FsmEvent> {
        match action {
            Action::Connect => {
                let cfg = self.cfg.clone();
                // Lazy: nothing is sent until the run loop polls it.
                self.connecting = Some(Box::pin(async move { socket::connect(&cfg).await }));
                None
            }
            Action::StartConnectRetryTimer => {
                self.retry_at = Some(Instant::now() + jitter(self.cfg.connect_retry()));
                None
            }
            Action::StopConnectRetryTimer => {
                self.retry_at = None;
                None
            }
            Action::SendOpen if self.open_already_sent => {
                // A collision's connection that took over: it has had our OPEN.
                self.open_already_sent = false;
                None
            }
            Action::SendOpen => self.send(&Message::Open(self.local_open.clone())).await,
            Action::SendKeepalive => self.send(&Message::Keepalive).await,
            Action::SendNotification(n) => {
                warn!(peer = %self.cfg.name, notification = %n, "sending NOTIFICATION");
                // A NOTIFICATION must go out whatever was negotiated: encode it plainly.
                let bytes = codec::encode_message(&Message::Notification(n), &CodecCtx::default());
                self.send_raw(bytes.unwrap_or_default()).await;
                None
            }
            Action::SetHoldTimer(s) => {
                self.hold_at = Self::timer(s);
                None
            }
            Action::SetKeepaliveTimer(s) => {
                self.keepalive_at = Self::timer(s);
                None
            }
            Action::CloseConnection => {
                self.connecting = None;
                if let Some(c) = self.conn.take() {
                    c.close().await;
                }
                None
            }
            Action::Established => self.established().await,
            Action::Down {
                reason,
                was_established,
                restart,
            } => {
                self.down(reason, was_established, restart).await;
                None
            }
        }
    }

    /// Hands an event to the owner. The channel is bounded, so a slow owner slows the
    /// peer down (TCP back-pressure) instead of growing memory; meanwhile our KEEPALIVEs
    /// keep going so the peer does not drop the session. The owner going away is
    /// handled by the command channel closing.
    async fn emit(&mut self, event: Event) {
        let tx = self.events.clone();
        let send = tx.send(event);
        tokio::pin!(send);
        loop {
            tokio::select! {
                _ = &mut send => return,
                _ = sleep_until(self.keepalive_at) => {
                    let ka = self.fsm.keepalive_for(self.fsm.hold_time());
                    self.keepalive_at = Self::timer(ka);
                    let bytes = codec::encode_message(&Message::Keepalive, &self.ctx);
                    let _ = self.send_raw(bytes.unwrap_or_default()).await;
                }
            }
        }
    }

    async fn established(&mut self) -> Option<FsmEvent> {
        let info = self.info.clone()?;
        info!(
            peer = %self.cfg.name, peer_as = info.peer_as, id = %info.peer_router_id,
            hold = info.hold_time, families = ?info.families, "session established"
        );
        self.established_at = Some(Instant::now());
        self.emit(Event::Established {
            peer: self.peer,
            caps: info.clone(),
        })
        .await;
        let routes = self.adj_rib_out.routes(None);
        if let Some(ev) = self.send_announcements(&routes).await {
            return Some(ev);
        }
        // End-of-RIB after the initial table (RFC 4724 §2; harmless to anyone).
        for f in info.families {
            if let Some(ev) = self.send_raw(codec::end_of_rib_message(f, &self.ctx)).await {
                return Some(ev);
            }
        }
        None
    }

    async fn down(&mut self, reason: DownReason, was_established: bool, restart: bool) {
        let info = self.info.take();
        self.ctx = CodecCtx::default();
        if let Some(h) = self.candidate.take() {
            h.abort();
        }
        if was_established {
            // RFC 4724: only a connection lost without NOTIFICATION keeps routes as stale.
            let stale_for = match (
                &reason,
                info.as_ref().and_then(|i| i.peer_graceful_restart.as_ref()),
            ) {
                (DownReason::ConnectionLost(_) | DownReason::Replaced, Some(gr)) => {
                    Some(Duration::from_secs(gr.restart_time as u64))
                }
                _ => None,
            };
            warn!(peer = %self.cfg.name, %reason, ?stale_for, "session down");
            self.emit(Event::Down {
                peer: self.peer,
                reason,
                stale_for,
            })
            .await;
        } else {
            info!(peer = %self.cfg.name, %reason, "session attempt failed");
        }
        if !restart {
            self.stopped = true;
            return;
        }
        let stable = self
            .established_at
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER);
        if stable {
            self.backoff = Duration::from_secs(self.cfg.backoff_min as u64);
        }
        self.restart_at = Some(Instant::now() + jitter(self.backoff));
        let max = Duration::from_secs(self.cfg.backoff_max as u64);
        self.backoff = (self.backoff * 2).min(max);
    }

    async fn connected(&mut self, res: io::Result<TcpStream>) {
        let conn = res.and_then(|s| Connection::new(s, true));
        match conn {
            Ok(c) if self.conn.is_none() => {
                debug!(peer = %self.cfg.name, local = %c.local, "connected");
                self.conn = Some(c);
                self.dispatch(FsmEvent::TcpConnected).await;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(peer = %self.cfg.name, error = %e, "connect failed");
                self.dispatch(FsmEvent::TcpFails(e.to_string())).await;
            }
        }
    }

    /// A connection the listener accepted from this peer's address.
    async fn incoming(&mut self, stream: TcpStream) {
        if let Err(e) = socket::prepare_accepted(&stream, &self.cfg) {
            warn!(peer = %self.cfg.name, error = %e, "cannot set socket options");
            return;
        }
        let conn = match Connection::new(stream, false) {
            Ok(c) => c,
            Err(_) => return,
        };
        match self.fsm.state() {
            _ if self.stopped => reject(conn, cease_sub::CONNECTION_REJECTED),
            State::Idle | State::Connect | State::Active => {
                if self.fsm.state() == State::Idle {
                    // Peer is ready before our back-off ended: take its connection.
                    self.restart_at = None;
                    self.dispatch(FsmEvent::Start).await;
                }
                self.connecting = None;
                self.conn = Some(conn);
                self.dispatch(FsmEvent::TcpConnected).await;
            }
            State::OpenSent | State::OpenConfirm => {
                if self.candidate.is_some() {
                    reject(conn, cease_sub::CONNECTION_COLLISION);
                    return;
                }
                // Our OPEN goes out on it at once: a peer may wait for it before it sends
                // its own (which would leave both sides waiting OPEN_WAIT).
                let open = codec::encode_message(
                    &Message::Open(self.local_open.clone()),
                    &CodecCtx::default(),
                )
                .unwrap_or_default();
                self.candidate = Some(tokio::spawn(collision::wait_for_open(conn, open)));
            }
            State::Established => {
                let restarting = self
                    .info
                    .as_ref()
                    .is_some_and(|i| i.peer_graceful_restart.is_some());
                if restarting {
                    // RFC 4724 §4.2: a new connection from a graceful-restart peer means it
                    // restarted; the old session is gone.
                    self.replace_with(conn, None).await;
                } else {
                    reject(conn, cease_sub::CONNECTION_COLLISION);
                }
            }
        }
    }

    /// Switches to `conn`: the current connection is closed (Cease / collision), then
    /// the FSM starts over on the new one; `open` is its already received OPEN.
    async fn replace_with(&mut self, conn: Connection, open: Option<Open>) {
        let collision = Notification::cease(cease_sub::CONNECTION_COLLISION);
        if let Some(old) = self.conn.take() {
            let _ = old.send(encode_plain(&collision)).await;
            old.close().await;
        }
        if self.fsm.state() == State::Established {
            self.down(DownReason::Replaced, true, true).await;
        }
        // Start over on the new connection, with nothing left of the old one.
        self.fsm = Fsm::new(self.cfg.mode == ConnectMode::Active, self.cfg.keepalive);
        self.info = None;
        self.ctx = CodecCtx::default();
        self.hold_at = None;
        self.keepalive_at = None;
        self.retry_at = None;
        self.restart_at = None;
        self.dispatch(FsmEvent::Start).await;
        self.connecting = None;
        self.conn = Some(conn);
        // A collision's connection (it comes with the peer's OPEN) had ours already.
        self.open_already_sent = open.is_some();
        self.dispatch(FsmEvent::TcpConnected).await;
        self.open_already_sent = false;
        if let Some(open) = open {
            self.on_open(open).await;
        }
    }

    /// RFC 4271 §6.8: of two connections, keep the one opened by the speaker with the
    /// higher BGP identifier.
    async fn resolve_collision(&mut self, candidate: Option<(Connection, Open)>) {
        let Some((conn, open)) = candidate else {
            return;
        };
        let state = self.fsm.state();
        if !matches!(state, State::OpenSent | State::OpenConfirm) || self.conn.is_none() {
            // The first connection is gone meanwhile: the candidate is simply the session.
            if matches!(state, State::Idle | State::Connect | State::Active) && !self.stopped {
                self.replace_with(conn, Some(open)).await;
            } else {
                reject(conn, cease_sub::CONNECTION_COLLISION);
            }
            return;
        }
        let current_outbound = self.conn.as_ref().is_some_and(|c| c.outbound);
        let keep_candidate =
            collision::keep_new_inbound(self.cfg.router_id, open.router_id, current_outbound);
        info!(peer = %self.cfg.name, keep_new = keep_candidate, "connection collision");
        if keep_candidate {
            self.replace_with(conn, Some(open)).await;
        } else {
            reject(conn, cease_sub::CONNECTION_COLLISION);
        }
    }

    async fn received(&mut self, msg: Result<Vec<u8>, ReadError>) {
        let bytes = match msg {
            Ok(b) => b,
            Err(ReadError::Header(n)) => return self.dispatch(FsmEvent::ProtocolError(n)).await,
            Err(ReadError::Closed) => {
                return self
                    .dispatch(FsmEvent::TcpFails("closed by peer".into()))
                    .await;
            }
            Err(ReadError::Io(e)) => return self.dispatch(FsmEvent::TcpFails(e.to_string())).await,
        };
        let c = &self.cfg.counters.0;
        MessageCounters::add(&c.received, 1);
        if bytes.get(18) == Some(&2) {
            MessageCounters::add(&c.updates_received, 1);
        }
        let msg = match codec::decode_message(&bytes, &self.ctx) {
            Ok(m) => m,
            Err(DecodeError::SessionReset(n)) => {
                return self.dispatch(FsmEvent::ProtocolError(n)).await;
            }
            Err(DecodeError::TreatAsWithdraw { withdrawn, error }) => {
                warn!(peer = %self.cfg.name, %error, prefixes = withdrawn.len(), "treat-as-withdraw");
                if self.fsm.state() == State::Established {
                    let families = self
                        .info
                        .as_ref()
                        .map(|i| i.families.clone())
                        .unwrap_or_default();
                    let withdrawn: Vec<IpNet> = withdrawn
                        .into_iter()
                        .filter(|p| families.contains(&Family::of(p)))
                        .collect();
                    if !withdrawn.is_empty() {
                        self.emit(Event::Update {
                            peer: self.peer,
                            announced: Vec::new(),
                            withdrawn,
                            martian: 0,
                        })
                        .await;
                    }
                }
                return self.dispatch(FsmEvent::UpdateReceived).await;
            }
            Err(DecodeError::AttributeDiscard { update, discarded }) => {
                for d in &discarded {
                    warn!(peer = %self.cfg.name, error = %d, "attribute discarded");
                }
                Message::Update(*update)
            }
        };
        match msg {
            Message::Open(open) => self.on_open(open).await,
            Message::Keepalive => self.dispatch(FsmEvent::KeepaliveReceived).await,
            Message::Notification(n) => {
                warn!(peer = %self.cfg.name, notification = %n, "received NOTIFICATION");
                let no_params = n.code == codec::code::OPEN
                    && n.subcode == codec::open_sub::UNSUPPORTED_OPTIONAL_PARAMETER;
                if no_params && self.fsm.state() == State::OpenSent {
                    // RFC 5492 §5: a speaker without capabilities support; try again
                    // with a plain RFC 4271 OPEN (IPv4 unicast, 2-octet AS).
                    warn!(peer = %self.cfg.name, "peer rejects capabilities: retrying without");
                    self.local_open.capabilities.clear();
                }
                self.dispatch(FsmEvent::NotificationReceived(n)).await
            }
            Message::Update(u) => {
                if self.fsm.state() == State::Established {
                    self.on_update(u).await;
                }
                self.dispatch(FsmEvent::UpdateReceived).await
            }
            Message::RouteRefresh(rr) => {
                if self.fsm.state() == State::Established {
                    self.on_route_refresh(rr).await;
                }
                self.dispatch(FsmEvent::RouteRefreshReceived).await
            }
        }
    }

    async fn on_open(&mut self, open: Open) {
        if self.fsm.state() != State::OpenSent {
            // Out of order: the FSM answers with an FSM error.
            return self.dispatch(FsmEvent::OpenReceived { hold_time: 0 }).await;
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let (local, remote) = (conn.local, conn.remote);
        match negotiate(&self.cfg, &self.local_open, &open, local, remote) {
            Ok(info) => {
                self.ctx = CodecCtx {
                    four_octet_as: info.four_octet_as,
                    extended_message: info.extended_message,
                    ibgp: info.ibgp,
                };
                let hold_time = info.hold_time;
                self.info = Some(info);
                self.dispatch(FsmEvent::OpenReceived { hold_time }).await;
            }
            Err(n) => self.dispatch(FsmEvent::ProtocolError(n)).await,
        }
    }

    async fn on_update(&mut self, update: codec::Update) {
        let Some(info) = &self.info else { return };
        let ctx = ImportCtx {
            local_as: self.cfg.local_as,
            peer_as: info.peer_as,
            ibgp: info.ibgp,
            enforce_first_as: self.cfg.enforce_first_as,
            families: info.families.clone(),
        };
        let imported = import_update(update, &ctx);
        if imported.rejected > 0 {
            debug!(peer = %self.cfg.name, prefixes = imported.rejected, "AS-path loop: routes ignored");
        }
        if let Some(family) = imported.end_of_rib {
            self.emit(Event::EndOfRib {
                peer: self.peer,
                family,
            })
            .await;
        }
        if !imported.announced.is_empty() || !imported.withdrawn.is_empty() {
            self.emit(Event::Update {
                peer: self.peer,
                announced: imported.announced,
                withdrawn: imported.withdrawn,
                martian: imported.martian,
            })
            .await;
        }
    }

    async fn on_route_refresh(&mut self, rr: RouteRefresh) {
        let Some(family) = Family::from_afi_safi(rr.afi, rr.safi) else {
            return;
        };
        debug!(peer = %self.cfg.name, ?family, "route refresh requested");
        let routes = self.adj_rib_out.routes(Some(family));
        if let Some(ev) = self.send_announcements(&routes).await {
            self.dispatch(ev).await;
        }
    }

    fn export_ctx(&self) -> Option<ExportCtx> {
        let info = self.info.as_ref()?;
        Some(ExportCtx {
            local_as: self.cfg.local_as,
            ibgp: info.ibgp,
            local_addr: canonical(info.local_addr.ip()),
            next_hop_v4: self.cfg.next_hop_v4,
            next_hop_v6: self.cfg.next_hop_v6,
        })
    }

    /// Sends `routes` (see [`adj_rib_out::announcements`]).
    async fn send_announcements(&mut self, routes: &[(IpNet, Arc<PathAttrs>)]) -> Option<FsmEvent> {
        let (Some(export), Some(info)) = (self.export_ctx(), self.info.as_ref()) else {
            return None;
        };
        let msgs = adj_rib_out::announcements(routes, &info.families, &export, &self.ctx);
        self.send_all(msgs).await
    }

    async fn send_withdrawals(&mut self, prefixes: &[IpNet]) -> Option<FsmEvent> {
        let families = self
            .info
            .as_ref()
            .map(|i| i.families.clone())
            .unwrap_or_default();
        let msgs = adj_rib_out::withdrawals(prefixes, &families, &self.ctx);
        self.send_all(msgs).await
    }

    async fn send_all(&mut self, msgs: Vec<Vec<u8>>) -> Option<FsmEvent> {
        for m in msgs {
            if let Some(ev) = self.send_raw(m).await {
                return Some(ev);
            }
        }
        None
    }

    async fn command(&mut self, cmd: Command) {
        let up = self.fsm.state() == State::Established;
        let follow = match cmd {
            Command::Announce(routes) => {
                self.adj_rib_out.announce(&routes);
                if up {
                    self.send_announcements(&routes).await
                } else {
                    None
                }
            }
            Command::Withdraw(prefixes) => {
                let removed = self.adj_rib_out.withdraw(&prefixes);
                if up {
                    self.send_withdrawals(&removed).await
                } else {
                    None
                }
            }
            Command::RouteRefresh => {
                let Some(info) = self.info.clone().filter(|i| up && i.route_refresh) else {
                    return;
                };
                let mut follow = None;
                for f in info.families {
                    let rr = RouteRefresh {
                        afi: f.afi(),
                        subtype: 0,
                        safi: f.safi(),
                    };
                    follow = follow.or(self.send(&Message::RouteRefresh(rr)).await);
                }
                follow
            }
            Command::Shutdown => {
                if self.fsm.state() == State::Idle {
                    self.stopped = true;
                    None
                } else {
                    Some(FsmEvent::Stop(Notification::admin_shutdown(
                        "session shut down",
                    )))
                }
            }
            Command::Stop(notification) => {
                if self.fsm.state() == State::Idle {
                    self.stopped = true;
                    None
                } else {
                    Some(FsmEvent::Stop(notification))
                }
            }
        };
        if let Some(ev) = follow {
            self.dispatch(ev).await;
        }
    }
}
