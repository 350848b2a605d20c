//! Interop with BIRD 2 (no mocks): BIRD plays a route server (AS 65515) in one network
//! namespace, our session runs in another. Root only; skipped otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use nva::bgp::codec::{AsPath, CodecCtx, Message, NextHop, PathAttrs, decode_message};
use nva::bgp::config::{ConnectMode, FamilyName, PeerConfig};
use nva::bgp::event::{Command, DownReason, Event};
use nva_testkit::{Bird, Netns, veth};

use crate::env::{linked, listening_speaker, skip_unless, wait_link_local};

const BIRD_CONF: &str = r#"
router id 10.0.0.2;
log stderr all;
protocol device { scan time 1; }
protocol direct { ipv4; ipv6; interface "veth1"; }
protocol static s4 {
    ipv4;
    route 192.0.2.0/24 blackhole;
    # Carries our AS: must be dropped by our loop check.
    route 203.0.113.0/24 blackhole { bgp_path.prepend(65001); };
}
protocol static s6 {
    ipv6;
    route 2001:db8:100::/48 blackhole;
}
protocol bgp nva {
    local 10.0.0.2 as 65515;
    neighbor 10.0.0.1 as 65001;
    hold time 9;
    keepalive time 3;
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 2;
    ipv4 { import all; export where proto = "s4"; };
    ipv6 { import all; export where proto = "s6"; next hop address 2001:db8::2; };
}
"#;

const WAIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn next_event(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("channel closed")
}

/// Commands from the test (outside the namespace) to the async side (inside).
enum Step {
    Announce(Vec<(IpNet, Arc<PathAttrs>)>),
    Withdraw(Vec<IpNet>),
    /// Expect a Down event (BIRD disabled its protocol).
    ExpectDown,
    /// Check that no Down arrived so far.
    ExpectNoDown,
    Done,
}

/// Reports from the async side.
#[derive(Debug)]
enum Report {
    Established,
    Routes(Vec<(IpNet, Arc<PathAttrs>)>),
    Down(DownReason),
    Ok,
}

#[test]
fn bird_interop() {
    if skip_unless(&["ip", "bird", "birdc"]) {
        return;
    }
    let (ours, theirs) = linked(
        &["10.0.0.1/24", "2001:db8::1/64"],
        &["10.0.0.2/24", "10.0.0.3/24", "2001:db8::2/64"],
    );
    let bird = Bird::start(&theirs, BIRD_CONF).expect("start bird");

    let (step_tx, step_rx) = std::sync::mpsc::channel::<Step>();
    let (report_tx, report_rx) = std::sync::mpsc::channel::<Report>();
    let speaker = ours.spawn_async(move || run_speaker(step_rx, report_tx));
    let report = || {
        report_rx
            .recv_timeout(WAIT)
            .expect("no report from the session")
    };

    // Established, on both sides.
    assert!(matches!(report(), Report::Established));
    bird.wait_for(&["show", "protocols", "all", "nva"], WAIT, |o| {
        o.contains("BGP state:          Established")
    })
    .unwrap();

    // BIRD's static routes arrive with the right next hops and AS paths; the route
    // with our AS in its path does not.
    let Report::Routes(routes) = report() else {
        panic!("expected routes")
    };
    let find = |p: &str| {
        routes
            .iter()
            .find(|(n, _)| *n == p.parse::<IpNet>().unwrap())
            .map(|(_, a)| a.clone())
    };
    let r4 = find("192.0.2.0/24").expect("IPv4 route from BIRD");
    assert_eq!(r4.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))));
    assert_eq!(r4.as_path, AsPath::from_sequence([65515]));
    let r6 = find("2001:db8:100::/48").expect("IPv6 route from BIRD");
    assert_eq!(r6.next_hop.map(|n| n.addr()), Some(ip("2001:db8::2")));
    assert_eq!(r6.as_path, AsPath::from_sequence([65515]));
    assert!(find("203.0.113.0/24").is_none(), "looped route accepted");

    // Our announcements reach BIRD with our AS prepended and next-hop-self.
    let attrs = Arc::new(PathAttrs {
        as_path: AsPath::from_sequence([65100]),
        ..PathAttrs::default()
    });
    let v4: IpNet = "198.51.100.0/24".parse().unwrap();
    let v6: IpNet = "2001:db8:200::/48".parse().unwrap();
    step_tx
        .send(Step::Announce(vec![(v4, attrs.clone()), (v6, attrs)]))
        .unwrap();
    let out = bird
        .wait_for(&["show", "route", "all", "198.51.100.0/24"], WAIT, |o| {
            o.contains("198.51.100.0/24")
        })
        .unwrap();
    assert!(out.contains("via 10.0.0.1"), "{out}");
    assert!(out.contains("BGP.as_path: 65001 65100"), "{out}");
    let out = bird
        .wait_for(&["show", "route", "all", "2001:db8:200::/48"], WAIT, |o| {
            o.contains("2001:db8:200::/48")
        })
        .unwrap();
    assert!(out.contains("via 2001:db8::1"), "{out}");

    // Withdraw removes it.
    step_tx.send(Step::Withdraw(vec![v4])).unwrap();
    bird.wait_for(&["show", "route", "198.51.100.0/24"], WAIT, |o| {
        !o.contains("198.51.100.0/24")
    })
    .unwrap();

    // A garbage sender (configured passive peer 10.0.0.3) gets a NOTIFICATION 1/1; the
    // BIRD session stays Established.
    let garbage = theirs.spawn_async(send_garbage);
    let n = garbage.join().expect("garbage thread");
    assert_eq!(n, (1, 1));
    std::thread::sleep(Duration::from_secs(1));
    step_tx.send(Step::ExpectNoDown).unwrap();
    assert!(matches!(report(), Report::Ok));
    let out = bird.birdc(&["show", "protocols", "all", "nva"]);
    assert!(out.contains("BGP state:          Established"), "{out}");

    // BIRD disables the protocol: we get Down with its Cease.
    bird.birdc(&["disable", "nva"]);
    step_tx.send(Step::ExpectDown).unwrap();
    match report() {
        Report::Down(DownReason::NotificationReceived(n)) => assert_eq!(n.code, 6, "{n}"),
        other => panic!("expected Down with a Cease, got {other:?}"),
    }
    step_tx.send(Step::Done).unwrap();
    speaker.join().expect("speaker thread");
}

async fn run_speaker(
    steps: std::sync::mpsc::Receiver<Step>,
    report: std::sync::mpsc::Sender<Report>,
) {
    let (mut speaker, mut rx) = listening_speaker("10.0.0.1:179", 1024);
    let mut cfg = PeerConfig::new(ip("10.0.0.2"), 65515, 65001, Ipv4Addr::new(10, 0, 0, 1));
    cfg.hold_time = 9;
    cfg.keepalive = 3;
    cfg.connect_retry = 2;
    cfg.next_hop_v6 = Some("2001:db8::1".parse().unwrap());
    let bird = speaker.add_peer(cfg).expect("peer");
    let mut garbage = PeerConfig::new(ip("10.0.0.3"), 65003, 65001, Ipv4Addr::new(10, 0, 0, 1));
    garbage.mode = ConnectMode::Passive;
    speaker.add_peer(garbage).expect("garbage peer");

    loop {
        if let Event::Established { .. } = next_event(&mut rx).await {
            break;
        }
    }
    report.send(Report::Established).unwrap();
    // Collect routes until End-of-RIB of both families.
    let mut routes = Vec::new();
    let mut eor = 0;
    while eor < 2 {
        match next_event(&mut rx).await {
            Event::Update { announced, .. } => routes.extend(announced),
            Event::EndOfRib { .. } => eor += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    report.send(Report::Routes(routes)).unwrap();

    loop {
        // The test thread drives the steps; poll it without blocking the runtime.
        let step = loop {
            match steps.try_recv() {
                Ok(s) => break s,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("test thread gone: {e}"),
            }
        };
        match step {
            Step::Announce(r) => bird.send(Command::Announce(r)).unwrap(),
            Step::Withdraw(p) => bird.send(Command::Withdraw(p)).unwrap(),
            Step::ExpectNoDown => {
                while let Ok(ev) = rx.try_recv() {
                    assert!(
                        !matches!(ev, Event::Down { .. } | Event::Established { .. }),
                        "{ev:?}"
                    );
                }
                report.send(Report::Ok).unwrap();
            }
            Step::ExpectDown => loop {
                if let Event::Down { reason, .. } = next_event(&mut rx).await {
                    report.send(Report::Down(reason)).unwrap();
                    break;
                }
            },
            Step::Done => break,
        }
    }
    speaker.shutdown().await;
}

/// Connects from 10.0.0.3 and sends a header with a broken marker; returns the
/// NOTIFICATION's code and subcode.
async fn send_garbage() -> (u8, u8) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("10.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = sock
        .connect(SocketAddr::new(ip("10.0.0.1"), 179))
        .await
        .expect("connect");
    let mut bad = vec![0xffu8; 16];
    bad[0] = 0x00;
    bad.extend_from_slice(&[0, 19, 4]);
    s.write_all(&bad).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut head = [0u8; 19];
            s.read_exact(&mut head)
                .await
                .expect("closed without NOTIFICATION");
            let len = u16::from_be_bytes([head[16], head[17]]) as usize;
            let mut msg = head.to_vec();
            msg.resize(len, 0);
            s.read_exact(&mut msg[19..]).await.unwrap();
            if let Ok(Message::Notification(n)) = decode_message(&msg, &CodecCtx::default()) {
                return (n.code, n.subcode);
            }
        }
    })
    .await
    .expect("no NOTIFICATION")
}

const BIRD_SECURE_CONF: &str = r#"
router id 10.0.0.2;
log stderr all;
protocol device { scan time 1; }
protocol static s4 { ipv4; route 192.0.2.0/24 blackhole; }
protocol bgp nva {
    local 10.0.0.2 as 65515;
    neighbor 10.0.0.1 as 65001;
    password "nva-secret";
    ttl security on;
    graceful restart on;
    graceful restart time 100;
    hold time 9;
    connect delay time 1;
    connect retry time 2;
    ipv4 { import all; export all; };
}
"#;

/// TCP MD5 (RFC 2385) and GTSM (RFC 5082) against BIRD, then BIRD dies without a
/// NOTIFICATION: graceful restart says keep its routes as stale for its restart time.
#[test]
fn bird_md5_gtsm_graceful_restart() {
    if skip_unless(&["ip", "bird", "birdc"]) {
        return;
    }
    let (ours, theirs) = linked(&["10.0.0.1/24"], &["10.0.0.2/24"]);
    let mut bird = Bird::start(&theirs, BIRD_SECURE_CONF).expect("start bird");

    let (report_tx, report_rx) = std::sync::mpsc::channel::<Event>();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let speaker = ours.spawn_async(move || {
        async move {
            let (mut speaker, mut rx) = listening_speaker("10.0.0.1:179", 64);
            let mut cfg = PeerConfig::new(ip("10.0.0.2"), 65515, 65001, Ipv4Addr::new(10, 0, 0, 1));
            cfg.md5_password = Some("nva-secret".into());
            cfg.gtsm = true;
            cfg.hold_time = 9;
            cfg.connect_retry = 2;
            cfg.families = vec![FamilyName::Ipv4Unicast];
            speaker.add_peer(cfg).expect("peer");
            let mut kill_rx = Some(kill_rx);
            loop {
                let ev = next_event(&mut rx).await;
                let down = matches!(ev, Event::Down { .. });
                if matches!(ev, Event::Established { .. }) {
                    report_tx.send(ev).unwrap();
                    // Wait until the test has killed BIRD.
                    if let Some(k) = kill_rx.take() {
                        let _ = k.await;
                    }
                } else if down {
                    report_tx.send(ev).unwrap();
                    break;
                }
            }
            speaker.shutdown().await;
        }
    });
    let ev = report_rx.recv_timeout(WAIT).expect("no Established");
    let Event::Established { caps, .. } = ev else {
        panic!("{ev:?}")
    };
    let gr = caps
        .peer_graceful_restart
        .expect("BIRD offers graceful restart");
    assert_eq!(gr.restart_time, 100);
    let out = bird.birdc(&["show", "protocols", "all", "nva"]);
    assert!(out.contains("Established"), "{out}");
    bird.kill();
    kill_tx.send(()).unwrap();
    let ev = report_rx.recv_timeout(WAIT).expect("no Down");
    match ev {
        Event::Down {
            reason: DownReason::ConnectionLost(_),
            stale_for,
            ..
        } => {
            assert_eq!(stale_for, Some(Duration::from_secs(100)))
        }
        other => panic!("expected Down with connection lost, got {other:?}"),
    }
    speaker.join().expect("speaker thread");
}

/// The MD5 key is really in use: with a wrong one the session never comes up.
#[test]
fn bird_md5_mismatch_never_establishes() {
    if skip_unless(&["ip", "bird", "birdc"]) {
        return;
    }
    let (ours, theirs) = linked(&["10.0.0.1/24"], &["10.0.0.2/24"]);
    let bird = Bird::start(&theirs, BIRD_SECURE_CONF).expect("start bird");
    let speaker = ours.spawn_async(move || async move {
        let (mut speaker, mut rx) = listening_speaker("10.0.0.1:179", 64);
        let mut cfg = PeerConfig::new(ip("10.0.0.2"), 65515, 65001, Ipv4Addr::new(10, 0, 0, 1));
        cfg.md5_password = Some("wrong-secret".into());
        cfg.gtsm = true;
        cfg.connect_retry = 1;
        speaker.add_peer(cfg).expect("peer");
        let got = tokio::time::timeout(Duration::from_secs(6), rx.recv()).await;
        speaker.shutdown().await;
        got.is_ok()
    });
    assert!(
        !speaker.join().expect("speaker thread"),
        "an event arrived despite the wrong key"
    );
    let out = bird.birdc(&["show", "protocols", "all", "nva"]);
    assert!(!out.contains("BGP state:          Established"), "{out}");
}

const BIRD_MULTIHOP_CONF: &str = r#"
router id 10.0.2.1;
log stderr all;
protocol device { scan time 1; }
protocol static s4 {
    ipv4;
    route 192.0.2.0/24 blackhole;
    route 10.0.1.0/24 via 10.0.2.2;
}
protocol bgp nva {
    local 10.0.2.1 as 65515;
    neighbor 10.0.1.1 as 65001;
    multihop 2;
    hold time 9;
    connect delay time 1;
    connect retry time 2;
    ipv4 { import all; export where proto = "s4" && net = 192.0.2.0/24; };
}
"#;

/// eBGP multihop like a route server two hops away: with TTL 2 the session comes up
/// through a router; the default eBGP TTL of 1 would die at that router.
#[test]
fn bird_multihop_through_a_router() {
    if skip_unless(&["ip", "bird", "birdc"]) {
        return;
    }
    let ours = Netns::new("ours").unwrap();
    let router = Netns::new("router").unwrap();
    let theirs = Netns::new("theirs").unwrap();
    // ours veth0 -- veth1 router ; router veth0 -- veth1 theirs
    veth(&ours, "veth0", &router, "veth1").unwrap();
    veth(&router, "veth0", &theirs, "veth1").unwrap();
    ours.ip_args(&["addr", "add", "10.0.1.1/24", "dev", "veth0"])
        .unwrap();
    router
        .ip_args(&["addr", "add", "10.0.1.2/24", "dev", "veth1"])
        .unwrap();
    router
        .ip_args(&["addr", "add", "10.0.2.2/24", "dev", "veth0"])
        .unwrap();
    theirs
        .ip_args(&["addr", "add", "10.0.2.1/24", "dev", "veth1"])
        .unwrap();
    ours.ip_args(&["route", "add", "10.0.2.0/24", "via", "10.0.1.2"])
        .unwrap();
    theirs
        .ip_args(&["route", "add", "10.0.1.0/24", "via", "10.0.2.2"])
        .unwrap();
    router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let bird = Bird::start(&theirs, BIRD_MULTIHOP_CONF).expect("start bird");

    let got = ours
        .spawn_async(move || async move {
            let (mut speaker, mut rx) = listening_speaker("10.0.1.1:179", 64);
            let mut cfg = PeerConfig::new(ip("10.0.2.1"), 65515, 65001, Ipv4Addr::new(10, 0, 1, 1));
            cfg.multihop_ttl = Some(2);
            cfg.local_addr = Some(ip("10.0.1.1"));
            cfg.hold_time = 9;
            cfg.connect_retry = 2;
            cfg.families = vec![FamilyName::Ipv4Unicast];
            speaker.add_peer(cfg).expect("peer");
            let mut routes = Vec::new();
            loop {
                match next_event(&mut rx).await {
                    Event::Update { announced, .. } => routes.extend(announced),
                    Event::EndOfRib { .. } => break,
                    Event::Down { reason, .. } => panic!("down: {reason}"),
                    Event::Established { .. } => {}
                }
            }
            speaker.shutdown().await;
            routes
        })
        .join()
        .expect("speaker thread");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "192.0.2.0/24".parse::<IpNet>().unwrap());
    assert_eq!(
        got[0].1.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(10, 0, 2, 1)))
    );
    drop(bird);
}

const BIRD_V6_CONF: &str = r#"
router id 10.0.0.2;
log stderr all;
protocol device { scan time 1; }
protocol static s6 { ipv6; route 2001:db8:100::/48 blackhole; }
protocol bgp nva {
    local 2001:db8::2 as 65515;
    neighbor 2001:db8::1 as 65001;
    hold time 9;
    connect delay time 1;
    connect retry time 2;
    ipv6 { import all; export where proto = "s6"; };
}
"#;

/// A session over IPv6 on a shared link: BIRD's next hop is 32 bytes (global and
/// link-local), and our announcement's next hop is our global address.
#[test]
fn bird_over_ipv6_transport() {
    if skip_unless(&["ip", "bird", "birdc"]) {
        return;
    }
    let (ours, theirs) = linked(&["2001:db8::1/64"], &["2001:db8::2/64"]);
    // BIRD adds its link-local next hop only once the address is usable.
    wait_link_local(&theirs, "veth1");
    let bird = Bird::start(&theirs, BIRD_V6_CONF).expect("start bird");
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<()>();
    let speaker = ours.spawn_async(move || {
        async move {
            let (mut speaker, mut rx) = listening_speaker("[::]:179", 64);
            let mut cfg =
                PeerConfig::new(ip("2001:db8::2"), 65515, 65001, Ipv4Addr::new(10, 0, 0, 1));
            cfg.hold_time = 9;
            cfg.connect_retry = 2;
            cfg.families = vec![FamilyName::Ipv6Unicast];
            let peer = speaker.add_peer(cfg).expect("peer");
            let mut routes = Vec::new();
            loop {
                match next_event(&mut rx).await {
                    Event::Update { announced, .. } => routes.extend(announced),
                    Event::EndOfRib { .. } => break,
                    Event::Down { reason, .. } => panic!("down: {reason}"),
                    Event::Established { caps, .. } => assert!(caps.local_addr.is_ipv6()),
                }
            }
            let a = Arc::new(PathAttrs::default());
            peer.send(Command::Announce(vec![(
                "2001:db8:200::/48".parse().unwrap(),
                a,
            )]))
            .unwrap();
            // Keep the session up until the test has checked BIRD.
            while cmd_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            speaker.shutdown().await;
            routes
        }
    });
    let out = bird
        .wait_for(&["show", "route", "all", "2001:db8:200::/48"], WAIT, |o| {
            o.contains("2001:db8:200::/48")
        })
        .unwrap();
    assert!(out.contains("via 2001:db8::1"), "{out}");
    assert!(out.contains("BGP.as_path: 65001"), "{out}");
    cmd_tx.send(()).unwrap();
    let routes = speaker.join().expect("speaker thread");
    assert_eq!(routes.len(), 1, "{routes:?}");
    match routes[0].1.next_hop {
        Some(NextHop::V6 {
            global,
            link_local: Some(ll),
        }) => {
            assert_eq!(global, "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap());
            assert!(ll.is_unicast_link_local(), "{ll}");
        }
        other => panic!("expected a global + link-local next hop, got {other:?}"),
    }
}
