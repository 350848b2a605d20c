//! Prometheus metrics in the text exposition format on `GET /metrics`.
//!
//! Counters are read from the data plane's per-CPU maps at scrape time, so a scrape
//! always sees current values and nva keeps no second copy of them.
use std::{fmt::Write as _, net::SocketAddr};

use anyhow::Result;
use nva_common::reason;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use crate::controller::{self, Controller, Query};
use crate::routing::PeerStatus;

/// Connections served at once; more are closed at once (a port scan or a pile of idle
/// connections must not use up nva's file descriptors).
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request head, and to take the response.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Largest request head read.
const MAX_HEAD: usize = 4096;

pub async fn serve(
    addr: SocketAddr,
    queries: tokio::sync::mpsc::Sender<Query>,
) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let queries = queries.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(Some(head)) = tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await
                else {
                    return;
                };
                let response = respond(&head, &queries).await;
                let _ =
                    tokio::time::timeout(IO_TIMEOUT, stream.write_all(response.as_bytes())).await;
            });
        }
    }))
}

/// Reads the request head (up to the blank line, at most `MAX_HEAD` bytes).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (len > 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The response to a request head: the metrics on `GET /metrics` (and `/`), headers only
/// on `HEAD`, 405 for other methods, 404 for other paths.
async fn respond(head: &str, queries: &tokio::sync::mpsc::Sender<Query>) -> String {
    let mut request = head.lines().next().unwrap_or("").split(' ');
    let (method, path) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    if path != "/metrics" && path != "/" {
        return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string();
    }
    if method != "GET" && method != "HEAD" {
        return "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\
                Connection: close\r\n\r\n"
            .to_string();
    }
    let body = controller::ask(queries, render)
        .await
        .unwrap_or_else(|_| String::from("# nva is stopping\n"));
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method == "HEAD" { head } else { head + &body }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `nva_build_info` and the standard `process_*` metrics (as Prometheus client
/// libraries export them), from /proc/self.
fn process_metrics(out: &mut String) {
    header(
        out,
        "nva_build_info",
        "gauge",
        "nva's version (the value is always 1).",
    );
    let _ = writeln!(
        out,
        "nva_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of stat(5), starttime 22, vsize 23, rss 24;
    // `fields` starts at field 3.
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {:.2}",
            (utime + stime) as f64 / ticks
        );
    }
    if let Some(rss) = field(21) {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page);
    }
    if let Some(vsize) = field(20) {
        header(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(19), boot) {
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time since the Unix epoch.",
        );
        let _ = writeln!(
            out,
            "process_start_time_seconds {:.2}",
            boot as f64 + start as f64 / ticks
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        header(
            out,
            "process_max_fds",
            "gauge",
            "The open file descriptor limit.",
        );
        let _ = writeln!(out, "process_max_fds {}", limit.rlim_cur);
    }
}

/// Renders every metric.
pub fn render(st: &Controller) -> String {
    let mut out = String::new();
    if let Some(feed) = st.bgp() {
        let neighbors = feed.neighbors();
        // One value per peer: name, type, help, value. Each metric's HELP and TYPE, then a
        // line per peer.
        type PerPeer = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PeerStatus) -> u64,
        );
        let per_peer: [PerPeer; 14] = [
            (
                "nva_bgp_peer_up",
                "gauge",
                "1 while the BGP session is established.",
                |p| u64::from(p.state == "established"),
            ),
            (
                "nva_bgp_prefixes_received_total",
                "counter",
                "Prefixes received from the peer.",
                |p| p.received,
            ),
            (
                "nva_bgp_prefixes_accepted",
                "gauge",
                "Prefixes from the peer in the RIB (after import policy).",
                |p| p.accepted as u64,
            ),
            (
                "nva_bgp_prefixes_announced",
                "gauge",
                "Prefixes announced to the peer.",
                |p| p.announced as u64,
            ),
            (
                "nva_bgp_paths_unresolved",
                "gauge",
                "Paths from the peer whose next hop does not resolve (not eligible as best path).",
                |p| p.unresolved as u64,
            ),
            (
                "nva_bgp_invalid_next_hop_total",
                "counter",
                "Announcements treated as withdrawn because the next hop can never be one.",
                |p| p.invalid_next_hop,
            ),
            (
                "nva_bgp_martian_total",
                "counter",
                "Announced prefixes ignored as loopback, multicast, reserved or link-local.",
                |p| p.martian,
            ),
            (
                "nva_bgp_flaps_total",
                "counter",
                "Times an Established session with the peer ended.",
                |p| p.flaps,
            ),
            (
                "nva_bgp_updates_received_total",
                "counter",
                "UPDATE messages received from the peer.",
                |p| p.updates_received,
            ),
            (
                "nva_bgp_prefixes_rejected",
                "gauge",
                "Prefixes the peer announces now that import policy rejects.",
                |p| p.rejected_by_policy as u64,
            ),
            (
                "nva_bgp_messages_received_total",
                "counter",
                "BGP messages received from the peer (all types).",
                |p| p.messages_received,
            ),
            (
                "nva_bgp_messages_sent_total",
                "counter",
                "BGP messages sent to the peer (all types).",
                |p| p.messages_sent,
            ),
            (
                "nva_bgp_updates_sent_total",
                "counter",
                "UPDATE messages sent to the peer.",
                |p| p.updates_sent,
            ),
            (
                "nva_bgp_announce_limited",
                "gauge",
                "Prefixes held back from the peer by its max_announce.",
                |p| p.announce_suppressed as u64,
            ),
        ];
        let labels: Vec<String> = neighbors
            .iter()
            .map(|p| format!("peer=\"{}\",address=\"{}\"", escape(&p.name), p.address))
            .collect();
        for (name, kind, help, value) in per_peer {
            header(&mut out, name, kind, help);
            for (p, l) in neighbors.iter().zip(&labels) {
                let _ = writeln!(out, "{name}{{{l}}} {}", value(p));
            }
        }
        // Per peer, family and state: what it announces now (received), what is in the
        // RIB (accepted), what is not (rejected), what nva announces to it.
        header(
            &mut out,
            "nva_bgp_prefixes",
            "gauge",
            "Prefixes per peer and family: received now, accepted, rejected, announced.",
        );
        for (p, l) in neighbors.iter().zip(&labels) {
            for (f, family) in ["ipv4", "ipv6"].iter().enumerate() {
                let (acc, rej) = (p.accepted_by_family[f], p.rejected_by_family[f]);
                for (state, n) in [
                    ("received", acc + rej),
                    ("accepted", acc),
                    ("rejected", rej),
                    ("announced", p.announced_by_family[f]),
                ] {
                    let _ = writeln!(
                        out,
                        "nva_bgp_prefixes{{{l},family=\"{family}\",state=\"{state}\"}} {n}"
                    );
                }
            }
        }
    }
    let problems = st.self_check();
    header(
        &mut out,
        "nva_healthy",
        "gauge",
        "1 when nva's self check passes (see nva health).",
    );
    let _ = writeln!(out, "nva_healthy {}", u8::from(problems.is_empty()));

    header(
        &mut out,
        "nva_packets_total",
        "counter",
        "Packets seen by XDP, by ingress interface and what was done with them.",
    );
    let mut bytes = String::new();
    header(
        &mut bytes,
        "nva_bytes_total",
        "counter",
        "Bytes seen by XDP, by ingress interface and reason.",
    );
    for iface in st.ifaces() {
        let Ok(cells) = st.fib().dataplane().counters(iface.slot) else {
            continue;
        };
        for (i, c) in cells.iter().enumerate().take(reason::LAST as usize + 1) {
            let labels = format!(
                "interface=\"{}\",reason=\"{}\"",
                escape(&iface.name),
                reason::NAMES[i]
            );
            let _ = writeln!(out, "nva_packets_total{{{labels}}} {}", c.packets);
            let _ = writeln!(bytes, "nva_bytes_total{{{labels}}} {}", c.bytes);
        }
    }
    out.push_str(&bytes);

    header(
        &mut out,
        "nva_class_packets_total",
        "counter",
        "Packets by traffic class (east-west, north-south) and reason.",
    );
    for class in 0..nva_common::NUM_CLASSES {
        let Ok(cells) = st.fib().dataplane().class_counters(class) else {
            continue;
        };
        for (i, c) in cells.iter().enumerate().take(reason::LAST as usize + 1) {
            let _ = writeln!(
                out,
                "nva_class_packets_total{{class=\"{}\",reason=\"{}\"}} {}",
                nva_common::CLASS_NAMES[class as usize],
                reason::NAMES[i],
                c.packets
            );
        }
    }
    header(
        &mut out,
        "nva_segment_dropped_packets_total",
        "counter",
        "East-west packets denied by the segment policy, by segment pair.",
    );
    for from in &st.config().segments {
        for to in &st.config().segments {
            if let Ok(c) = st.fib().dataplane().segment_drops(from.id, to.id) {
                let _ = writeln!(
                    out,
                    "nva_segment_dropped_packets_total{{from=\"{}\",to=\"{}\"}} {}",
                    escape(&from.name),
                    escape(&to.name),
                    c.packets
                );
            }
        }
    }
    header(
        &mut out,
        "nva_interface_up",
        "gauge",
        "1 when the interface is up with carrier.",
    );
    for iface in st.ifaces() {
        let _ = writeln!(
            out,
            "nva_interface_up{{interface=\"{}\"}} {}",
            escape(&iface.name),
            u8::from(iface.port.up)
        );
    }

    header(
        &mut out,
        "nva_routes",
        "gauge",
        "Routes installed in the data plane, by family and source.",
    );
    let mut routes = std::collections::BTreeMap::new();
    for ((v4, source), n) in st.fib().route_counts_by_source() {
        let family = if v4 { "ipv4" } else { "ipv6" };
        *routes
            .entry((family, format!("{source:?}").to_lowercase()))
            .or_insert(0u64) += n as u64;
    }
    for ((family, source), n) in routes {
        let _ = writeln!(
            out,
            "nva_routes{{family=\"{family}\",source=\"{source}\"}} {n}"
        );
    }

    header(
        &mut out,
        "nva_fib_kernel_bytes",
        "gauge",
        "Kernel memory of each FIB's maps, by table, family and structure.",
    );
    let fibs = st.fib().dataplane().fib_memory();
    let fib_labels = |m: &crate::dataplane::FibMemory| {
        format!(
            "table=\"{}\",family=\"{}\",structure=\"{}\"",
            m.table(),
            m.family(),
            m.structure
        )
    };
    for m in &fibs {
        let _ = writeln!(
            out,
            "nva_fib_kernel_bytes{{{}}} {}",
            fib_labels(m),
            m.kernel_bytes
        );
    }
    header(
        &mut out,
        "nva_fib_blocks",
        "gauge",
        "Blocks of the DIR-24-8 and multibit FIBs (range cells of DXR), in use and in total.",
    );
    for m in &fibs {
        if let Some((used, total)) = m.blocks {
            let l = fib_labels(m);
            let _ = writeln!(out, "nva_fib_blocks{{{l},state=\"used\"}} {used}");
            let _ = writeln!(out, "nva_fib_blocks{{{l},state=\"total\"}} {total}");
        }
    }
    header(
        &mut out,
        "nva_resident_bytes",
        "gauge",
        "Resident memory of the nva process.",
    );
    let _ = writeln!(
        out,
        "nva_resident_bytes {}",
        crate::dataplane::resident_bytes()
    );

    header(
        &mut out,
        "nva_nexthop_live",
        "gauge",
        "1 when the next hop receives traffic (link up, neighbour not failed).",
    );
    let mut resolved = String::new();
    header(
        &mut resolved,
        "nva_nexthop_resolved",
        "gauge",
        "1 when the next hop's MAC address is known.",
    );
    for nh in st.fib().nexthop_views() {
        let labels = format!("via=\"{}\",interface=\"{}\"", nh.via, escape(&nh.dev));
        let _ = writeln!(out, "nva_nexthop_live{{{labels}}} {}", u8::from(nh.live));
        let _ = writeln!(
            resolved,
            "nva_nexthop_resolved{{{labels}}} {}",
            u8::from(nh.resolved)
        );
    }
    out.push_str(&resolved);

    let fs = st.fib().stats();
    header(
        &mut out,
        "nva_fib_updates_total",
        "counter",
        "Route changes written to the data plane.",
    );
    let _ = writeln!(out, "nva_fib_updates_total {}", fs.updates);
    header(
        &mut out,
        "nva_routes_uninstalled",
        "gauge",
        "Selected routes that could not be installed (see nva routes --uninstalled).",
    );
    let _ = writeln!(out, "nva_routes_uninstalled {}", st.fib().failed_count());
    header(
        &mut out,
        "nva_route_install_failures_total",
        "counter",
        "Route changes that could not be installed (each retried until it is).",
    );
    let _ = writeln!(
        out,
        "nva_route_install_failures_total {}",
        fs.install_failures
    );
    header(
        &mut out,
        "nva_fib_update_seconds",
        "histogram",
        "Time to write one route change to the data plane maps.",
    );
    let mut cumulative = 0;
    for (le, n) in crate::fib::UPDATE_BUCKETS.iter().zip(&fs.buckets) {
        cumulative += n;
        let _ = writeln!(
            out,
            "nva_fib_update_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "nva_fib_update_seconds_bucket{{le=\"+Inf\"}} {}",
        fs.updates
    );
    let _ = writeln!(out, "nva_fib_update_seconds_sum {:.9}", fs.seconds);
    let _ = writeln!(out, "nva_fib_update_seconds_count {}", fs.updates);
    process_metrics(&mut out);

    header(
        &mut out,
        "nva_uptime_seconds",
        "gauge",
        "Seconds since nva started.",
    );
    let _ = writeln!(
        out,
        "nva_uptime_seconds {}",
        st.started().elapsed().as_secs()
    );
    out
}
