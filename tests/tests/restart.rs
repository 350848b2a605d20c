//! Hitless control-plane restart: nva is killed (SIGKILL) and started again while
//! traffic flows; the pinned XDP links keep forwarding, the new nva takes over with the
//! same hash seed, and not one packet is lost or moved to another next hop.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use nva_tests::{
    Hub, NvaProcess, UdpSink, require_root, serial,
    topology::{NVA_CLIENT_PORT, SERVICE_V4, server_v4},
    wait_until,
};

fn config(pin: &std::path::Path) -> String {
    format!(
        "[dataplane]\npin_path = \"{}\"\n\
         [[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}, {{ via = \"{}\" }}]\n",
        pin.join("nva").display(),
        server_v4(1),
        server_v4(2)
    )
}

fn xdp_attached(hub: &Hub) -> bool {
    hub.nva.ip("link show dev c0").unwrap().contains("xdp")
}

#[test]
fn killing_and_restarting_nva_loses_no_packet() {
    if !require_root("killing_and_restarting_nva_loses_no_packet") {
        return;
    }
    let _g = serial();
    let bpffs = nva_tests::bpffs::BpfFs::mount().unwrap();
    let hub = Hub::build(2).unwrap();
    let cfg = config(&bpffs.0);
    let mut first = NvaProcess::start(&hub.nva, &cfg).unwrap();
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]).unwrap())
        .collect();
    // Let the next hops resolve so everything is forwarded in XDP from the start.
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let nhs = first.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .all(|n| n["resolved"] == true))
    })
    .unwrap();

    // 20 flows, 4000 datagrams over ~4 s, round-robin.
    const FLOWS: u16 = 20;
    const TOTAL: u32 = 4000;
    let sender = hub.client.spawn_thread(move || {
        let socks: Vec<UdpSocket> = (0..FLOWS)
            .map(|i| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 49000 + i)).unwrap();
                s.connect(service).unwrap();
                s
            })
            .collect();
        let start = Instant::now();
        for n in 0..TOTAL {
            let due = start + Duration::from_millis(n as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let flow = (n % FLOWS as u32) as u16;
            let mut payload = flow.to_be_bytes().to_vec();
            payload.extend_from_slice(&n.to_be_bytes());
            socks[flow as usize].send(&payload).unwrap();
        }
    });

    std::thread::sleep(Duration::from_millis(1000));
    first.kill().unwrap();
    assert!(xdp_attached(&hub), "the pinned link keeps XDP attached");
    std::thread::sleep(Duration::from_millis(500));
    let mut second = NvaProcess::start(&hub.nva, &cfg).unwrap();
    sender.join().unwrap();

    let received: usize = sinks
        .iter()
        .map(|s| s.wait_for(0, Duration::ZERO))
        .sum::<usize>();
    let all = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= TOTAL as usize)
    });
    let got: usize = sinks.iter().map(UdpSink::count).sum();
    assert!(
        all.is_ok(),
        "lost {} of {TOTAL} datagrams ({received} at first look)",
        TOTAL as usize - got
    );
    assert_eq!(got, TOTAL as usize);

    // Every flow stayed on one server through the restart (the hash seed was kept).
    let mut servers: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for (k, sink) in sinks.iter().enumerate() {
        for d in sink.received() {
            let flow = u16::from_be_bytes([d.payload[0], d.payload[1]]);
            servers.entry(flow).or_default().insert(k + 1);
        }
    }
    assert_eq!(servers.len(), FLOWS as usize);
    for (flow, s) in &servers {
        assert_eq!(s.len(), 1, "flow {flow} went to servers {s:?}");
    }
    // Counters are pinned too: the new nva sees the whole run.
    assert!(second.counters().unwrap().get(NVA_CLIENT_PORT, "forwarded") >= TOTAL as u64);

    // A graceful stop detaches and removes the pins.
    second.stop().unwrap();
    assert!(!xdp_attached(&hub));
    let left: Vec<_> = std::fs::read_dir(bpffs.0.join("nva")).unwrap().collect();
    assert!(left.is_empty(), "pins left: {left:?}");
}
