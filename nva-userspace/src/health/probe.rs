//! The task that runs one probe: sends every interval, matches outcomes, drives the
//! detector, reports changes.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::icmp::IcmpProbe;
use super::state::Detector;
use super::tcp::TcpProbe;
use super::udp_echo::{Echo, UdpProbe};
use super::{HealthEvent, MIN_INTERVAL, ProbeKind, ProbeSpec, Shared};

/// A probe's state, read by [`super::Prober::status`].
pub(super) struct Counters {
    pub(super) healthy: bool,
    pub(super) since: Instant,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) last_rtt: Option<Duration>,
}

impl Counters {
    pub(super) fn new() -> Self {
        Counters {
            healthy: true,
            since: Instant::now(),
            sent: 0,
            received: 0,
            last_rtt: None,
        }
    }
}

/// The result of one probe: its sequence number (`None`: the one in flight), whether it
/// succeeded, when that was seen.
struct Outcome {
    seq: Option<u64>,
    ok: bool,
    at: Instant,
}

enum Transport {
    Icmp(IcmpProbe),
    Tcp(TcpProbe),
    Udp(UdpProbe),
}

impl Transport {
    fn new(shared: &Shared, spec: &ProbeSpec) -> Self {
        let interface = spec.interface.clone();
        match spec.kind {
            ProbeKind::Icmp => {
                let ident = shared.next_ident.fetch_add(1, Ordering::Relaxed);
                Transport::Icmp(IcmpProbe::new(spec.target, interface, ident))
            }
            ProbeKind::Tcp { port } => Transport::Tcp(TcpProbe::new(spec.target, port, interface)),
            ProbeKind::UdpEcho { port } => {
                Transport::Udp(UdpProbe::new(spec.target, port, interface, shared.token))
            }
        }
    }

    async fn send(&mut self, shared: &Shared, seq: u64) -> io::Result<()> {
        match self {
            Transport::Icmp(p) => p.send(shared, seq).await,
            Transport::Tcp(p) => p.send(&shared.factory, seq).await,
            Transport::Udp(p) => p.send(&shared.factory, seq).await,
        }
    }

    /// The next outcome (cancel-safe).
    async fn next(&mut self) -> Outcome {
        match self {
            Transport::Icmp(p) => {
                let (seq, at) = p.next().await;
                Outcome {
                    seq: Some(seq),
                    ok: true,
                    at,
                }
            }
            Transport::Tcp(p) => {
                let (seq, ok) = p.next().await;
                Outcome {
                    seq: Some(seq),
                    ok,
                    at: Instant::now(),
                }
            }
            Transport::Udp(p) => {
                let (seq, ok) = match p.next().await {
                    Echo::Reply(seq) => (Some(seq), true),
                    Echo::Failed => (None, false),
                };
                Outcome {
                    seq,
                    ok,
                    at: Instant::now(),
                }
            }
        }
    }
}

fn lock(c: &Mutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one probe until aborted.
pub(super) async fn run(shared: Arc<Shared>, spec: ProbeSpec, counters: Arc<Mutex<Counters>>) {
    let interval = spec.interval.max(MIN_INTERVAL);
    let start = Instant::now();
    let mut detector = Detector::new(start, interval, spec.multiplier, spec.hold_down);
    lock(&counters).since = start;
    let mut transport = Transport::new(&shared, &spec);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep_until(detector.deadline().unwrap_or(start));
    tokio::pin!(deadline);
    // The probe in flight: sequence number, when sent.
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut seq = 0u64;
    let mut last_error: Option<String> = None;

    let report = |healthy: bool, at: Instant| {
        {
            let mut c = lock(&counters);
            c.healthy = healthy;
            c.since = at;
        }
        if healthy {
            tracing::info!(target = %spec.target, interface = ?spec.interface, kind = ?spec.kind, "health: next hop up");
        } else {
            tracing::warn!(target = %spec.target, interface = ?spec.interface, kind = ?spec.kind, "health: next hop down");
        }
        let _ = shared.events.send(HealthEvent {
            spec: spec.clone(),
            healthy,
        });
    };

    loop {
        // Outcomes first: a reply that is already there wins over the timers (after a stall
        // of this task, the peer must not pay for our lateness).
        tokio::select! {
            biased;
            outcome = transport.next() => {
                if let Some((current, sent_at)) = outstanding
                    && outcome.seq.is_none_or(|s| s == current)
                {
                    outstanding = None;
                    if outcome.ok {
                        last_error = None;
                        {
                            let mut c = lock(&counters);
                            c.received += 1;
                            c.last_rtt = Some(outcome.at.saturating_duration_since(sent_at));
                        }
                        if let Some(h) = detector.success(sent_at, outcome.at) {
                            report(h, outcome.at);
                        }
                    } else {
                        detector.failure();
                    }
                }
                // else: a late reply to a probe already counted as lost
            }
            () = &mut deadline, if detector.healthy() => {
                let now = Instant::now().max(deadline.deadline());
                if let Some(h) = detector.expire(now) {
                    report(h, now);
                }
            }
            _ = ticker.tick() => {
                if outstanding.take().is_some() {
                    detector.failure(); // no answer within the interval
                }
                seq += 1;
                lock(&counters).sent += 1;
                let sent_at = Instant::now();
                match transport.send(&shared, seq).await {
                    Ok(()) => outstanding = Some((seq, sent_at)),
                    Err(e) => {
                        detector.failure();
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(target = %spec.target, kind = ?spec.kind, "health: probe failed: {msg}");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        }
        if let Some(d) = detector.deadline()
            && d != deadline.deadline()
        {
            deadline.as_mut().reset(d);
        }
    }
}
