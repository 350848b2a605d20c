//! Operating nva: the CLI against a running daemon, Prometheus metrics, SIGHUP reload.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use nva_tests::{
    Hub, NvaProcess, UdpSink, ping, require_root, send_flows_from, serial,
    topology::{NVA_CLIENT_PORT, SERVICE_V4, server_unique_v4, server_v4, server_v6},
    wait_until,
};

const METRICS: &str = "127.0.0.1:9450";

fn config(extra_routes: &str) -> String {
    format!(
        "[metrics]\nlisten = \"{METRICS}\"\n\
         [[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}]\n\
         [[routes]]\nprefix = \"fd00:100::/64\"\nnexthops = [{{ via = \"{}\" }}, {{ via = \"{}\" }}]\n{extra_routes}",
        server_v4(1),
        server_v6(1),
        server_v6(2)
    )
}

fn scrape(hub: &Hub) -> String {
    hub.nva.run(|| {
        let mut s = TcpStream::connect(METRICS).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn cli_and_metrics_against_a_running_daemon() {
    if !require_root("cli_and_metrics_against_a_running_daemon") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let nva = NvaProcess::start(&hub.nva, &config("")).unwrap();

    let status = nva.cli(&["status"]).unwrap();
    assert_eq!(status["interfaces"].as_array().unwrap().len(), 3);
    assert!(
        status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["attached"] == true)
    );

    // `nva routes ADDRESS` is a longest-prefix match, cross-checked with the data plane.
    let hit = nva.cli(&["routes", "10.100.5.5"]).unwrap();
    assert_eq!(hit["route"]["prefix"], "10.100.0.0/16");
    assert_eq!(hit["route"]["action"], "forward");
    assert_eq!(hit["dataplane"]["action"], 1, "ROUTE_FORWARD in FIB_V4");
    let local = nva.cli(&["routes", "10.0.1.1"]).unwrap();
    assert_eq!(local["route"]["action"], "local");
    let v6 = nva.cli(&["routes", "fd00:100::77"]).unwrap();
    assert_eq!(v6["route"]["nexthops"].as_array().unwrap().len(), 2);
    let miss = nva.cli(&["routes", "192.0.2.1"]).unwrap();
    assert!(miss["route"].is_null() && miss["dataplane"].is_null());
    let exact = nva.cli(&["routes", "10.100.0.0/16"]).unwrap();
    assert_eq!(exact.as_array().unwrap().len(), 1);
    let err = nva.cli_raw(&["routes", "not-an-address"]).unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("neither an address nor a prefix"));

    // Traffic, then counters through the CLI (JSON and table) and through metrics.
    assert_eq!(
        ping(&hub.client, IpAddr::V4(SERVICE_V4), 3, None)
            .unwrap()
            .received,
        3
    );
    let sink = UdpSink::start(hub.server(1), &[SocketAddr::new(SERVICE_V4.into(), 7000)]).unwrap();
    let ports: Vec<u16> = (0..10).map(|i| 45000 + i).collect();
    send_flows_from(
        &hub.client,
        SocketAddr::new(SERVICE_V4.into(), 7000),
        &ports,
        10,
        None,
    )
    .unwrap();
    assert_eq!(sink.wait_for(100, Duration::from_secs(5)), 100);
    let counters = nva.counters().unwrap();
    let forwarded = counters.get(NVA_CLIENT_PORT, "forwarded");
    assert!(forwarded >= 100);
    let stats = nva.cli(&["stats"]).unwrap();
    assert!(stats["interfaces"][0]["counters"]["forwarded"]["pps"].is_number());
    let table = String::from_utf8(nva.cli_raw(&["stats"]).unwrap().stdout).unwrap();
    assert!(
        table.contains("forwarded") && table.contains("PPS"),
        "{table}"
    );
    let routes_table = String::from_utf8(nva.cli_raw(&["routes"]).unwrap().stdout).unwrap();
    assert!(routes_table.contains("10.100.0.0/16"), "{routes_table}");
    let nexthops = nva.cli(&["nexthops"]).unwrap();
    assert!(
        nexthops
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["via"] == server_v4(1).to_string())
    );

    let text = scrape(&hub);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let scraped = metric(
        &text,
        "nva_packets_total{interface=\"c0\",reason=\"forwarded\"}",
    )
    .unwrap();
    assert!(scraped >= forwarded as f64, "{scraped} < {forwarded}");
    assert_eq!(
        metric(&text, "nva_routes{family=\"ipv4\",source=\"static\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "nva_nexthop_live{{via=\"{}\",interface=\"s1\"}}",
                server_v4(1)
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "nva_interface_up{interface=\"s2\"}"),
        Some(1.0)
    );
    assert!(metric(&text, "nva_fib_updates_total").unwrap() >= 2.0);
}

/// Sends `count` datagrams to `dst`, one per millisecond, from one socket (one flow).
fn paced(hub: &Hub, dst: SocketAddr, count: u32) -> std::thread::JoinHandle<u32> {
    hub.client.spawn_thread(move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 46000)).unwrap();
        s.connect(dst).unwrap();
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_millis(i as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            s.send(&i.to_be_bytes()).unwrap();
        }
        count
    })
}

fn sighup(nva: &NvaProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &nva.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_reload_changes_a_route_without_touching_the_others() {
    if !require_root("sighup_reload_changes_a_route_without_touching_the_others") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let other = format!(
        "[[routes]]\nprefix = \"{}/32\"\naction = \"blackhole\"\n",
        server_unique_v4(2)
    );
    let nva = NvaProcess::start(&hub.nva, &config(&other)).unwrap();
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let moved = SocketAddr::new(server_unique_v4(2).into(), 7001);
    let sink1 = UdpSink::start(hub.server(1), &[service]).unwrap();
    let sink2 = UdpSink::start(hub.server(2), &[moved]).unwrap();
    let group_before = nva.cli(&["routes", "10.100.0.1"]).unwrap()["route"]["group"].clone();

    // Before: the blackhole route drops.
    send_flows_from(&hub.client, moved, &[47000], 5, None).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink2.count(), 0);
    assert_eq!(
        nva.counters()
            .unwrap()
            .get(NVA_CLIENT_PORT, "dropped-blackhole"),
        5
    );

    // Continuous traffic on the unchanged route while the config is reloaded.
    let sender = paced(&hub, service, 3000);
    std::thread::sleep(Duration::from_millis(800));
    let changed = format!(
        "[[routes]]\nprefix = \"{}/32\"\nnexthops = [{{ via = \"{}\" }}]\n",
        server_unique_v4(2),
        server_v4(2)
    );
    std::fs::write(nva.config_path(), config(&changed)).unwrap();
    sighup(&nva);
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let r = nva.cli(&["routes", &server_unique_v4(2).to_string()])?;
        Ok(r["route"]["action"] == "forward")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    let sent = sender.join().unwrap();
    assert_eq!(
        sink1.wait_for(sent as usize, Duration::from_secs(5)),
        sent as usize,
        "no packet of the unchanged route was lost during the reload"
    );
    let group_after = nva.cli(&["routes", "10.100.0.1"]).unwrap()["route"]["group"].clone();
    assert_eq!(
        group_before, group_after,
        "the unchanged route was not rewritten"
    );

    // After: the changed route forwards to server 2.
    send_flows_from(&hub.client, moved, &[47001], 5, None).unwrap();
    assert_eq!(sink2.wait_for(5, Duration::from_secs(5)), 5);

    // A bad file on SIGHUP changes nothing and the daemon keeps running.
    std::fs::write(nva.config_path(), "[[interfaces]]\nname = 42\n").unwrap();
    sighup(&nva);
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(nva.log().contains("configuration not reloaded"))
    })
    .unwrap();
    let r = nva
        .cli(&["routes", &server_unique_v4(2).to_string()])
        .unwrap();
    assert_eq!(r["route"]["action"], "forward");
    assert!(nva.log().contains("interfaces[0].name") || nva.log().contains("name"));
}
