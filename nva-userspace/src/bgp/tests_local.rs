//! Session tests over loopback (no privileges needed): two of our speakers peering with
//! each other, and scripted fake peers for the error paths.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::codec::{
    AsPath, Capability, CodecCtx, Message, NextHop, Notification, Open, PathAttrs, decode_message,
    encode_message,
};
use super::config::{ConnectMode, PeerConfig};
use super::event::{Command, DownReason, Event};
use super::speaker::Speaker;

const WAIT: Duration = Duration::from_secs(20);

/// Logs with `RUST_LOG=debug cargo test ... -- --nocapture`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn quick(mut cfg: PeerConfig) -> PeerConfig {
    cfg.hold_time = 9;
    cfg.keepalive = 3;
    cfg.connect_retry = 1;
    cfg.backoff_min = 1;
    cfg.backoff_max = 2;
    cfg
}

async fn wait_for(rx: &mut mpsc::Receiver<Event>, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("event channel closed");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

struct Pair {
    a: Speaker,
    b: Speaker,
    a_rx: mpsc::Receiver<Event>,
    b_rx: mpsc::Receiver<Event>,
    a_to_b: mpsc::UnboundedSender<Command>,
    a_port: u16,
}

/// Speaker A (AS 65001, 127.0.0.1) and B (AS 65002, 127.0.0.2), both connecting out,
/// so the connection collision path runs too.
async fn pair(a_extra: &[PeerConfig]) -> Pair {
    pair_with(a_extra, 1024, 9).await
}

async fn pair_with(a_extra: &[PeerConfig], b_events: usize, hold: u16) -> Pair {
    init_tracing();
    let (a_tx, a_rx) = mpsc::channel(1024);
    let (b_tx, b_rx) = mpsc::channel(b_events);
    let mut a = Speaker::new(a_tx);
    let mut b = Speaker::new(b_tx);
    let a_port = a.listen("127.0.0.1:0".parse().unwrap()).unwrap().port();
    let b_port = b.listen("127.0.0.2:0".parse().unwrap()).unwrap().port();
    let mut to_b = quick(PeerConfig::new(
        ip("127.0.0.2"),
        65002,
        65001,
        Ipv4Addr::new(1, 1, 1, 1),
    ));
    to_b.remote_port = b_port;
    to_b.local_addr = Some(ip("127.0.0.1"));
    to_b.next_hop_v6 = Some("2001:db8::1".parse().unwrap());
    to_b.gtsm = true;
    let mut to_a = quick(PeerConfig::new(
        ip("127.0.0.1"),
        65001,
        65002,
        Ipv4Addr::new(2, 2, 2, 2),
    ));
    to_a.remote_port = a_port;
    to_a.local_addr = Some(ip("127.0.0.2"));
    to_a.gtsm = true;
    for c in [&mut to_b, &mut to_a] {
        c.hold_time = hold;
        c.keepalive = (hold / 3).max(1);
    }
    let a_to_b = a.add_peer(to_b).unwrap();
    for cfg in a_extra {
        a.add_peer(cfg.clone()).unwrap();
    }
    b.add_peer(to_a).unwrap();
    Pair {
        a,
        b,
        a_rx,
        b_rx,
        a_to_b,
        a_port,
    }
}

fn attrs() -> Arc<PathAttrs> {
    Arc::new(PathAttrs {
        as_path: AsPath::from_sequence([65100]),
        med: Some(5),
        ..PathAttrs::default()
    })
}

#[tokio::test]
async fn two_speakers_exchange_routes() {
    let mut p = pair(&[]).await;
    let ev = wait_for(&mut p.a_rx, |e| matches!(e, Event::Established { .. })).await;
    let Event::Established { peer, caps } = ev else {
        unreachable!()
    };
    assert_eq!(peer, ip("127.0.0.2"));
    assert_eq!(
        (caps.peer_as, caps.hold_time, caps.keepalive),
        (65002, 9, 3)
    );
    assert!(caps.four_octet_as && caps.route_refresh && caps.extended_message);
    assert_eq!(caps.families.len(), 2);
    wait_for(&mut p.b_rx, |e| matches!(e, Event::Established { .. })).await;

    let v4: IpNet = "10.1.0.0/16".parse().unwrap();
    let v6: IpNet = "2001:db8:1::/48".parse().unwrap();
    p.a_to_b
        .send(Command::Announce(vec![(v4, attrs()), (v6, attrs())]))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Event::Update { announced, .. } = wait_for(
            &mut p.b_rx,
            |e| matches!(e, Event::Update { announced, .. } if !announced.is_empty()),
        )
        .await
        {
            got.extend(announced);
        }
    }
    got.sort_by_key(|(p, _)| *p);
    let (p4, a4) = &got[0];
    assert_eq!(*p4, v4);
    assert_eq!(a4.as_path, AsPath::from_sequence([65001, 65100]));
    assert_eq!(a4.next_hop, Some(NextHop::V4(Ipv4Addr::new(127, 0, 0, 1))));
    assert_eq!(a4.med, Some(5));
    let (p6, a6) = &got[1];
    assert_eq!(*p6, v6);
    assert_eq!(a6.next_hop.unwrap().addr(), ip("2001:db8::1"));

    p.a_to_b.send(Command::Withdraw(vec![v4])).unwrap();
    let ev = wait_for(
        &mut p.b_rx,
        |e| matches!(e, Event::Update { withdrawn, .. } if !withdrawn.is_empty()),
    )
    .await;
    assert!(matches!(ev, Event::Update { withdrawn, .. } if withdrawn == vec![v4]));

    // Route refresh: B asks, A re-sends what it still announces (v6).
    p.b.commands(ip("127.0.0.1"))
        .unwrap()
        .send(Command::RouteRefresh)
        .unwrap();
    let ev = wait_for(
        &mut p.b_rx,
        |e| matches!(e, Event::Update { announced, .. } if !announced.is_empty()),
    )
    .await;
    assert!(matches!(ev, Event::Update { announced, .. } if announced[0].0 == v6));

    p.a_to_b.send(Command::Shutdown).unwrap();
    let ev = wait_for(&mut p.b_rx, |e| matches!(e, Event::Down { .. })).await;
    let Event::Down {
        reason: DownReason::NotificationReceived(n),
        stale_for,
        ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_message().as_deref(), Some("session shut down"));
    assert_eq!(stale_for, None);
    p.b.shutdown().await;
    p.a.shutdown().await;
}

#[tokio::test]
async fn garbage_sender_gets_notification_and_others_stay_up() {
    let mut garbage = PeerConfig::new(ip("127.0.0.3"), 65003, 65001, Ipv4Addr::new(1, 1, 1, 1));
    garbage.mode = ConnectMode::Passive;
    let mut p = pair(&[quick(garbage)]).await;
    wait_for(&mut p.b_rx, |e| matches!(e, Event::Established { .. })).await;

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = sock
        .connect(SocketAddr::new(ip("127.0.0.1"), p.a_port))
        .await
        .unwrap();
    // Our OPEN comes first; then garbage: a header with a broken marker.
    let mut bad = vec![0xffu8; 16];
    bad[5] = 0;
    bad.extend_from_slice(&[0, 19, 4]);
    s.write_all(&bad).await.unwrap();
    let notification = read_until_notification(&mut s).await;
    assert_eq!((notification.code, notification.subcode), (1, 1));

    // A bad length from the same peer: 1/2.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = sock
        .connect(SocketAddr::new(ip("127.0.0.1"), p.a_port))
        .await
        .unwrap();
    let mut bad = vec![0xffu8; 16];
    bad.extend_from_slice(&[0x20, 0, 4]);
    s.write_all(&bad).await.unwrap();
    let notification = read_until_notification(&mut s).await;
    assert_eq!((notification.code, notification.subcode), (1, 2));

    // The A-B session is unaffected: still passes routes, no Down.
    let v4: IpNet = "10.9.0.0/16".parse().unwrap();
    p.a_to_b
        .send(Command::Announce(vec![(v4, attrs())]))
        .unwrap();
    let ev = wait_for(&mut p.b_rx, |e| {
        matches!(e, Event::Update { .. } | Event::Down { .. })
    })
    .await;
    assert!(matches!(ev, Event::Update { .. }), "{ev:?}");
    while let Ok(ev) = p.a_rx.try_recv() {
        assert!(!matches!(ev, Event::Down { .. }), "{ev:?}");
    }
    p.a.shutdown().await;
    p.b.shutdown().await;
}

async fn read_until_notification(s: &mut TcpStream) -> Notification {
    let ctx = CodecCtx::default();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut head = [0u8; 19];
            s.read_exact(&mut head)
                .await
                .expect("connection closed before a NOTIFICATION");
            let len = u16::from_be_bytes([head[16], head[17]]) as usize;
            let mut msg = head.to_vec();
            msg.resize(len, 0);
            s.read_exact(&mut msg[19..]).await.unwrap();
            if let Ok(Message::Notification(n)) = decode_message(&msg, &ctx) {
                return n;
            }
        }
    })
    .await
    .expect("no NOTIFICATION")
}

/// A scripted peer: accepts our session's connection and sends `open`.
async fn fake_peer(open: Open) -> (TcpListener, PeerConfig, Open) {
    let l = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let mut cfg = quick(PeerConfig::new(
        ip("127.0.0.4"),
        65010,
        65001,
        Ipv4Addr::new(1, 1, 1, 1),
    ));
    cfg.remote_port = l.local_addr().unwrap().port();
    cfg.hold_time = 3;
    cfg.keepalive = 1;
    (l, cfg, open)
}

fn peer_open(asn: u32, hold: u16) -> Open {
    Open {
        asn: asn as u16,
        hold_time: hold,
        router_id: Ipv4Addr::new(4, 4, 4, 4),
        capabilities: vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::FourOctetAs(asn),
        ],
    }
}

async fn send(s: &mut TcpStream, m: Message, ctx: &CodecCtx) {
    s.write_all(&encode_message(&m, ctx).unwrap())
        .await
        .unwrap();
}

/// Runs a session against a fake peer that sends `open` (then a KEEPALIVE) and then
/// `after`; returns the NOTIFICATION the session sends.
async fn notification_for(open: Open, after: Vec<Vec<u8>>) -> Notification {
    let (l, cfg, open) = fake_peer(open).await;
    let (tx, _rx) = mpsc::channel(64);
    let mut sp = Speaker::new(tx);
    sp.add_peer(cfg).unwrap();
    let (mut s, _) = l.accept().await.unwrap();
    let ctx = CodecCtx {
        four_octet_as: true,
        ..CodecCtx::default()
    };
    send(&mut s, Message::Open(open), &ctx).await;
    send(&mut s, Message::Keepalive, &ctx).await;
    for raw in after {
        s.write_all(&raw).await.unwrap();
    }
    let n = read_until_notification(&mut s).await;
    sp.shutdown().await;
    n
}

#[tokio::test]
async fn hold_timer_expiry_sends_4_0() {
    // The fake peer goes silent after its KEEPALIVE: hold time 3 s.
    let n = notification_for(peer_open(65010, 3), vec![]).await;
    assert_eq!((n.code, n.subcode), (4, 0));
}

#[tokio::test]
async fn bad_peer_as_sends_2_2() {
    let n = notification_for(peer_open(65099, 90), vec![]).await;
    assert_eq!((n.code, n.subcode), (2, 2));
}

#[tokio::test]
async fn malformed_update_sends_3_x() {
    // UPDATE with a withdrawn-routes length running past the message.
    let mut bad = vec![0xffu8; 16];
    bad.extend_from_slice(&[0, 23, 2, 0, 9, 0, 0]);
    let n = notification_for(peer_open(65010, 90), vec![bad]).await;
    assert_eq!((n.code, n.subcode), (3, 1));
}

#[tokio::test]
async fn unexpected_open_in_established_is_fsm_error() {
    let ctx = CodecCtx::default();
    let again = encode_message(&Message::Open(peer_open(65010, 90)), &ctx).unwrap();
    let n = notification_for(peer_open(65010, 90), vec![again]).await;
    assert_eq!((n.code, n.subcode), (5, 3));
}

#[tokio::test]
async fn reconnects_after_failure() {
    let (l, cfg, open) = fake_peer(peer_open(65010, 90)).await;
    let (tx, mut rx) = mpsc::channel(64);
    let mut sp = Speaker::new(tx);
    sp.add_peer(cfg).unwrap();
    let ctx = CodecCtx {
        four_octet_as: true,
        ..CodecCtx::default()
    };
    for round in 0..2 {
        let (mut s, _) = l.accept().await.unwrap();
        send(&mut s, Message::Open(open.clone()), &ctx).await;
        send(&mut s, Message::Keepalive, &ctx).await;
        wait_for(&mut rx, |e| matches!(e, Event::Established { .. })).await;
        drop(s); // connection lost without NOTIFICATION
        let ev = wait_for(&mut rx, |e| matches!(e, Event::Down { .. })).await;
        assert!(
            matches!(
                ev,
                Event::Down {
                    reason: DownReason::ConnectionLost(_),
                    ..
                }
            ),
            "round {round}: {ev:?}"
        );
    }
    sp.shutdown().await;
}

/// A 2-octet-AS peer (no 4-octet capability) while our AS is 4-octet: our OPEN carries
/// AS_TRANS, our UPDATEs AS4_PATH, and its AS4_PATH is merged into what we report.
#[tokio::test]
async fn two_octet_peer_gets_as4_path() {
    init_tracing();
    let l = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let mut cfg = quick(PeerConfig::new(
        ip("127.0.0.5"),
        65010,
        4200000001,
        Ipv4Addr::new(1, 1, 1, 1),
    ));
    cfg.remote_port = l.local_addr().unwrap().port();
    cfg.families = vec![super::config::FamilyName::Ipv4Unicast];
    let (tx, mut rx) = mpsc::channel(64);
    let mut sp = Speaker::new(tx);
    let cmds = sp.add_peer(cfg).unwrap();
    let (mut s, _) = l.accept().await.unwrap();
    let two = CodecCtx::default();
    let open = Open {
        asn: 65010,
        hold_time: 90,
        router_id: Ipv4Addr::new(5, 5, 5, 5),
        capabilities: vec![Capability::Multiprotocol { afi: 1, safi: 1 }],
    };
    send(&mut s, Message::Open(open), &two).await;
    send(&mut s, Message::Keepalive, &two).await;
    let Event::Established { caps, .. } =
        wait_for(&mut rx, |e| matches!(e, Event::Established { .. })).await
    else {
        unreachable!()
    };
    assert!(!caps.four_octet_as);

    // Its route: AS_PATH 65010 23456 with AS4_PATH 4200000077.
    let mut update = vec![0xffu8; 16];
    let attrs: &[u8] = &[
        0x40, 1, 1, 0, // ORIGIN
        0x40, 2, 6, 2, 2, 0xfd, 0xf2, 0x5b, 0xa0, // AS_PATH 65010 23456
        0x40, 3, 4, 127, 0, 0, 5, // NEXT_HOP
        0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x4d, // AS4_PATH 4200000077
    ];
    let body_len = 2 + 2 + attrs.len() + 4;
    update.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
    update.push(2);
    update.extend_from_slice(&[0, 0, 0, attrs.len() as u8]);
    update.extend_from_slice(attrs);
    update.extend_from_slice(&[24, 192, 0, 2]);
    s.write_all(&update).await.unwrap();
    let ev = wait_for(&mut rx, |e| matches!(e, Event::Update { .. })).await;
    let Event::Update { announced, .. } = ev else {
        unreachable!()
    };
    assert_eq!(
        announced[0].1.as_path,
        AsPath::from_sequence([65010, 4200000077])
    );

    // Ours: read with a 2-octet decoder, the AS4_PATH restores the real path.
    let v4: IpNet = "10.1.0.0/16".parse().unwrap();
    let a = Arc::new(PathAttrs {
        as_path: AsPath::from_sequence([4200000099]),
        ..PathAttrs::default()
    });
    cmds.send(Command::Announce(vec![(v4, a)])).unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let mut head = [0u8; 19];
            s.read_exact(&mut head).await.unwrap();
            let len = u16::from_be_bytes([head[16], head[17]]) as usize;
            let mut msg = head.to_vec();
            msg.resize(len, 0);
            s.read_exact(&mut msg[19..]).await.unwrap();
            if let Ok(Message::Update(u)) = decode_message(&msg, &two)
                && !u.nlri.is_empty()
            {
                // The 2-octet AS_PATH itself holds AS_TRANS twice.
                assert!(msg.windows(6).any(|w| w == [2, 2, 0x5b, 0xa0, 0x5b, 0xa0]));
                return u;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        got.attrs.unwrap().as_path,
        AsPath::from_sequence([4200000001, 4200000099])
    );
    sp.shutdown().await;
}

/// An owner that stops reading events for longer than the hold time: the session slows
/// the peer down but keeps the session alive, and nothing is lost.
#[tokio::test]
async fn slow_owner_does_not_drop_the_session() {
    let mut p = pair_with(&[], 1, 3).await;
    wait_for(&mut p.b_rx, |e| matches!(e, Event::Established { .. })).await;
    let a = attrs();
    let routes: Vec<(IpNet, Arc<PathAttrs>)> = (0..20_000u32)
        .map(|i| {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap();
            (IpNet::V4(net), a.clone())
        })
        .collect();
    p.a_to_b.send(Command::Announce(routes)).unwrap();
    // B's owner sleeps through two hold times.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut seen = 0;
    while seen < 20_000 {
        match wait_for(&mut p.b_rx, |e| {
            matches!(e, Event::Update { .. } | Event::Down { .. })
        })
        .await
        {
            Event::Update { announced, .. } => seen += announced.len(),
            other => panic!("{other:?}"),
        }
    }
    while let Ok(ev) = p.a_rx.try_recv() {
        assert!(!matches!(ev, Event::Down { .. }), "{ev:?}");
    }
    p.a.shutdown().await;
    p.b.shutdown().await;
}

/// A peer that does not know capabilities (NOTIFICATION 2/4 to our OPEN): the next
/// attempt goes without them, and the session comes up for IPv4.
#[tokio::test]
async fn falls_back_to_an_open_without_capabilities() {
    init_tracing();
    let (l, cfg, open) = fake_peer(peer_open(65010, 90)).await;
    let (tx, mut rx) = mpsc::channel(64);
    let mut sp = Speaker::new(tx);
    sp.add_peer(cfg).unwrap();
    let two = CodecCtx::default();
    let (mut s, _) = l.accept().await.unwrap();
    assert!(!read_open(&mut s, &two).await.capabilities.is_empty());
    send(
        &mut s,
        Message::Notification(Notification::new(2, 4, vec![])),
        &two,
    )
    .await;
    drop(s);
    let (mut s, _) = l.accept().await.unwrap();
    assert!(read_open(&mut s, &two).await.capabilities.is_empty());
    let mut old = open;
    old.capabilities.clear();
    send(&mut s, Message::Open(old), &two).await;
    send(&mut s, Message::Keepalive, &two).await;
    let ev = wait_for(&mut rx, |e| matches!(e, Event::Established { .. })).await;
    let Event::Established { caps, .. } = ev else {
        unreachable!()
    };
    assert_eq!(caps.families, vec![super::codec::Family::Ipv4Unicast]);
    assert!(!caps.four_octet_as);
    sp.shutdown().await;
}

async fn read_open(s: &mut TcpStream, ctx: &CodecCtx) -> Open {
    let mut head = [0u8; 19];
    s.read_exact(&mut head).await.unwrap();
    let len = u16::from_be_bytes([head[16], head[17]]) as usize;
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    s.read_exact(&mut msg[19..]).await.unwrap();
    match decode_message(&msg, ctx) {
        Ok(Message::Open(o)) => o,
        other => panic!("{other:?}"),
    }
}

/// Full-table-sized feed between two of our speakers over loopback (release:
/// `cargo test --release session_throughput -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn session_throughput() {
    let mut p = pair(&[]).await;
    wait_for(&mut p.b_rx, |e| matches!(e, Event::Established { .. })).await;
    let a = attrs();
    let n = 1_000_000u32;
    let routes: Vec<(IpNet, Arc<PathAttrs>)> = (0..n)
        .map(|i| {
            (
                IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap()),
                a.clone(),
            )
        })
        .collect();
    let t = std::time::Instant::now();
    p.a_to_b.send(Command::Announce(routes)).unwrap();
    let mut seen = 0usize;
    while seen < n as usize {
        if let Some(Event::Update { announced, .. }) = p.b_rx.recv().await {
            seen += announced.len();
        }
    }
    let e = t.elapsed();
    eprintln!(
        "{seen} routes in {e:?}: {:.0} routes/s",
        seen as f64 / e.as_secs_f64()
    );
    p.a.shutdown().await;
    p.b.shutdown().await;
}

/// A colliding second connection (RFC 4271 §6.8) gets our OPEN at once: a peer that
/// waits for it before sending its own no longer waits 30 s for nothing, and the
/// connection of the higher identifier (the peer's) becomes the session.
#[tokio::test]
async fn a_colliding_connection_gets_our_open_at_once() {
    init_tracing();
    let (l, cfg, open) = fake_peer(peer_open(65010, 90)).await;
    let (tx, mut rx) = mpsc::channel(64);
    let mut sp = Speaker::new(tx);
    let listening = sp.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    sp.add_peer(cfg).unwrap();
    let ctx = CodecCtx {
        four_octet_as: true,
        ..CodecCtx::default()
    };
    // Our outbound connection: its OPEN arrives, the peer does not answer on it.
    let (mut first, _) = l.accept().await.unwrap();
    read_open(&mut first, &ctx).await;
    // The peer's own connection, from its address, waiting for our OPEN first.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let mut second = socket.connect(listening).await.unwrap();
    let ours = tokio::time::timeout(Duration::from_secs(5), read_open(&mut second, &ctx))
        .await
        .expect("our OPEN on the colliding connection");
    assert_eq!(ours.router_id, Ipv4Addr::new(1, 1, 1, 1));
    send(&mut second, Message::Open(open), &ctx).await;
    send(&mut second, Message::Keepalive, &ctx).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        wait_for(&mut rx, |e| matches!(e, Event::Established { .. })),
    )
    .await
    .expect("established on the peer's connection");
    sp.shutdown().await;
}
