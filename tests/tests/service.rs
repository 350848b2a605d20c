//! nva as the shipped unit runs it (`Type=notify`, `WatchdogSec=`): the test plays
//! systemd's notification socket. READY=1 comes once, first, with the FIB programmed;
//! WATCHDOG=1 every second from the main loop; STOPPING=1 on SIGTERM.
use std::{
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    time::{Duration, Instant},
};

use nva_tests::{
    Hub, NvaProcess, ScratchDir, nva_binary, require_root, serial,
    topology::{server_v4, server_v6},
};

fn config() -> String {
    format!(
        "[[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}]\n\
         [[routes]]\nprefix = \"fd00:100::/64\"\nnexthops = [{{ via = \"{}\" }}]\n",
        server_v4(1),
        server_v6(1),
    )
}

/// The notifications received within `window` (one datagram each).
fn receive(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

/// nva started as systemd starts the shipped `Type=notify` unit with `WatchdogSec=4`, on
/// a new hub: a wrapper puts `NOTIFY_SOCKET` (the test's socket) and `WATCHDOG_USEC`, and
/// `extra_env` (`NAME=value ...`), in nva's environment. Dropped in field order: nva
/// stops before its hub goes.
struct NotifyUnit {
    nva: NvaProcess,
    sock: UnixDatagram,
    _dir: ScratchDir,
    _hub: Hub,
}

impl NotifyUnit {
    fn start(extra_env: &str) -> NotifyUnit {
        let hub = Hub::build(2).unwrap();
        let dir = ScratchDir::new("nvat-notify").unwrap();
        // A path socket: unlike an abstract one it is reachable from nva's namespace.
        let socket_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&socket_path).unwrap();
        let wrapper = dir.path().join("nva");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nNOTIFY_SOCKET={} WATCHDOG_USEC=4000000 {extra_env}exec {} \"$@\"\n",
                socket_path.display(),
                nva_binary().unwrap().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nva = NvaProcess::start_with_binary(&wrapper, &hub.nva, &config()).unwrap();
        NotifyUnit {
            nva,
            sock,
            _dir: dir,
            _hub: hub,
        }
    }
}

#[test]
fn systemd_notifications_ready_watchdog_stopping() {
    if !require_root("systemd_notifications_ready_watchdog_stopping") {
        return;
    }
    let _g = serial();
    // What systemd puts in the environment of a Type=notify service with WatchdogSec=4.
    let mut unit = NotifyUnit::start("");
    let NotifyUnit { nva, sock, .. } = &mut unit;
    let first = receive(sock, Duration::from_secs(10));
    let ready = first.first().unwrap_or_else(|| {
        panic!("no notification within 10 s; log:\n{}", nva.log());
    });
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "the first notification is READY=1: {first:?}"
    );
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", nva.pid().unwrap())),
        "READY names nva's pid: {ready:?}"
    );
    // READY says what was programmed (at least the static routes; host routes of
    // neighbours resolved later come on top), and the FIB has it.
    let counts: Vec<u64> = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=forwarding: "))
        .unwrap_or_else(|| panic!("no STATUS in {ready:?}"))
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .collect();
    let status = nva.cli(&["status"]).unwrap();
    let now = [
        status["routes"]["ipv4"].as_u64().unwrap(),
        status["routes"]["ipv6"].as_u64().unwrap(),
    ];
    assert!(
        counts.len() == 2 && (0..2).all(|i| counts[i] >= 1 && counts[i] <= now[i]),
        "{ready:?}; routes now {now:?}"
    );
    let route = nva.cli(&["routes", "10.100.1.1"]).unwrap();
    assert_eq!(route["route"]["prefix"], "10.100.0.0/16", "{route}");

    // Keep-alives from the main loop, about one a second, and nothing else.
    let later = receive(sock, Duration::from_millis(3500));
    let watchdogs = later.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(
        (2..=5).contains(&watchdogs),
        "WATCHDOG=1 about every second: {first:?} then {later:?}"
    );
    let all: Vec<&String> = first.iter().chain(&later).collect();
    assert_eq!(
        all.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "READY=1 once: {all:?}"
    );

    assert!(nva.stop().unwrap().success(), "log:\n{}", nva.log());
    let end = receive(sock, Duration::from_millis(300));
    assert!(
        end.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1 at SIGTERM: {end:?}"
    );
}

#[test]
fn no_watchdog_for_another_process() {
    if !require_root("no_watchdog_for_another_process") {
        return;
    }
    let _g = serial();
    // WATCHDOG_PID names another process (sd_watchdog_enabled(3)): no keep-alives.
    let mut unit = NotifyUnit::start("WATCHDOG_PID=1 ");
    let NotifyUnit { nva, sock, .. } = &mut unit;
    let got = receive(sock, Duration::from_millis(2500));
    assert!(
        got.iter().any(|m| m.contains("READY=1")),
        "READY=1: {got:?}"
    );
    assert!(
        !got.iter().any(|m| m.contains("WATCHDOG=1")),
        "no WATCHDOG=1: {got:?}"
    );
    assert!(nva.stop().unwrap().success());
}

/// The shipped unit is sandboxed: `systemd-analyze security` rates it at most 4 (it was
/// 9.7, UNSAFE), and it grants exactly the capabilities the capability test in
/// operations.rs runs nva with.
#[test]
fn the_unit_is_sandboxed() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/nva.service");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .expect("systemd-analyze (the set-up installs systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for nva.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 4.0, "exposure {exposure}:\n{text}");
    let content = std::fs::read_to_string(unit).unwrap();
    let caps = |key: &str| -> Vec<String> {
        content
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_lowercase())
            .collect()
    };
    let wanted = ["net_admin", "bpf", "perfmon", "net_raw", "net_bind_service"];
    assert_eq!(caps("CapabilityBoundingSet="), wanted);
    assert_eq!(caps("AmbientCapabilities="), wanted);
}
