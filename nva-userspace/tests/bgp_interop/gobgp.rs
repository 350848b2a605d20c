//! Interop with GoBGP (a second implementation): GoBGP as AS 65520 in one namespace,
//! our session in another. Root only; skipped otherwise.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use nva::bgp::codec::{AsPath, Community, NextHop, PathAttrs};
use nva::bgp::config::PeerConfig;
use nva::bgp::event::{Command, DownReason, Event};
use nva_testkit::Gobgp;

use crate::env::{linked, listening_speaker, skip_unless};

const GOBGP_CONF: &str = r#"
[global.config]
  as = 65520
  router-id = "10.0.0.2"
  port = 179
  local-address-list = ["10.0.0.2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.1"
    peer-as = 65001
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

const WAIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn gobgp_interop() {
    if skip_unless(&["ip", "gobgpd", "gobgp"]) {
        return;
    }
    let (ours, theirs) = linked(
        &["10.0.0.1/24", "2001:db8::1/64"],
        &["10.0.0.2/24", "2001:db8::2/64"],
    );
    let gobgp = Gobgp::start(&theirs, GOBGP_CONF).expect("start gobgpd");
    gobgp.gobgp(&[
        "global",
        "rib",
        "add",
        "192.0.2.0/24",
        "origin",
        "igp",
        "community",
        "65520:7",
    ]);
    gobgp.gobgp(&[
        "global",
        "rib",
        "-a",
        "ipv6",
        "add",
        "2001:db8:100::/48",
        "nexthop",
        "2001:db8::2",
    ]);

    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let (ev_tx, ev_rx) = std::sync::mpsc::channel::<Event>();
    let speaker = ours.spawn_async(move || async move {
        let (mut speaker, mut rx) = listening_speaker("10.0.0.1:179", 1024);
        let mut cfg = PeerConfig::new(ip("10.0.0.2"), 65520, 65001, Ipv4Addr::new(10, 0, 0, 1));
        cfg.hold_time = 9;
        cfg.keepalive = 3;
        cfg.connect_retry = 2;
        cfg.next_hop_v6 = Some("2001:db8::1".parse().unwrap());
        let peer = speaker.add_peer(cfg).expect("peer");
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    let down = matches!(ev, Event::Down { .. });
                    let _ = ev_tx.send(ev);
                    if down { break; }
                }
                Some(cmd) = cmd_rx.recv() => { let _ = peer.send(cmd); }
            }
        }
        speaker.shutdown().await;
    });
    let next = || ev_rx.recv_timeout(WAIT).expect("no event from the session");

    let ev = next();
    let Event::Established { caps, .. } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(caps.peer_as, 65520);
    assert_eq!(caps.families.len(), 2);
    gobgp
        .wait_for(&["neighbor"], WAIT, |o| o.contains("Establ"))
        .unwrap();

    // GoBGP's routes, until both have arrived.
    let mut routes: Vec<(IpNet, Arc<PathAttrs>)> = Vec::new();
    while routes.len() < 2 {
        if let Event::Update { announced, .. } = next() {
            routes.extend(announced);
        }
    }
    routes.sort_by_key(|(p, _)| *p);
    assert_eq!(routes[0].0, "192.0.2.0/24".parse::<IpNet>().unwrap());
    assert_eq!(
        routes[0].1.next_hop,
        Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2)))
    );
    assert_eq!(routes[0].1.as_path, AsPath::from_sequence([65520]));
    assert_eq!(routes[0].1.communities, vec![Community::new(65520, 7)]);
    assert_eq!(routes[1].0, "2001:db8:100::/48".parse::<IpNet>().unwrap());
    assert_eq!(
        routes[1].1.next_hop.map(|n| n.addr()),
        Some(ip("2001:db8::2"))
    );

    // Ours reach GoBGP with our AS prepended.
    let attrs = Arc::new(PathAttrs {
        as_path: AsPath::from_sequence([65100]),
        ..PathAttrs::default()
    });
    let v4: IpNet = "198.51.100.0/24".parse().unwrap();
    let v6: IpNet = "2001:db8:200::/48".parse().unwrap();
    cmd_tx
        .send(Command::Announce(vec![(v4, attrs.clone()), (v6, attrs)]))
        .unwrap();
    let out = gobgp
        .wait_for(&["global", "rib"], WAIT, |o| o.contains("198.51.100.0/24"))
        .unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("198.51.100.0/24"))
        .unwrap_or_default();
    assert!(
        line.contains("10.0.0.1") && line.contains("65001 65100"),
        "{line}"
    );
    let out = gobgp
        .wait_for(&["global", "rib", "-a", "ipv6"], WAIT, |o| {
            o.contains("2001:db8:200::/48")
        })
        .unwrap();
    assert!(out.contains("2001:db8::1"), "{out}");

    cmd_tx.send(Command::Withdraw(vec![v4])).unwrap();
    gobgp
        .wait_for(&["global", "rib"], WAIT, |o| !o.contains("198.51.100.0/24"))
        .unwrap();

    // GoBGP withdraws one of its routes.
    gobgp.gobgp(&["global", "rib", "del", "192.0.2.0/24"]);
    loop {
        if let Event::Update { withdrawn, .. } = next()
            && withdrawn.contains(&"192.0.2.0/24".parse().unwrap())
        {
            break;
        }
    }

    // Administrative shutdown on GoBGP's side: Down with its Cease.
    gobgp.gobgp(&["neighbor", "10.0.0.1", "disable"]);
    loop {
        match next() {
            Event::Down {
                reason: DownReason::NotificationReceived(n),
                ..
            } => {
                assert_eq!(n.code, 6, "{n}");
                break;
            }
            Event::Down { reason, .. } => panic!("Down without a Cease: {reason}"),
            _ => {}
        }
    }
    speaker.join().expect("speaker thread");
}
