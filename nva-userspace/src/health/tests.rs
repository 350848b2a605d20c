//! Tests on real network namespaces joined by a veth pair (no mocks). They need root and
//! print SKIP otherwise. The prober runs on a current_thread runtime in a thread that
//! setns()'d into namespace `a`; the targets (the kernel's ICMP echo, a TCP listener, a UDP
//! echo responder) live in namespace `b`, on a runtime of their own.
//!
//! Timing: probes every 100 ms × 3, so DOWN is due 300 ms after the last reply, i.e. at
//! most 300 ms (plus scheduling) after the failure; the tests allow 450 ms (interval ×
//! multiplier + one interval) and print what they measured.

use std::future::Future;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nva_testkit::{Netns, netns::run_cmd};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::udp_echo::serve_echo;
use super::{HealthEvent, ProbeKind, ProbeSpec, ProbeStatus, Prober};

const MS: Duration = Duration::from_millis(1);
const INTERVAL: Duration = Duration::from_millis(100);
const MULTIPLIER: u32 = 3;
/// interval × multiplier + one interval.
const DOWN_BOUND: Duration = Duration::from_millis(450);
/// DOWN cannot come much earlier than the detection time minus one interval (200 ms) after
/// the failure: the last reply came at most one interval before it.
const DOWN_MIN: Duration = Duration::from_millis(150);
const HOLD_DOWN: Duration = Duration::from_millis(500);

const B4: &str = "10.201.0.2";
const B6: &str = "fd00:201::2";
const BLL: &str = "fe80::2";
/// On the link, but nobody has it.
const DEAD4: &str = "10.201.0.99";

type Events = UnboundedReceiver<HealthEvent>;

macro_rules! require_root {
    () => {
        if !nva_testkit::is_root() {
            eprintln!("SKIP: this test needs root (network namespaces, raw sockets)");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) {
    run_cmd(Command::new(cmd).args(args)).unwrap_or_else(|e| panic!("{e:#}"));
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn enter_netns(name: &str) {
    nva_testkit::netns::enter_netns(&format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Namespace `a` (va: 10.201.0.1, fd00:201::1, fe80::1) and `b` (vb: 10.201.0.2,
/// fd00:201::2, fe80::2) joined by a veth pair.
struct Topo {
    a: Netns,
    b: Netns,
}

impl Topo {
    fn new() -> Topo {
        let t = Topo {
            a: Netns::new("a").expect("ip netns add"),
            b: Netns::new("b").expect("ip netns add"),
        };
        link(t.a.name(), t.b.name());
        t
    }
}

/// Creates the veth pair va (in `a`) - vb (in `b`) with its addresses and waits until it
/// forwards.
fn link(a: &str, b: &str) {
    ip(&[
        "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
    ]);
    for (ns, dev, host) in [(a, "va", 1), (b, "vb", 2)] {
        // Keep the IPv6 addresses when the link goes down, like IPv4 does.
        let key = format!("net.ipv6.conf.{dev}.keep_addr_on_down=1");
        run("ip", &["netns", "exec", ns, "sysctl", "-qw", &key]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.201.0.{host}/24"),
            "dev",
            dev,
        ]);
        for addr in [format!("fd00:201::{host}/64"), format!("fe80::{host}/64")] {
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev, "nodad"]);
        }
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    // A new veth only forwards once the kernel's link watcher has run (up to 1 s), and
    // a neighbour solicitation lost before that is retried only after 1 s: wait until
    // every target answers, so the tests start from a working link.
    for target in [B4, B6, "fe80::2%va"] {
        let ok = (0..30).any(|_| {
            Command::new("ip")
                .args(["netns", "exec", a, "ping", "-c1", "-W1", "-q", target])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(ok, "{target} never answered ping");
    }
}

/// Sets vb (the targets' side of the link) up or down, off the runtime thread. The kernel
/// removes link-local addresses on down (even with keep_addr_on_down): fe80::2 is added
/// back on up.
async fn peer_link(ns: &Netns, up: bool) {
    let name = ns.name().to_string();
    tokio::task::spawn_blocking(move || {
        if up {
            ip(&["-n", &name, "link", "set", "vb", "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "replace",
                "fe80::2/64",
                "dev",
                "vb",
                "nodad",
            ]);
        } else {
            ip(&["-n", &name, "link", "set", "vb", "down"]);
        }
    })
    .await
    .expect("ip link set");
}

/// Makes the kernel of `ns` ignore (or answer again) ICMP echo requests: the target stops
/// answering without any link change (a veth that comes back up only forwards after the
/// kernel's link watcher ran, up to a second later, too slow for fast flaps).
async fn ignore_echo(ns: &Netns, ignore: bool) {
    let name = ns.name().to_string();
    let key = format!("net.ipv4.icmp_echo_ignore_all={}", u8::from(ignore));
    tokio::task::spawn_blocking(move || {
        run("ip", &["netns", "exec", &name, "sysctl", "-qw", &key])
    })
    .await
    .expect("sysctl");
}

/// Runs `f` on a current_thread runtime in a thread inside `ns`.
fn run_in<F, Fut>(ns: &Netns, f: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            enter_netns(ns.name());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f());
        });
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

/// A runtime on a thread inside a namespace, for the targets' listeners.
struct Peer {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn new(ns: &Netns) -> Peer {
        let name = ns.name().to_string();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            enter_netns(&name);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            handle_tx.send(rt.handle().clone()).expect("handle");
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        });
        Peer {
            handle: handle_rx.recv().expect("peer runtime"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A dual-stack UDP echo responder on `port`, counting datagrams.
    fn udp_echo(&self, port: u16, count: Arc<AtomicU64>) -> JoinHandle<()> {
        self.handle.spawn(async move {
            let socket = UdpSocket::bind(("::", port))
                .await
                .expect("binding the responder");
            serve_echo(&socket, Some(&count)).await.expect("responder");
        })
    }

    /// A dual-stack TCP listener on `port` that accepts and closes, counting connections.
    fn tcp_listener(&self, port: u16, count: Arc<AtomicU64>) -> JoinHandle<()> {
        self.handle.spawn(async move {
            let listener = TcpListener::bind(("::", port))
                .await
                .expect("binding the listener");
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }
            }
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spec(target: &str, interface: Option<&str>, kind: ProbeKind, hold_down: Duration) -> ProbeSpec {
    ProbeSpec {
        target: target.parse::<IpAddr>().expect("address"),
        interface: interface.map(str::to_owned),
        kind,
        interval: INTERVAL,
        multiplier: MULTIPLIER,
        hold_down,
    }
}

/// `kind` probes of the peer's IPv4 address (by route and on an interface), its IPv6
/// address and its link-local address.
fn every_target(kind: ProbeKind) -> [ProbeSpec; 4] {
    [
        spec(B4, None, kind.clone(), HOLD_DOWN),
        spec(B4, Some("va"), kind.clone(), HOLD_DOWN),
        spec(B6, None, kind.clone(), HOLD_DOWN),
        spec(BLL, Some("va"), kind, HOLD_DOWN),
    ]
}

fn status(p: &Prober, spec: &ProbeSpec) -> ProbeStatus {
    p.status()
        .into_iter()
        .find(|s| s.spec == *spec)
        .unwrap_or_else(|| panic!("{spec:?} is not probed"))
}

async fn wait_received(p: &Prober, spec: &ProbeSpec, n: u64) {
    let end = Instant::now() + 3000 * MS;
    loop {
        let s = status(p, spec);
        if s.received >= n {
            return;
        }
        assert!(
            Instant::now() < end,
            "only {} of {n} probes answered: {s:?}",
            s.received
        );
        sleep(20 * MS).await;
    }
}

/// Waits for one event per spec, all with state `healthy`; returns when each came, after
/// `t0`. Any other event fails.
async fn expect_events(
    rx: &mut Events,
    specs: &[ProbeSpec],
    healthy: bool,
    t0: Instant,
    within: Duration,
) -> Vec<Duration> {
    let mut got: Vec<Option<Duration>> = vec![None; specs.len()];
    while got.iter().any(Option::is_none) {
        let ev = match tokio::time::timeout_at(t0 + within, rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!(
                "no {} event within {within:?} for some of {specs:?}: got {got:?}",
                if healthy { "UP" } else { "DOWN" }
            ),
        };
        let at = t0.elapsed();
        let i = specs
            .iter()
            .position(|s| *s == ev.spec)
            .unwrap_or_else(|| panic!("unexpected event {ev:?}"));
        assert_eq!(ev.healthy, healthy, "unexpected event {ev:?} after {at:?}");
        assert!(got[i].is_none(), "duplicate event {ev:?}");
        got[i] = Some(at);
    }
    got.into_iter().flatten().collect()
}

async fn expect_quiet(rx: &mut Events, d: Duration) {
    if let Ok(ev) = tokio::time::timeout(d, rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn ms(d: &[Duration]) -> Vec<u128> {
    d.iter().map(Duration::as_millis).collect()
}

/// Live targets stay up; `fail` gives DOWN within the bound; `restore` gives UP only after
/// the hold-down. With `clean_repair`, the path works without a hiccup once the first probe
/// got through, so UP must come a hold-down (+ one interval) after that first success.
async fn down_up(
    p: &Prober,
    rx: &mut Events,
    specs: &[ProbeSpec],
    what: &str,
    fail: impl Future<Output = ()>,
    restore: impl Future<Output = ()>,
    clean_repair: bool,
) {
    for s in specs {
        wait_received(p, s, 3).await;
    }
    expect_quiet(rx, 500 * MS).await;
    for s in specs {
        let st = status(p, s);
        assert!(
            st.healthy && st.received >= 5 && st.last_rtt_us.is_some(),
            "{st:?}"
        );
    }

    let t0 = Instant::now();
    fail.await;
    let down = expect_events(rx, specs, false, t0, 2000 * MS).await;
    eprintln!(
        "{what}: DOWN {:?} ms after the failure (100 ms × 3)",
        ms(&down)
    );
    for (s, d) in specs.iter().zip(&down) {
        assert!(
            (DOWN_MIN..=DOWN_BOUND).contains(d),
            "{what}: {s:?} DOWN {d:?} after the failure, want {DOWN_MIN:?}..={DOWN_BOUND:?}"
        );
    }
    expect_quiet(rx, 300 * MS).await;
    for s in specs {
        assert!(!status(p, s).healthy);
    }

    let t1 = Instant::now();
    let ((), first) = tokio::join!(restore, first_success(p, specs, t1));
    let hold = specs[0].hold_down;
    let up = expect_events(rx, specs, true, t1, hold + 5000 * MS).await;
    check_up(what, specs, t1, &first, &up, clean_repair);
    // Up since its UP event, which came at least a hold-down after the repair.
    let max_since = t1.elapsed().saturating_sub(hold).as_millis() + 1;
    for s in specs {
        let st = status(p, s);
        assert!(st.healthy && u128::from(st.since_ms) <= max_since, "{st:?}");
    }
}

/// When each spec's first successful probe after `t1` was seen (polling its counters).
async fn first_success(p: &Prober, specs: &[ProbeSpec], t1: Instant) -> Vec<Instant> {
    let base: Vec<u64> = specs.iter().map(|s| status(p, s).received).collect();
    let mut first: Vec<Option<Instant>> = vec![None; specs.len()];
    while first.iter().any(Option::is_none) {
        for (i, s) in specs.iter().enumerate() {
            if first[i].is_none() && status(p, s).received > base[i] {
                first[i] = Some(Instant::now());
            }
        }
        assert!(
            t1.elapsed() < 5000 * MS,
            "no successful probe 5 s after the repair: {first:?}"
        );
        sleep(5 * MS).await;
    }
    first.into_iter().flatten().collect()
}

/// UP must come at least a hold-down after the repair, and a hold-down after the first
/// successful probe (which is seen by polling, late on a loaded machine: one interval of slack) but not more
/// than one interval (plus 150 ms for a loaded machine) later.
fn check_up(
    what: &str,
    specs: &[ProbeSpec],
    t1: Instant,
    first: &[Instant],
    up: &[Duration],
    clean_repair: bool,
) {
    let hold = specs[0].hold_down;
    let after_first: Vec<Duration> = first
        .iter()
        .zip(up)
        .map(|(f, u)| (t1 + *u).saturating_duration_since(*f))
        .collect();
    eprintln!(
        "{what}: UP {:?} ms after the repair, {:?} ms after the first successful probe (hold-down {} ms)",
        ms(up),
        ms(&after_first),
        hold.as_millis()
    );
    for ((s, u), f) in specs.iter().zip(up).zip(&after_first) {
        assert!(
            *u >= hold,
            "{what}: {s:?} UP {u:?} after the repair, before the hold-down"
        );
        if !clean_repair {
            continue;
        }
        let (lo, hi) = (hold - INTERVAL, hold + INTERVAL + 150 * MS);
        assert!(
            (lo..=hi).contains(f),
            "{what}: {s:?} UP {f:?} after its first successful probe, want {lo:?}..={hi:?}"
        );
    }
}

#[test]
fn icmp_v4() {
    require_root!();
    let topo = Topo::new();
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let live = [
            spec(B4, None, ProbeKind::Icmp, HOLD_DOWN),
            spec(B4, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
        ];
        let dead = spec(DEAD4, None, ProbeKind::Icmp, HOLD_DOWN);
        let mut all = live.to_vec();
        all.push(dead.clone());
        let t0 = Instant::now();
        p.set(all);
        // A target that never answers starts up and goes down after the detection time.
        let d = expect_events(&mut rx, std::slice::from_ref(&dead), false, t0, 2000 * MS).await;
        eprintln!(
            "icmp v4: silent target DOWN {} ms after it was added",
            d[0].as_millis()
        );
        assert!(d[0] >= 300 * MS && d[0] <= DOWN_BOUND, "{d:?}");
        let st = status(&p, &dead);
        assert!(!st.healthy && st.received == 0 && st.sent >= 3, "{st:?}");

        down_up(
            &p,
            &mut rx,
            &live,
            "icmp v4",
            peer_link(&topo.b, false),
            peer_link(&topo.b, true),
            true,
        )
        .await;
    });
}

#[test]
fn icmp_v6() {
    require_root!();
    let topo = Topo::new();
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let live = [
            spec(B6, None, ProbeKind::Icmp, HOLD_DOWN),
            spec(B6, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
            spec(BLL, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
        ];
        p.set(live.to_vec());
        down_up(
            &p,
            &mut rx,
            &live,
            "icmp v6",
            peer_link(&topo.b, false),
            peer_link(&topo.b, true),
            true,
        )
        .await;
    });
}

#[test]
fn tcp_connect() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    let accepted = Arc::new(AtomicU64::new(0));
    let listener = peer.tcp_listener(7100, accepted.clone());
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let live = every_target(ProbeKind::Tcp { port: 7100 });
        p.set(live.to_vec());
        let stop = async { listener.abort() };
        let start = async {
            peer.tcp_listener(7100, accepted.clone());
        };
        down_up(&p, &mut rx, &live, "tcp", stop, start, true).await;
    });
    assert!(accepted.load(Ordering::Relaxed) > 20);
}

#[test]
fn udp_echo() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    let echoed = Arc::new(AtomicU64::new(0));
    let responder = peer.udp_echo(7200, echoed.clone());
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let live = every_target(ProbeKind::UdpEcho { port: 7200 });
        p.set(live.to_vec());
        let stop = async { responder.abort() };
        let start = async {
            peer.udp_echo(7200, echoed.clone());
        };
        down_up(&p, &mut rx, &live, "udp echo", stop, start, true).await;
    });
    assert!(echoed.load(Ordering::Relaxed) > 20);
}

/// The public responder works on its own too (v4 and v6 on one dual-stack socket).
#[test]
fn public_udp_echo_responder() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    peer.handle.spawn(async {
        super::udp_echo_responder("[::]:7300".parse().expect("addr"))
            .await
            .expect("responder");
    });
    run_in(&topo.a, || async {
        let (mut p, _rx) = Prober::start().expect("start");
        let specs = [
            spec(B4, None, ProbeKind::UdpEcho { port: 7300 }, HOLD_DOWN),
            spec(B6, None, ProbeKind::UdpEcho { port: 7300 }, HOLD_DOWN),
        ];
        p.set(specs.to_vec());
        for s in &specs {
            wait_received(&p, s, 3).await;
        }
    });
}

#[test]
fn flapping_faster_than_hold_down_stays_down() {
    require_root!();
    let topo = Topo::new();
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let hold = 1000 * MS;
        let s = spec(B4, None, ProbeKind::Icmp, hold);
        p.set(vec![s.clone()]);
        wait_received(&p, &s, 3).await;
        ignore_echo(&topo.b, true).await;
        expect_events(
            &mut rx,
            std::slice::from_ref(&s),
            false,
            Instant::now(),
            1000 * MS,
        )
        .await;

        // Answering 300 ms, silent 200 ms: probes succeed, but never for the hold-down.
        let received = status(&p, &s).received;
        for _ in 0..4 {
            ignore_echo(&topo.b, false).await;
            sleep(300 * MS).await;
            ignore_echo(&topo.b, true).await;
            sleep(200 * MS).await;
        }
        let st = status(&p, &s);
        assert!(
            st.received >= received + 8,
            "too few successful probes while flapping: {st:?}"
        );
        assert!(!st.healthy, "{st:?}");
        assert!(rx.try_recv().is_err(), "an event while flapping");

        let t = Instant::now();
        let specs = std::slice::from_ref(&s);
        let ((), first) = tokio::join!(ignore_echo(&topo.b, false), first_success(&p, specs, t));
        let up = expect_events(&mut rx, specs, true, t, hold + 2000 * MS).await;
        check_up("flap", specs, t, &first, &up, true);
    });
}

#[test]
fn set_keeps_unchanged_probes_and_stops_removed_ones() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    let (c1, c2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    peer.udp_echo(7401, c1.clone());
    peer.udp_echo(7402, c2.clone());
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let s1 = spec(B4, None, ProbeKind::UdpEcho { port: 7401 }, HOLD_DOWN);
        let s2 = spec(B4, None, ProbeKind::UdpEcho { port: 7402 }, HOLD_DOWN);
        let s3 = spec(DEAD4, None, ProbeKind::UdpEcho { port: 7403 }, HOLD_DOWN);
        p.set(vec![s1.clone(), s2.clone(), s3.clone()]);
        expect_events(
            &mut rx,
            std::slice::from_ref(&s3),
            false,
            Instant::now(),
            2000 * MS,
        )
        .await;
        wait_received(&p, &s1, 5).await;
        wait_received(&p, &s2, 5).await;

        // The same set, in another order, with a duplicate: nothing restarts.
        let before = p.status();
        p.set(vec![s3.clone(), s2.clone(), s1.clone(), s1.clone()]);
        sleep(350 * MS).await;
        let after = p.status();
        assert_eq!(after.len(), 3);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.spec, a.spec);
            assert_eq!(b.healthy, a.healthy, "{b:?} -> {a:?}");
            assert!(
                a.sent >= b.sent + 2 && a.since_ms >= b.since_ms + 300,
                "restarted: {b:?} -> {a:?}"
            );
            if a.healthy {
                assert!(a.received >= b.received + 2, "{b:?} -> {a:?}");
            }
        }
        assert!(!status(&p, &s3).healthy);
        assert!(
            rx.try_recv().is_err(),
            "set() with unchanged specs sent an event"
        );

        // Removing s2 stops its probes; s1 goes on.
        p.set(vec![s1.clone(), s3.clone()]);
        sleep(150 * MS).await;
        let (n1, n2) = (c1.load(Ordering::Relaxed), c2.load(Ordering::Relaxed));
        sleep(600 * MS).await;
        assert_eq!(
            c2.load(Ordering::Relaxed),
            n2,
            "a removed probe still sends"
        );
        assert!(
            c1.load(Ordering::Relaxed) >= n1 + 4,
            "the kept probe stopped"
        );
        assert!(p.status().iter().all(|s| s.spec != s2));

        // Added again, it is a new probe.
        p.set(vec![s1.clone(), s2.clone(), s3.clone()]);
        sleep(50 * MS).await;
        let st = status(&p, &s2);
        assert!(st.sent <= 2 && st.healthy, "{st:?}");

        // Dropping the prober stops everything and closes the channel.
        drop(p);
        sleep(150 * MS).await;
        let (n1, n2) = (c1.load(Ordering::Relaxed), c2.load(Ordering::Relaxed));
        sleep(400 * MS).await;
        assert_eq!(
            (c1.load(Ordering::Relaxed), c2.load(Ordering::Relaxed)),
            (n1, n2)
        );
        let closed =
            tokio::time::timeout(1000 * MS, async { while rx.recv().await.is_some() {} }).await;
        assert!(
            closed.is_ok(),
            "event channel still open after the prober was dropped"
        );
    });
}

/// A probe bound to an interface survives the interface being deleted and created again
/// (a new ifindex under the same name): its sockets are re-bound.
#[test]
fn interface_recreated() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    peer.udp_echo(7500, Arc::new(AtomicU64::new(0)));
    run_in(&topo.a, || async {
        let (mut p, mut rx) = Prober::start().expect("start");
        let specs = [
            spec(B4, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
            spec(BLL, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
            spec(B4, Some("va"), ProbeKind::UdpEcho { port: 7500 }, HOLD_DOWN),
            spec(
                BLL,
                Some("va"),
                ProbeKind::UdpEcho { port: 7500 },
                HOLD_DOWN,
            ),
            spec(B6, Some("va"), ProbeKind::Tcp { port: 7501 }, HOLD_DOWN),
        ];
        let listener = peer.tcp_listener(7501, Arc::new(AtomicU64::new(0)));
        p.set(specs.to_vec());
        let name = topo.a.name().to_string();
        let fail = async move {
            tokio::task::spawn_blocking(move || ip(&["-n", &name, "link", "del", "va"]))
                .await
                .expect("ip link del");
        };
        let (a, b) = (topo.a.name().to_string(), topo.b.name().to_string());
        let restore = async move {
            tokio::task::spawn_blocking(move || link(&a, &b))
                .await
                .expect("link");
        };

        // While the pair is re-created, the kernel may lose a packet after the first got
        // through (ARP, link watcher): no bound on UP after the first success here.
        down_up(
            &p,
            &mut rx,
            &specs,
            "interface re-created",
            fail,
            restore,
            false,
        )
        .await;
        drop(listener);
    });
}

/// The runtime's worker threads are in another namespace (the root one) than the thread
/// that calls `start()`: every socket must still be in the caller's namespace.
#[test]
fn multi_thread_runtime_built_in_another_namespace() {
    require_root!();
    let topo = Topo::new();
    let peer = Peer::new(&topo.b);
    peer.udp_echo(7600, Arc::new(AtomicU64::new(0)));
    peer.tcp_listener(7601, Arc::new(AtomicU64::new(0)));
    // Built here, in the namespace of the test harness.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut p, mut rx) = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(topo.a.name());
            let _guard = rt.enter();
            Prober::start().expect("start")
        })
        .join()
        .expect("start thread")
    });
    let specs = [
        spec(B4, None, ProbeKind::Icmp, HOLD_DOWN),
        spec(BLL, Some("va"), ProbeKind::Icmp, HOLD_DOWN),
        spec(B6, None, ProbeKind::Tcp { port: 7601 }, HOLD_DOWN),
        spec(B4, Some("va"), ProbeKind::UdpEcho { port: 7600 }, HOLD_DOWN),
    ];
    p.set(specs.to_vec()); // from this thread, outside the runtime
    rt.block_on(async {
        for s in &specs {
            wait_received(&p, s, 5).await;
        }
        assert!(rx.try_recv().is_err(), "unexpected event");
    });
    drop(p);
    drop(rt);
}
