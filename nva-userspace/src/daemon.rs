//! `nva run`: the I/O around the controller. Reads the machine, loads the data plane,
//! starts the tasks that talk to the world (netlink watches, BGP sessions, probes, the
//! kernel mirror's writer, the control socket, metrics), then runs the select loop:
//! every input goes to the [`Controller`], and what it returns is carried out here.
//! Stops on SIGINT/SIGTERM (graceful: withdraw, drain, detach, remove kernel routes) or
//! SIGQUIT (exit for a restart: with a pin directory the XDP program keeps forwarding
//! until the next nva replaces it).
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    bgp::{Command as BgpCommand, Event as SessionEvent, PeerConfig, PeerId, Speaker},
    config::Config,
    control,
    controller::{self, Controller, KernelRouteChange, Machine, Output, Query},
    dataplane::Dataplane,
    fib::KernelOp,
    health::Prober,
    instance_lock, kernel_sync, metrics,
    netlink::{self, Netlink, routes::RouteEvent},
};

/// Graceful-restart timers, one generation per restart of a peer: a timer belongs to
/// the restart that armed it, so an earlier restart's timer never sweeps the paths a
/// later restart keeps.
#[derive(Debug, Default)]
struct RestartTimers(HashMap<PeerId, u64>);

impl RestartTimers {
    /// A restart of `peer` began: returns its generation.
    fn arm(&mut self, peer: PeerId) -> u64 {
        let g = self.0.entry(peer).or_default();
        *g += 1;
        *g
    }

    /// Whether the timer of `generation` is the current restart's.
    fn expired(&self, peer: PeerId, generation: u64) -> bool {
        self.0.get(&peer) == Some(&generation)
    }
}

/// The machine as netlink dumps it (the neighbours only when asked: checking a
/// config does not read them).
async fn read_machine(nl: &Netlink, neighbours: bool) -> Result<Machine> {
    Ok(Machine {
        links: nl.links().await?,
        addrs: nl.addresses().await?,
        neighbours: if neighbours {
            nl.neighbours().await?
        } else {
            Vec::new()
        },
        gateway_routes: nl.gateway_routes().await?,
    })
}

/// `nva config check`: what `nva run` checks against the machine before it touches
/// anything (interfaces exist, next hops are connected or resolve).
pub async fn check_on_host(config: &Config) -> Result<()> {
    let nl = Netlink::connect()?;
    controller::check(config, &read_machine(&nl, false).await?)
}

/// The world the controller's outputs go to.
struct Io {
    nl: Netlink,
    speaker: Speaker,
    kernel: mpsc::UnboundedSender<KernelOp>,
    /// Neighbours to resolve, to their own task (a netlink round trip each: the loop
    /// does not wait for them).
    resolve: mpsc::UnboundedSender<(u32, IpAddr)>,
}

/// Asks the kernel to resolve neighbours, as they come.
fn spawn_resolver(nl: Netlink) -> mpsc::UnboundedSender<(u32, IpAddr)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(u32, IpAddr)>();
    tokio::spawn(async move {
        while let Some((ifindex, ip)) = rx.recv().await {
            if let Err(e) = nl.resolve(ifindex, ip).await {
                warn!(%ip, ifindex, "neighbour resolution request failed: {e:#}");
            }
        }
    });
    tx
}

impl Io {
    /// Carries out what the controller returned. Nothing here waits: the kernel's
    /// share and the resolutions go to their tasks, commands to the sessions' queues.
    fn carry_out(&self, out: Output) {
        for name in &out.attached {
            no_redirects(name);
        }
        for op in out.kernel {
            let _ = self.kernel.send(op);
        }
        self.send(out.bgp);
        for request in out.resolve {
            let _ = self.resolve.send(request);
        }
    }

    /// Sends session commands (never waits: the sessions' command queues are
    /// unbounded).
    fn send(&self, commands: Vec<(PeerId, BgpCommand)>) {
        for (peer, command) in commands {
            if let Some(tx) = self.speaker.commands(peer) {
                let _ = tx.send(command);
            }
        }
    }

    /// Stops a BGP session and starts it afresh (its routes go, then come back with it).
    async fn restart_session(&mut self, c: &mut Controller, config: PeerConfig) {
        let peer = config.remote_addr;
        self.speaker.remove_peer(peer).await;
        if let Err(e) = self.speaker.add_peer(config) {
            warn!(%peer, "BGP: session not restarted: {e}");
            return;
        }
        let out = c.session_restarted(peer);
        self.carry_out(out);
    }

    /// `nva bgp clear PEER [--soft]`: restarts the session (a hard clear, e.g. after a
    /// max-prefix teardown), or asks the peer for its routes again and re-announces ours.
    async fn clear_peer(
        &mut self,
        c: &mut Controller,
        name: &str,
        soft: bool,
    ) -> Result<String, String> {
        let clear = c.clear_peer(name, soft)?;
        if soft {
            self.send(vec![(clear.peer, BgpCommand::RouteRefresh)]);
            self.send(clear.commands);
            return Ok(format!(
                "soft clear of {name}: route refresh sent, announcements sent again"
            ));
        }
        let Some(config) = clear.config else {
            return Err(format!("no session configuration for {name:?}"));
        };
        self.restart_session(c, config).await;
        Ok(format!("session with {name} restarted"))
    }

    /// Reloads the config file (SIGHUP or `nva reload`): checked against the machine and
    /// diffed with the running one before anything is touched, then applied; sessions
    /// start and stop; routes follow the new resolution. Returns a summary of what
    /// changed, or why nothing did.
    async fn reload(&mut self, c: &mut Controller, path: &Path) -> Result<String, String> {
        let planned = match Config::from_file(path) {
            Ok(config) => match read_machine(&self.nl, false).await {
                Ok(machine) => c.plan_reload(config, &machine),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let plan = planned.map_err(|e| format!("{e:#}"))?;
        let outcome = c.reload(plan);
        let mut failures = Vec::new();
        if let Ok(r) = &outcome {
            for peer in &r.remove {
                self.speaker.remove_peer(*peer).await;
            }
            for cfg in &r.add {
                if let Err(e) = self.speaker.add_peer(cfg.clone()) {
                    failures.push(format!("BGP peer {} not added: {e}", cfg.name));
                }
            }
        }
        let settled = c.settle();
        self.carry_out(settled);
        // Every interface, also those a reload that failed later had attached.
        for f in c.ifaces() {
            no_redirects(&f.name);
        }
        let reloaded = outcome.map_err(|e| format!("{e:#}"))?;
        self.carry_out(reloaded.output);
        if failures.is_empty() {
            Ok(reloaded.summary)
        } else {
            Err(format!("{}; but {}", reloaded.summary, failures.join("; ")))
        }
    }

    /// Starts the BGP speaker: listening, the sessions, the first announcements.
    async fn start_bgp(&mut self, c: &mut Controller) -> Result<()> {
        let Some(start) = c.bgp_start() else {
            return Ok(());
        };
        match start.listen {
            Some(listen) => {
                self.speaker
                    .listen(listen)
                    .with_context(|| format!("bgp.listen {listen}"))?;
            }
            None => {
                // Port 179 of each family nva has peers in; only a warning when taken
                // (another BGP daemon on the box).
                for v4 in start.families {
                    let any: IpAddr = if v4 {
                        std::net::Ipv4Addr::UNSPECIFIED.into()
                    } else {
                        std::net::Ipv6Addr::UNSPECIFIED.into()
                    };
                    let addr = std::net::SocketAddr::new(any, 179);
                    if let Err(e) = self.speaker.listen(addr) {
                        warn!(%addr, "BGP: not accepting connections: {e}");
                    }
                }
            }
        }
        for peer in start.peers {
            self.speaker
                .add_peer(peer)
                .map_err(|e| anyhow::anyhow!("bgp.peers: {e}"))?;
        }
        self.send(start.commands);
        Ok(())
    }
}

pub async fn run(config: Config, config_path: PathBuf, socket: PathBuf) -> Result<()> {
    let _locks = instance_lock::lock_instances(&config, &socket)?;
    for w in config.warnings() {
        warn!("config: {w}");
    }
    let nl = Netlink::connect()?;
    // Subscribe before dumping so no change between the dump and the watch is lost.
    let mut events = netlink::watch()?;
    // Routes next hops may resolve through; watched before the dump like the rest.
    let mut route_events = netlink::routes::watch_routes()?;
    let machine = read_machine(&nl, true).await?;
    // Checked before anything is loaded.
    controller::check(&config, &machine)?;

    let dp = Dataplane::load_with(controller::load_options(&config))?;
    let sync = kernel_sync::spawn(nl.clone())?;
    let (prober, mut health_events) = Prober::start()?;
    // This run's nexthop ids start above an earlier run's.
    let id_base = sync.stale.iter().max().map_or(1, |m| m + 1);
    let metrics_listen = config.metrics.listen;
    let group = config.control.group.clone();
    let (mut c, first) = Controller::start(config, machine, dp, prober, id_base)?;
    let kernel_prefixes = first.kernel_prefixes();
    // BGP: sessions run on their own tasks; their events come back here.
    let (session_tx, mut session_rx) = mpsc::channel::<SessionEvent>(1024);
    let mut io = Io {
        nl: nl.clone(),
        speaker: Speaker::new(session_tx),
        kernel: sync.tx.clone(),
        resolve: spawn_resolver(nl.clone()),
    };
    io.carry_out(first);
    // Kernel routes of an earlier run that this configuration no longer has.
    let removed = nl.flush_own_routes_except(&kernel_prefixes).await?;
    if removed > 0 {
        info!(removed, "removed stale kernel routes of an earlier run");
    }
    // Queued after this run's first routes, which replace the kept ones' objects.
    for id in &sync.stale {
        let _ = io.kernel.send(KernelOp::DelNexthop { id: *id, ids: 1 });
    }
    let attached = c.attach_all()?;
    io.carry_out(attached);
    let (v4, v6) = c.fib().route_count();
    info!(routes_v4 = v4, routes_v6 = v6, "FIB programmed");
    let fibs: Vec<String> = c
        .fib()
        .dataplane()
        .fib_memory()
        .iter()
        .map(|m| format!("{}/{}={}", m.table(), m.family(), m.structure))
        .collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path.display(),
        control = %socket.display(),
        metrics = ?metrics_listen,
        bgp = c.bgp().is_some(),
        fib = %fibs.join(","),
        interfaces = c.ifaces().len(),
        "nva started"
    );
    // The control socket and metrics ask the loop; nothing else holds the state.
    let (query_tx, mut queries) = mpsc::channel::<Query>(16);
    let (action_tx, mut actions) = mpsc::channel::<control::ActionRequest>(4);
    let control = control::serve(&socket, group.as_deref(), query_tx.clone(), action_tx)
        .with_context(|| format!("control socket {}", socket.display()))?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            metrics::serve(addr, query_tx)
                .await
                .with_context(|| format!("metrics.listen {addr}"))?,
        ),
        None => None,
    };

    let (sweep_tx, mut sweep_rx) = mpsc::unbounded_channel::<(PeerId, u64)>();
    let mut restarts = RestartTimers::default();
    io.start_bgp(&mut c).await?;
    crate::notify::ready(&format!(
        "forwarding: {v4} IPv4 and {v6} IPv6 routes programmed"
    ));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // SIGQUIT: exit for a restart or upgrade; with a pin directory, forwarding goes on
    // with the current tables until the next nva takes over.
    let mut keep_forwarding = false;
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigquit.recv() => {
                info!("SIGQUIT: exiting for a restart");
                keep_forwarding = true;
                break;
            }
            _ = sighup.recv() => {
                match io.reload(&mut c, &config_path).await {
                    Ok(summary) => info!(%summary, "SIGHUP: configuration reloaded"),
                    Err(e) => warn!("SIGHUP: configuration not reloaded: {e}"),
                }
            }
            Some(query) = queries.recv() => query(&c),
            Some((action, reply)) = actions.recv() => {
                let result = match action {
                    control::Action::Reload => {
                        let result = io.reload(&mut c, &config_path).await;
                        match &result {
                            Ok(summary) => info!(%summary, "reload: configuration reloaded"),
                            Err(e) => warn!("reload: configuration not reloaded: {e}"),
                        }
                        result
                    }
                    control::Action::ClearPeer { peer, soft } => {
                        io.clear_peer(&mut c, &peer, soft).await
                    }
                };
                let _ = reply.send(result);
            }
            Some(event) = health_events.recv() => {
                let out = c.health_event(event);
                io.carry_out(out);
            }
            Some(event) = route_events.recv() => {
                let change = match event {
                    RouteEvent::Added(g) => KernelRouteChange::Added(g),
                    RouteEvent::Removed { prefix, metric } => {
                        KernelRouteChange::Removed { prefix, metric }
                    }
                    RouteEvent::Overrun => {
                        warn!("netlink: route notifications lost, dumping the kernel's routes again");
                        KernelRouteChange::All(nl.gateway_routes().await.unwrap_or_else(|e| {
                            warn!("dumping kernel routes: {e:#}");
                            Vec::new()
                        }))
                    }
                };
                let out = c.kernel_route(change);
                io.carry_out(out);
            }
            Some(event) = session_rx.recv() => {
                let stale = match &event {
                    SessionEvent::Down { peer, stale_for: Some(t), .. } => Some((*peer, *t)),
                    _ => None,
                };
                let out = c.session_event(event);
                io.carry_out(out);
                if let Some((peer, after)) = stale {
                    let tx = sweep_tx.clone();
                    let generation = restarts.arm(peer);
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send((peer, generation));
                    });
                }
            }
            Some((peer, generation)) = sweep_rx.recv() => {
                if !restarts.expired(peer, generation) {
                    // The timer of an earlier restart: a later one has its own.
                    continue;
                }
                let out = c.sweep_stale(peer);
                io.carry_out(out);
            }
            event = events.recv() => match event {
                Some(event) => {
                    let out = c.netlink_event(event);
                    io.carry_out(out);
                }
                None => bail!("netlink event stream ended"),
            },
            _ = tick.tick() => {
                crate::notify::watchdog();
                let (out, due) = c.tick();
                io.carry_out(out);
                for config in due {
                    info!(peer = %config.name, "BGP: max-prefix restart timer: starting the session again");
                    io.restart_session(&mut c, config).await;
                }
            }
        }
    }
    crate::notify::stopping();
    control.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    // Sessions' events are moot now, but a session must never wait to hand one over
    // (it would not take its withdrawals and shutdown meanwhile).
    tokio::spawn(async move { while session_rx.recv().await.is_some() {} });
    if !keep_forwarding {
        // Withdraw what we announce and give the peers time to move traffic away
        // before the data plane goes.
        let (withdrawals, drain) = c.withdraw_all();
        if !withdrawals.is_empty() {
            io.send(withdrawals);
            info!(
                drain_ms = drain.as_millis() as u64,
                "announcements withdrawn, draining"
            );
            tokio::time::sleep(drain).await;
        }
    }
    let Io {
        speaker, kernel, ..
    } = io;
    speaker.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    if keep_forwarding && c.pinned() {
        // Pinned links keep the XDP program attached; kernel routes stay for what it
        // passes up. The next nva replaces both.
        info!("XDP left attached for the next nva");
        return Ok(());
    }
    c.detach();
    info!("XDP detached");
    // Pending mirror updates are moot: everything of nva's goes. (Requests already
    // queued on the netlink socket reach the kernel before the flush's dump does.)
    drop((kernel, sync.tx));
    sync.task.abort();
    let _ = sync.task.await;
    // The flush's own deletions would come back as a million notifications to parse.
    drop(route_events);
    remove_kernel_routes(&nl, c.kernel_plain_prefixes()).await;
    Ok(())
}

/// A stop's end: the plain routes nva mirrored, by prefix; then every nexthop object
/// of nva's, which takes the routes naming it (nearly all) with it in one go; then a
/// flush of anything of nva's still there (little or nothing).
async fn remove_kernel_routes(nl: &Netlink, prefixes: Vec<ipnet::IpNet>) {
    match tokio::task::spawn_blocking(move || netlink::routes::delete_routes_batched(&prefixes))
        .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => warn!(failed = n, "removing kernel routes: some deletions failed"),
        Ok(Err(e)) => warn!("removing kernel routes: {e:#}"),
        Err(e) => warn!("removing kernel routes: {e}"),
    }
    let objects = tokio::task::spawn_blocking(|| -> Result<usize> {
        let mut nexthops = netlink::nexthops::Nexthops::open()?;
        let ids = nexthops.own()?;
        for id in &ids {
            nexthops.delete(*id, 1)?;
        }
        Ok(ids.len())
    })
    .await;
    match objects {
        Ok(Ok(n)) => info!(objects = n, "kernel nexthop objects removed"),
        Ok(Err(e)) => warn!("removing kernel nexthop objects: {e:#}"),
        Err(e) => warn!("removing kernel nexthop objects: {e}"),
    }
    match nl.flush_own_routes().await {
        Ok(n) => info!(left_over = n, "kernel routes removed"),
        Err(e) => warn!("removing kernel routes: {e:#}"),
    }
}

/// A router that sends traffic back out of the interface it came in on (a single-NIC
/// NVA, as Azure recommends) must not send ICMP redirects for what the kernel forwards
/// (packets XDP passes up): the kernel ORs `all` with the interface's setting, so both
/// go off.
fn no_redirects(ifname: &str) {
    for scope in ["all", ifname] {
        let path = format!("/proc/sys/net/ipv4/conf/{scope}/send_redirects");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "0" => {}
            Ok(_) => match std::fs::write(&path, "0") {
                Ok(()) => info!(%path, "ICMP redirects turned off"),
                Err(e) => warn!(%path, "cannot turn ICMP redirects off: {e}"),
            },
            Err(e) => warn!(%path, "cannot read: {e}"),
        }
    }
}

#[cfg(test)]
mod restart_timer_tests {
    use super::RestartTimers;

    #[test]
    fn a_timer_of_an_earlier_restart_does_not_sweep() {
        let peer = "10.0.255.4".parse().unwrap();
        let other = "10.0.255.5".parse().unwrap();
        let mut t = RestartTimers::default();
        let first = t.arm(peer);
        let o = t.arm(other);
        assert!(t.expired(peer, first));
        let second = t.arm(peer);
        assert!(
            !t.expired(peer, first),
            "the first restart's timer is stale"
        );
        assert!(t.expired(peer, second));
        assert!(t.expired(other, o));
    }
}
