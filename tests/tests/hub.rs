//! The Azure hub (see `nva_tests::azure`): two single-NIC nva instances behind a route
//! server (BIRD), an ExpressRoute-like gateway (GoBGP) and a fabric with ECMP, with
//! live traffic between spokes and on-prem through the NVAs.
use std::time::{Duration, Instant};

use nva_tests::{
    NvaProcess,
    azure::{
        AzureHub, BRANCH, ONPREM, SPOKE1, SPOKE2, daemons, deliver, fabric_nexthops, nva_config,
        sink,
    },
    paced, require_root, sequence_numbers, serial, wait_until,
};

const WAIT: Duration = Duration::from_secs(40);

/// nva's answer to `nva routes ADDRESS`.
fn route(nva: &NvaProcess, addr: &str) -> serde_json::Value {
    nva.cli(&["routes", addr]).unwrap_or_default()
}

fn learned_recursively(nva: &NvaProcess, addr: &str, bgp_next_hops: &[&str]) -> bool {
    let r = route(nva, addr);
    let via: Vec<String> = r["route"]["resolved_via"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["next_hop"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    r["route"]["source"] == "bgp"
        && r["route"]["nexthops"] == serde_json::json!(["10.0.1.1"])
        && via == bgp_next_hops
}

#[test]
fn hub_nvas_forward_what_the_route_server_teaches() {
    if !require_root("hub_nvas_forward_what_the_route_server_teaches") {
        return;
    }
    let _g = serial();
    let lab = AzureHub::build().unwrap();
    let d = daemons(&lab).unwrap();
    let mut nvas: Vec<NvaProcess> = (1..=2)
        .map(|k| NvaProcess::start(&lab.nvas[k - 1], &nva_config(k, false)).unwrap())
        .collect();
    let diagnose = |nvas: &[NvaProcess]| {
        format!(
            "rs1:\n{}\n{}\nfabric:\n{}\n{}\nergw:\n{}\nnva1 bgp:\n{}\nnva1 routes:\n{}\nnva1 log:\n{}",
            d.rs[0].birdc(&["show", "protocols"]),
            d.rs[0].birdc(&["show", "route", "all"]),
            d.fabric.birdc(&["show", "protocols"]),
            d.fabric.birdc(&["show", "route", "all"]),
            d.ergw.gobgp(&["neighbor"]),
            nvas[0].cli(&["bgp"]).unwrap_or_default(),
            nvas[0].cli(&["routes"]).unwrap_or_default(),
            nvas[0].log()
        )
    };

    // Every learned route is installed, resolved through the /32s (spokes, next hop
    // the route servers) or the VM's default route (on-prem, next hop the gateway).
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(nvas.iter().all(|n| {
            learned_recursively(n, SPOKE1, &["10.0.255.4", "10.0.255.5"])
                && learned_recursively(n, SPOKE2, &["10.0.255.4", "10.0.255.5"])
                && learned_recursively(n, ONPREM, &["10.0.200.4"])
        }) && fabric_nexthops(&lab, "10.0.0.0/8") == ["10.0.1.4", "10.0.1.5"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", diagnose(&nvas)));
    let paths = nvas[0].cli(&["bgp", "10.1.0.0/16"]).unwrap();
    assert!(
        paths
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["resolved"] == true && p["gateways"] == serde_json::json!(["10.0.1.1"])),
        "{paths}"
    );
    let text = nvas[0].cli_raw(&["routes", ONPREM]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("via 10.0.200.4 (recursive via 0.0.0.0/0 (kernel)) -> 10.0.1.1"),
        "{text}"
    );

    // Split horizon over the route server's endpoints: even with an export policy
    // that strips 65515, nothing learned from one endpoint goes to the other.
    for (k, rs) in d.rs.iter().enumerate() {
        for from in ["nva1", "nva2"] {
            let leaked = rs.birdc(&["show", "route", "protocol", from]);
            assert!(
                !leaked.contains("10.1.0.0/16")
                    && !leaked.contains("10.2.0.0/16")
                    && !leaked.contains("192.168.50.0/24"),
                "rs{} got a hub route back from {from}:\n{leaked}",
                k + 1
            );
            assert!(leaked.contains("10.0.0.0/8"), "{leaked}");
        }
    }

    // Two route-server domains: the hub's routes reach the Virtual WAN hub without 65515,
    // the Virtual WAN's reach the hub without 65520, and neither comes back to where it
    // was learned.
    let vwan_from_nva1 = || d.vwan.birdc(&["show", "route", "all", "protocol", "nva1"]);
    let hub_from_nva1 = || d.rs[0].birdc(&["show", "route", "all", "protocol", "nva1"]);
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(vwan_from_nva1().contains("10.1.0.0/16") && hub_from_nva1().contains("10.50.0.0/16"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", vwan_from_nva1(), hub_from_nva1()));
    for (routes, reserved) in [(vwan_from_nva1(), "65515"), (hub_from_nva1(), "65520")] {
        assert!(!routes.contains(reserved), "{reserved} leaked:\n{routes}");
    }
    assert!(!vwan_from_nva1().contains("10.50.0.0/16"));

    // Traffic in every direction goes through the NVAs in XDP (hairpin, XDP_TX).
    let onprem = sink(&lab.ergw, ONPREM).unwrap();
    let spoke1 = sink(&lab.spokes[0], SPOKE1).unwrap();
    let spoke2 = sink(&lab.spokes[1], SPOKE2).unwrap();
    let before: Vec<_> = nvas.iter().map(|n| n.counters().unwrap()).collect();
    let explain = |what: &str, got: usize| {
        if got != 500 {
            panic!(
                "{what}: {got} of 500 arrived\nnva1 stats: {}\nnva2 stats: {}\nfabric:\n{}\n{}\n{}\nnva1 neigh:\n{}",
                nvas[0].cli(&["stats"]).unwrap_or_default(),
                nvas[1].cli(&["stats"]).unwrap_or_default(),
                lab.fabric.ip("rule").unwrap_or_default(),
                lab.fabric.ip("route show table all").unwrap_or_default(),
                lab.fabric.ip("-s link").unwrap_or_default(),
                lab.nvas[0].ip("neigh").unwrap_or_default(),
            );
        }
    };
    // The branch behind the NVAs: redirected between their two NICs, both ways.
    let branch = sink(&lab.branch, BRANCH).unwrap();
    for (what, from, to, dst) in [
        ("spoke1 -> on-prem", &lab.spokes[0], &onprem, ONPREM),
        ("on-prem -> spoke1", &lab.ergw, &spoke1, SPOKE1),
        ("spoke1 -> spoke2", &lab.spokes[0], &spoke2, SPOKE2),
        ("spoke1 -> branch", &lab.spokes[0], &branch, BRANCH),
        ("branch -> spoke1", &lab.branch, &spoke1, SPOKE1),
    ] {
        explain(what, deliver(from, to, dst, 500));
    }
    let mut tx_total = 0;
    let mut redirected = 0;
    for (k, nva) in nvas.iter().enumerate() {
        let c = nva.counters().unwrap().since(&before[k]);
        let tx = c.get("eth0", "tx");
        eprintln!(
            "nva{}: tx {tx}, passed-no-route {}, passed-neigh {}",
            k + 1,
            c.get("eth0", "passed-no-route"),
            c.get("eth0", "passed-neigh")
        );
        // N-active: the fabric spreads flows over both NVAs.
        assert!(tx > 100, "nva{} carried {tx} packets", k + 1);
        assert_eq!(c.get("eth0", "passed-no-route"), 0);
        tx_total += tx;
        redirected += c.get("eth0", "forwarded") + c.get("eth1", "forwarded");
        assert_eq!(c.get("eth1", "passed-no-route"), 0);
    }
    assert!(tx_total >= 1500, "{tx_total} of 1500 hairpinned in XDP");
    assert!(redirected >= 1000, "{redirected} of 1000 redirected in XDP");

    // Graceful stop of nva2 under traffic: it withdraws, the fabric moves its flows.
    let sent = paced(&lab.spokes[0], ONPREM, 4000, Duration::from_millis(1));
    onprem.clear();
    std::thread::sleep(Duration::from_millis(800));
    let stopped_at = Instant::now();
    nvas[1].stop().unwrap();
    let sent = sent.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = sequence_numbers(&onprem);
    let lost = (0..sent.len() as u32).filter(|n| !got.contains(n)).count();
    eprintln!(
        "hub failover, SIGTERM of nva2: {lost} of {} datagrams lost (stop took {:?})",
        sent.len(),
        stopped_at.elapsed()
    );
    assert_eq!(lost, 0, "a graceful stop loses nothing");
    // And nva1 carried the moved flows in XDP, its routes unaffected.
    let c = nvas[0].counters().unwrap().since(&before[0]);
    assert_eq!(c.get("eth0", "passed-no-route"), 0);
    assert!(learned_recursively(&nvas[0], ONPREM, &["10.0.200.4"]));
    assert_eq!(fabric_nexthops(&lab, "10.0.0.0/8"), ["10.0.1.4"]);

    // nva2 back as the passive one (its AS prepended towards the hub): the fabric sends
    // everything to nva1. Then nva1's VM fails (its NIC goes, nva is SIGKILLed): the
    // route servers' hold time (3 s here, 180 s in Azure) decides, and the passive one
    // takes over. (A SIGKILL alone loses nothing: the kernel forwards on with nva's
    // mirrored routes.)
    nvas[1] = NvaProcess::start(&lab.nvas[1], &nva_config(2, true)).unwrap();
    wait_until(WAIT, Duration::from_millis(200), || {
        let passive = d.rs[0]
            .birdc(&["show", "route", "all", "protocol", "nva2"])
            .contains("65001 65001 65001 65001");
        Ok(passive && fabric_nexthops(&lab, "192.168.0.0/16") == ["10.0.1.4"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", diagnose(&nvas)));
    let sent = paced(&lab.spokes[0], ONPREM, 8000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(800));
    onprem.clear();
    let killed_at = Instant::now();
    lab.nvas[0].set_link("eth0", false).unwrap();
    nvas[0].kill().unwrap();
    let sent = sent.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = sequence_numbers(&onprem);
    let lost: Vec<u32> = (0..sent.len() as u32)
        .filter(|n| sent[*n as usize] >= killed_at && !got.contains(n))
        .collect();
    let last = lost.iter().map(|n| sent[*n as usize]).max();
    eprintln!(
        "hub failover, VM failure of the active nva1, passive nva2 takes over: {} datagrams \
         lost, the last {:?} after the failure",
        lost.len(),
        last.map(|t| t.duration_since(killed_at))
    );
    // Everything sent a second after the hold time arrived.
    let settled = killed_at + Duration::from_secs(4);
    assert!(
        lost.iter().all(|n| sent[*n as usize] < settled),
        "datagrams lost after the route servers' hold time"
    );
    assert_eq!(fabric_nexthops(&lab, "10.0.0.0/8"), ["10.0.1.5"]);
}
