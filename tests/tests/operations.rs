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

/// A script in `dir` that runs nva under `command` (e.g. `prlimit ...`), for
/// `NvaProcess::start_with_binary`.
fn wrapped_nva(dir: &nva_tests::ScratchDir, command: &str) -> std::path::PathBuf {
    let wrapper = dir.path().join("nva");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {command} {} \"$@\"\n",
            nva_tests::nva_binary().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
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
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(nva.socket())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the control socket is root's alone by default"
        );
    }
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
    // Route-change latency as a histogram whose buckets add up; build and process
    // metrics as other exporters have them.
    let count = metric(&text, "nva_fib_update_seconds_count").unwrap();
    assert!(count >= 2.0, "{text}");
    assert_eq!(
        metric(&text, "nva_fib_update_seconds_bucket{le=\"+Inf\"}"),
        Some(count)
    );
    assert!(metric(&text, "nva_fib_update_seconds_bucket{le=\"0.1\"}").unwrap() <= count);
    assert_eq!(
        metric(
            &text,
            &format!(
                "nva_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert!(metric(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(metric(&text, "process_open_fds").unwrap() > 3.0);
    assert!(metric(&text, "process_start_time_seconds").unwrap() > 1.7e9);

    // A second `nva run` on the same control socket refuses before touching anything:
    // the first one's kernel routes stay, and it still answers.
    let kernel_routes = || hub.nva.ip("route show proto 250").unwrap();
    let before_second = kernel_routes();
    assert!(!before_second.is_empty());
    let second = hub
        .nva
        .exec(&[
            nva_tests::nva_binary().unwrap().to_str().unwrap(),
            "run",
            "--config",
            nva.config_path().to_str().unwrap(),
            "--socket",
            nva.socket().to_str().unwrap(),
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("another nva is running"), "{stderr}");
    assert_eq!(kernel_routes(), before_second);
    assert!(nva.cli(&["status"]).is_ok());

    // `nva routes | head -0`: a closed pipe ends the client quietly, like other tools
    // (it panicked with exit code 101 before).
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills two fds we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds from pipe(2), each owned once.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let out = std::process::Command::new(nva_tests::nva_binary().unwrap())
        .args(["routes", "--socket"])
        .arg(nva.socket())
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
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

    // `nva reload` (the service's ExecReload) answers: the error and a non-zero exit
    // for the bad file, then what changed for a good one.
    let out = nva.cli_raw(&["reload"]).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid config file") && stderr.contains("name = 42"),
        "{stderr}"
    );
    std::fs::write(
        nva.config_path(),
        config("[[routes]]\nprefix = \"10.99.0.0/16\"\naction = \"blackhole\"\n"),
    )
    .unwrap();
    let out = nva.cli_raw(&["reload"]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded: static routes +"), "{stdout}");
    assert_eq!(
        nva.cli(&["routes", "10.99.1.1"]).unwrap()["route"]["action"],
        "blackhole"
    );
}

/// Sends `request` to the metrics endpoint and returns the whole response.
fn http(hub: &Hub, request: &str) -> String {
    let request = request.to_string();
    hub.nva.run(move || {
        let mut s = TcpStream::connect(METRICS).expect("metrics endpoint");
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

/// No other door can take routing down: a pile of idle connections to the metrics port
/// (with few file descriptors, as under a unit's LimitNOFILE) and an endless line on the
/// control socket leave the CLI answering and the self check healthy (before, accept
/// failed in a loop, `nva status` failed and the self check saw "0 XDP links").
#[test]
fn idle_connections_and_long_lines_never_disturb_the_daemon() {
    if !require_root("idle_connections_and_long_lines_never_disturb_the_daemon") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    // nva with 256 file descriptors.
    let dir = nva_tests::ScratchDir::new("nva-limited").unwrap();
    let wrapper = wrapped_nva(&dir, "prlimit --nofile=256:256");
    let config = format!("[control]\ngroup = \"daemon\"\n{}", config(""));
    let nva = NvaProcess::start_with_binary(&wrapper, &hub.nva, &config).unwrap();
    // The control socket belongs to the configured group (root's alone otherwise).
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(nva.socket()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // SAFETY: getgrnam(3) with a valid C string, read at once.
        let gid = unsafe { (*libc::getgrnam(c"daemon".as_ptr())).gr_gid };
        assert_eq!(meta.gid(), gid);
    }

    let idle: Vec<TcpStream> = hub.nva.run(|| {
        (0..400)
            .filter_map(|_| TcpStream::connect(METRICS).ok())
            .collect()
    });
    assert!(idle.len() >= 100, "{} connections", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let status = nva.cli(&["status"]).expect("nva status answers");
    assert!(status["interfaces"].is_array());
    let health = nva.cli(&["health"]).unwrap();
    assert_eq!(health["healthy"], true, "{health}");
    // Scrapes are served again once the idle connections time out (they hold at most
    // a bounded number of slots, for a few seconds).
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        Ok(http(&hub, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200 OK"))
    })
    .unwrap();
    drop(idle);

    // HEAD gets the headers, other methods 405, other paths 404.
    let head = http(&hub, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(http(&hub, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http(&hub, "GET /secret HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));

    // An 8 MiB line without a newline on the control socket is refused, not buffered.
    let socket = nva.socket().to_path_buf();
    let reply = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..8 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .join()
    .unwrap();
    assert!(reply.contains("longer than"), "{reply}");
    assert!(nva.cli(&["status"]).is_ok());
}

/// Under systemd (stderr is the journal) every log line carries its syslog priority
/// (`journalctl -p warning` finds the warnings), and one line at start says what runs:
/// version, config, control socket, metrics, FIB structures.
#[test]
fn journal_priorities_and_the_startup_line() {
    if !require_root("journal_priorities_and_the_startup_line") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    // SAFETY: tests in this binary hold `serial()`; no other thread reads the
    // environment while the child is spawned.
    unsafe { std::env::set_var("JOURNAL_STREAM", "8:12345") };
    let started = NvaProcess::start(&hub.nva, &config(""));
    // SAFETY: as above.
    unsafe { std::env::remove_var("JOURNAL_STREAM") };
    let nva = started.unwrap();
    let log = nva.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>',
            "no priority: {l}"
        );
    }
    let start = lines
        .iter()
        .find(|l| l.contains("nva started"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(start.starts_with("<6>"), "{start}");
    for field in ["version=", "config=", "control=", "metrics=", "fib="] {
        assert!(start.contains(field), "{field} missing: {start}");
    }
}

/// `NVA_LOG_FORMAT=json` (or `--log-format json`): one JSON object per line, with the
/// level, the message and the fields, for log shippers; under the journal each keeps its
/// syslog priority in front.
#[test]
fn json_log_lines() {
    if !require_root("json_log_lines") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    for journal in [false, true] {
        // SAFETY: tests in this binary hold `serial()`; no other thread reads the
        // environment while the child is spawned.
        unsafe {
            std::env::set_var("NVA_LOG_FORMAT", "json");
            if journal {
                std::env::set_var("JOURNAL_STREAM", "8:12345");
            }
        }
        let started = NvaProcess::start(&hub.nva, &config(""));
        // SAFETY: as above.
        unsafe {
            std::env::remove_var("NVA_LOG_FORMAT");
            std::env::remove_var("JOURNAL_STREAM");
        }
        let nva = started.unwrap();
        let log = nva.log();
        let mut started_line = None;
        for line in log.lines().filter(|l| !l.is_empty()) {
            let json = if journal {
                assert!(
                    line.starts_with('<') && line.as_bytes()[2] == b'>',
                    "{line}"
                );
                &line[3..]
            } else {
                line
            };
            let v: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["level"].is_string(), "{line}");
            if v["fields"]["message"] == "nva started" {
                started_line = Some(v);
            }
        }
        let v = started_line.unwrap_or_else(|| panic!("no start line: {log}"));
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert!(v["fields"]["fib"].is_string(), "{v}");
    }
}

/// The capabilities a hardened unit gives nva (CAP_SYS_ADMIN not among them).
const UNIT_CAPS: &str = "-all,+net_admin,+bpf,+perfmon,+net_raw,+net_bind_service";

/// nva with only the capabilities the unit grants forwards, and its self check works:
/// it asks rtnetlink which XDP program each interface runs (listing BPF links needs
/// CAP_SYS_ADMIN). When an XDP link is detached behind nva's back, the self check says
/// so (before, it counted BPF links, which outlive a detach: nothing was noticed).
#[test]
fn the_units_capabilities_suffice_and_a_detached_link_is_noticed() {
    if !require_root("the_units_capabilities_suffice_and_a_detached_link_is_noticed") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let dir = nva_tests::ScratchDir::new("nva-caps").unwrap();
    let wrapper = wrapped_nva(
        &dir,
        &format!("setpriv --bounding-set={UNIT_CAPS} --inh-caps=-all"),
    );
    let nva = NvaProcess::start_with_binary(&wrapper, &hub.nva, &config("")).unwrap();
    // It really runs without CAP_SYS_ADMIN (bit 21).
    let status = std::fs::read_to_string(format!("/proc/{}/status", nva.pid().unwrap())).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(cap_eff & (1 << 21), 0, "CapEff {cap_eff:x}");
    assert_eq!(
        ping(&hub.client, IpAddr::V4(SERVICE_V4), 3, None)
            .unwrap()
            .received,
        3
    );
    assert!(nva.counters().unwrap().get(NVA_CLIENT_PORT, "forwarded") >= 3);
    let health = nva.cli(&["health"]).unwrap();
    assert_eq!(health["healthy"], true, "{health}");

    // Detach one of nva's XDP links from outside (BPF_LINK_DETACH, as `bpftool link
    // detach` does): the link object stays, the interface no longer runs the program.
    let detached = hub.nva.run(detach_one_xdp_link_of_nva);
    assert!(detached, "found an XDP link of nva's program to detach");
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        Ok(nva.cli(&["health"])?["healthy"] == false)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", nva.cli(&["health"]).unwrap()));
    let health = nva.cli(&["health"]).unwrap();
    assert!(
        health["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("XDP")),
        "{health}"
    );
}

/// Detaches one XDP link of nva's program (by its name: the other XDP programs of the
/// test topology are pass-through stubs). True when one was detached.
fn detach_one_xdp_link_of_nva() -> bool {
    // Only the program attached in this namespace: BPF links are global, and an nva of
    // another test running at the same time has its own.
    let here: Vec<u32> = nva::netlink::xdp::xdp_program_ids()
        .unwrap()
        .into_values()
        .collect();
    let nva_programs: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(nva_common::XDP_PROGRAM) && here.contains(&p.id()))
        .map(|p| p.id())
        .collect();
    for link in aya::programs::loaded_links() {
        let Ok(link) = link else { continue };
        if !matches!(link.link_type(), Ok(aya::programs::links::LinkType::Xdp))
            || !nva_programs.contains(&link.program_id())
        {
            continue;
        }
        // BPF_LINK_GET_FD_BY_ID (30), then BPF_LINK_DETACH (34).
        let mut attr = [0u32; 16];
        attr[0] = link.id();
        // SAFETY: bpf(2) with a zeroed attribute union of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                30,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            continue;
        }
        let mut attr = [0u32; 16];
        attr[0] = fd as u32;
        // SAFETY: as above; the fd is ours and closed right after.
        let ok = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                34,
                attr.as_mut_ptr(),
                std::mem::size_of_val(&attr),
            )
        } == 0;
        // SAFETY: closing the fd bpf(2) gave us.
        unsafe { libc::close(fd as i32) };
        if ok {
            return true;
        }
    }
    false
}
