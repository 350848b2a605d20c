//! Next-hop health prober: ICMP / ICMPv6 echo, TCP connect and UDP echo (BFD-echo-like)
//! probes with RFC 5880-like failure detection.
//!
//! # Semantics
//!
//! Every [`ProbeSpec`] is probed once per `interval`. A probe succeeds when its reply comes
//! back within one interval (ICMP / UDP echo: the echo of exactly what was sent, from the
//! target; TCP: the connection is established, then closed at once with a RST).
//!
//! - A new target starts **UP** (no event is sent for that), so traffic flows at start-up.
//! - It is declared **DOWN** when no probe succeeded for `interval × multiplier` (a timer
//!   re-armed by every success, so the detection is as precise as the tokio timer, not
//!   rounded to the interval). A target that never answers goes down that long after its
//!   probe started.
//! - Once down, it is declared **UP** again only after probes succeeded continuously for
//!   `hold_down`: the first successful probe starts a streak (from the moment it was
//!   sent), every lost or failed probe (no reply within its interval, a send error, a
//!   refused connection / port unreachable) ends it, and the target goes up on the first
//!   reply that comes `hold_down` or more after the streak started: with 100 ms probes
//!   and a 500 ms hold-down, on the reply to the 5th probe after the first successful
//!   one. `hold_down = 0` means up on the first success.
//!
//! Every change is sent once on the event channel returned by [`Prober::start`].
//! [`Prober::set`] identifies probes by their whole spec: a spec that is in both the old
//! and the new set keeps running with its state and counters; a spec whose interval,
//! multiplier or hold-down changed is a new probe (it starts UP, counters at zero). An
//! event of a probe that was just removed may still be in the channel: ignore events for
//! specs you no longer probe.
//!
//! # Sockets and network namespaces
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life (what it does later does not depend on which thread uses it). The probe tasks run on
//! the runtime that called [`Prober::start`], whose worker threads may be in another
//! namespace than the thread that called `start()` (a runtime built before a `setns`).
//! So `start()` spawns one small OS thread, which inherits the caller's namespace, and
//! **every** socket of the prober (the raw ICMP sockets, each TCP probe's socket, each UDP
//! echo socket) is created on that thread, as are interface name -> index look-ups; the
//! tasks only ask it for sockets (a channel round trip, microseconds) and then use them
//! asynchronously. Raw ICMP sockets are created lazily, one per (address family,
//! interface), so `start()` does not need CAP_NET_RAW unless ICMP probes are used; a probe
//! whose socket cannot be created counts as failed (and is retried every interval).
//!
//! # Probe details
//!
//! - ICMP: raw `IPPROTO_ICMP` / `IPPROTO_ICMPV6` sockets, filtered in the kernel to echo
//!   replies only (`ICMP_FILTER` / `ICMP6_FILTER`), shared by all targets of a family and
//!   interface. Each probe has its own identifier; replies are matched by source address
//!   and identifier, then by a random per-prober token and a 64-bit sequence number in the
//!   payload.
//! - TCP: a fresh non-blocking socket per probe, `SO_LINGER` 0 (closed with a RST, so no
//!   TIME_WAIT pile-up on either side), abandoned when the next probe starts.
//! - UDP echo: one connected UDP socket per probe; the 20-byte payload (magic, token,
//!   sequence number) must come back unchanged. [`udp_echo_responder`] is the other side.
//! - `interface`: the sockets are bound to it (`SO_BINDTODEVICE`); an IPv6 link-local target
//!   needs it (it gives the scope). `SO_BINDTODEVICE` binds to the interface's index, so
//!   while such a probe gets no answers it checks every 3 probes whether the name still
//!   has that index, and re-opens its socket when the interface was deleted / re-created.

mod icmp;
mod probe;
mod sockets;
mod state;
mod tcp;
#[cfg(test)]
mod tests;
mod udp_echo;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::AtomicU16;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

pub use self::udp_echo::udp_echo_responder;

/// Shortest probe interval accepted; shorter ones are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What a probe sends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ProbeKind {
    /// ICMP echo (IPv4) or ICMPv6 echo (IPv6), depending on the target.
    Icmp,
    /// TCP connect to this port.
    Tcp { port: u16 },
    /// UDP datagram to this port, which must echo it back ([`udp_echo_responder`]).
    UdpEcho { port: u16 },
}

/// One probed next hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ProbeSpec {
    pub target: IpAddr,
    /// Interface to probe through (`SO_BINDTODEVICE`); required for IPv6 link-local targets.
    pub interface: Option<String>,
    pub kind: ProbeKind,
    /// Time between probes, also each probe's timeout.
    pub interval: Duration,
    /// Down after `interval × multiplier` without a successful probe (0 counts as 1).
    pub multiplier: u32,
    /// Once down, up again only after probes succeeded continuously for this long.
    pub hold_down: Duration,
}

/// A target changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub spec: ProbeSpec,
    pub healthy: bool,
}

/// A probe's state and counters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeStatus {
    pub spec: ProbeSpec,
    pub healthy: bool,
    /// Probes attempted.
    pub sent: u64,
    /// Probes that succeeded (in time).
    pub received: u64,
    /// Round-trip time of the last successful probe (TCP: connect time).
    pub last_rtt_us: Option<u64>,
    /// Time in the current state.
    pub since_ms: u64,
}

/// What the probe tasks share.
struct Shared {
    /// Creates sockets in the namespace of the thread that called [`Prober::start`].
    factory: sockets::Factory,
    events: UnboundedSender<HealthEvent>,
    icmp: icmp::Registry,
    /// Random, per prober: marks our ICMP and UDP echo payloads.
    token: u64,
    next_ident: AtomicU16,
}

struct Target {
    counters: Arc<Mutex<probe::Counters>>,
    task: JoinHandle<()>,
}

/// The prober: one task per probe on the runtime that started it. Dropping it stops
/// every probe.
pub struct Prober {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    targets: HashMap<ProbeSpec, Target>,
}

impl Prober {
    /// Starts the prober on the current tokio runtime (in the calling thread's network
    /// namespace); state changes arrive on the channel.
    pub fn start() -> anyhow::Result<(Prober, UnboundedReceiver<HealthEvent>)> {
        let handle = tokio::runtime::Handle::try_current()
            .context("Prober::start must be called from within a tokio runtime")?;
        let factory = sockets::Factory::spawn().context("starting the prober's socket thread")?;
        let (events, rx) = unbounded_channel();
        let token = sockets::random_u64();
        let shared = Arc::new(Shared {
            factory,
            events,
            icmp: icmp::Registry::default(),
            token,
            next_ident: AtomicU16::new((token >> 48) as u16),
        });
        let prober = Prober {
            shared,
            handle,
            targets: HashMap::new(),
        };
        Ok((prober, rx))
    }

    /// Reconciles the running probes with `specs`: starts new ones, stops removed ones,
    /// leaves unchanged ones running with their state. Duplicates count once.
    pub fn set(&mut self, specs: Vec<ProbeSpec>) {
        let wanted: HashSet<ProbeSpec> = specs.into_iter().collect();
        self.targets.retain(|spec, target| {
            let keep = wanted.contains(spec);
            if !keep {
                tracing::debug!(target = %spec.target, kind = ?spec.kind, "health: probe removed");
                target.task.abort();
            }
            keep
        });
        for spec in wanted {
            if self.targets.contains_key(&spec) {
                continue;
            }
            tracing::debug!(target = %spec.target, kind = ?spec.kind, "health: probe added");
            let counters = Arc::new(Mutex::new(probe::Counters::new()));
            let task = self.handle.spawn(probe::run(
                self.shared.clone(),
                spec.clone(),
                counters.clone(),
            ));
            self.targets.insert(spec, Target { counters, task });
        }
    }

    /// State and counters of every probe, sorted by target, interface, kind.
    pub fn status(&self) -> Vec<ProbeStatus> {
        let mut out: Vec<ProbeStatus> = self
            .targets
            .iter()
            .map(|(spec, target)| {
                let c = target.counters.lock().unwrap_or_else(|e| e.into_inner());
                ProbeStatus {
                    spec: spec.clone(),
                    healthy: c.healthy,
                    sent: c.sent,
                    received: c.received,
                    last_rtt_us: c
                        .last_rtt
                        .map(|d| d.as_micros().try_into().unwrap_or(u64::MAX)),
                    since_ms: c.since.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
                }
            })
            .collect();
        out.sort_by(|a, b| sort_key(&a.spec).cmp(&sort_key(&b.spec)));
        out
    }

    /// Whether `spec` is currently considered healthy (`None`: not probed).
    pub fn healthy(&self, spec: &ProbeSpec) -> Option<bool> {
        let t = self.targets.get(spec)?;
        Some(t.counters.lock().unwrap_or_else(|e| e.into_inner()).healthy)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for target in self.targets.values() {
            target.task.abort();
        }
        self.shared.icmp.shutdown();
    }
}

fn sort_key(s: &ProbeSpec) -> impl Ord + '_ {
    let kind = match s.kind {
        ProbeKind::Icmp => (0u8, 0u16),
        ProbeKind::Tcp { port } => (1, port),
        ProbeKind::UdpEcho { port } => (2, port),
    };
    (
        s.target,
        s.interface.as_deref(),
        kind,
        s.interval,
        s.multiplier,
        s.hold_down,
    )
}
