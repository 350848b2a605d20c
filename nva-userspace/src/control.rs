//! The control socket: a Unix stream socket speaking one JSON request per line and one
//! JSON reply per line. The CLI is its client.
//!
//! Request: `{"cmd": "status" | "stats" | "routes" | "nexthops"}`
//! Reply: `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use crate::{
    controller::{self, Controller, Query},
    fib::{Fib, Table},
};
use anyhow::{Context, Result, anyhow};
use ipnet::IpNet;
use nva_common::{CLASS_NAMES, NUM_CLASSES, NUM_REASONS, reason};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::UnixListener,
    task::JoinHandle,
};

#[derive(Debug, Deserialize, Serialize)]
pub struct Request {
    pub cmd: String,
    /// Command argument, e.g. the address or prefix for `routes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
}

/// Clients served at once (the CLI opens one per command); more are closed at once.
const MAX_CLIENTS: usize = 16;
/// Longest request line: a request is a command and an argument, never more.
const MAX_LINE: u64 = 64 * 1024;

/// Gives the socket to `group` (mode 0660), or keeps it root's (0600).
fn restrict(path: &Path, group: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match group {
        Some(name) => {
            let c = std::ffi::CString::new(name).context("control.group")?;
            // SAFETY: getgrnam(3) with a valid C string; the result is read at once.
            let gr = unsafe { libc::getgrnam(c.as_ptr()) };
            if gr.is_null() {
                anyhow::bail!("control.group: no group named {name:?}");
            }
            // SAFETY: non-null result of getgrnam.
            let gid = unsafe { (*gr).gr_gid };
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("control.group: chown {}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// What only the daemon's main loop can do (it owns the BGP speaker): asked for over the
/// socket, answered with a summary or why it failed.
pub enum Action {
    /// Apply the config file (what SIGHUP does).
    Reload,
    /// Restart a BGP session (`soft`: ask the peer for its routes again and re-announce
    /// ours, keeping the session).
    ClearPeer { peer: String, soft: bool },
}

/// An action and where its answer goes.
pub type ActionRequest = (Action, tokio::sync::oneshot::Sender<Result<String, String>>);

/// Starts serving on `path` (replacing a stale socket file), usable by root and, when
/// given, by `group`. `reload` reaches the main loop.
pub fn serve(
    path: &Path,
    group: Option<&str>,
    queries: tokio::sync::mpsc::Sender<Query>,
    actions: tokio::sync::mpsc::Sender<ActionRequest>,
) -> Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    restrict(path, group)?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let queries = queries.clone();
            let actions = actions.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (read, mut write) = stream.into_split();
                let mut reader = AsyncBufReader::new(read);
                loop {
                    let mut line = Vec::new();
                    match (&mut reader)
                        .take(MAX_LINE)
                        .read_until(b'\n', &mut line)
                        .await
                    {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_LINE {
                        let reply = json!({"ok": false, "error": format!("request longer than {MAX_LINE} bytes")});
                        let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
                        break;
                    }
                    let reply = match serde_json::from_slice::<Request>(&line) {
                        Ok(req) if req.cmd == "reload" || req.cmd == "bgp-clear" => {
                            let action = match (req.cmd.as_str(), req.arg) {
                                ("reload", _) => Action::Reload,
                                (_, arg) => {
                                    let arg = arg.unwrap_or_default();
                                    let (peer, soft) = match arg.strip_suffix(" soft") {
                                        Some(p) => (p.to_string(), true),
                                        None => (arg, false),
                                    };
                                    Action::ClearPeer { peer, soft }
                                }
                            };
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            let result = match actions.send((action, tx)).await {
                                Ok(()) => {
                                    rx.await.unwrap_or_else(|_| Err("nva is stopping".into()))
                                }
                                Err(_) => Err("nva is stopping".into()),
                            };
                            match result {
                                Ok(summary) => json!({"ok": true, "data": summary}),
                                Err(e) => json!({"ok": false, "error": e}),
                            }
                        }
                        Ok(req) if req.cmd == "routes" && req.arg.is_none() => {
                            // A full table is a million routes: copied by the
                            // controller, written out here, on a blocking thread.
                            let written = match controller::ask(&queries, all_routes).await {
                                Ok(routes) => {
                                    tokio::task::spawn_blocking(move || routes_reply(&routes))
                                        .await
                                        .map_err(anyhow::Error::from)
                                        .and_then(|r| r)
                                }
                                Err(e) => Err(e),
                            };
                            match written {
                                Ok(mut out) => {
                                    out.push('\n');
                                    if write.write_all(out.as_bytes()).await.is_err() {
                                        break;
                                    }
                                    continue;
                                }
                                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                            }
                        }
                        Ok(req) => {
                            let answer = controller::ask(&queries, move |c| {
                                handle(c, &req.cmd, req.arg.as_deref())
                            })
                            .await
                            .and_then(|r| r);
                            match answer {
                                Ok(data) => json!({"ok": true, "data": data}),
                                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                            }
                        }
                        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                    };
                    let mut out = reply.to_string();
                    out.push('\n');
                    if write.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// Answers a request, on the controller's task.
fn handle(st: &Controller, cmd: &str, arg: Option<&str>) -> Result<Value> {
    match cmd {
        "status" => {
            let (v4, v6) = st.fib().route_count();
            let nexthops = st.fib().nexthop_views();
            Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": st.started().elapsed().as_secs(),
                "xdp_mode": st.config().dataplane.xdp_mode,
                "no_route": st.config().dataplane.no_route,
                "interfaces": st.ifaces().iter().map(|f| json!({
                    "name": f.name, "ifindex": f.ifindex, "up": f.port.up,
                    "mtu": f.port.mtu, "attached": st.fib().dataplane().attached().any(|i| i == f.ifindex),
                })).collect::<Vec<_>>(),
                "routes": {"ipv4": v4, "ipv6": v6, "uninstalled": st.fib().failed_count()},
                "fib": st.fib().dataplane().fib_memory().iter().map(|m| json!({
                    "table": m.table(),
                    "family": m.family(),
                    "structure": m.structure,
                    "kernel_bytes": m.kernel_bytes,
                    "blocks_used": m.blocks.map(|b| b.0),
                    "blocks_total": m.blocks.map(|b| b.1),
                })).collect::<Vec<_>>(),
                "resident_bytes": crate::dataplane::resident_bytes(),
                "nexthops": {"total": nexthops.len(), "live": nexthops.iter().filter(|n| n.live).count(),
                             "resolved": nexthops.iter().filter(|n| n.resolved).count()},
            }))
        }
        "stats" => {
            let dp = st.fib().dataplane();
            let mut interfaces = Vec::new();
            for f in st.ifaces() {
                let cells = dp.counters(f.slot)?;
                let mut counters = serde_json::Map::new();
                for (i, c) in cells.iter().enumerate().take(reason::LAST as usize + 1) {
                    let pps = st.rate(f.slot, i as u32);
                    counters.insert(
                        reason::NAMES[i].to_string(),
                        json!({"packets": c.packets, "bytes": c.bytes, "pps": pps}),
                    );
                }
                interfaces
                    .push(json!({"name": f.name, "ifindex": f.ifindex, "counters": counters}));
            }
            let mut classes = serde_json::Map::new();
            for class in 0..NUM_CLASSES {
                let cells = dp.class_counters(class)?;
                let mut counters = serde_json::Map::new();
                for (i, c) in cells.iter().enumerate().take(reason::LAST as usize + 1) {
                    counters.insert(
                        reason::NAMES[i].to_string(),
                        json!({"packets": c.packets, "bytes": c.bytes}),
                    );
                }
                classes.insert(CLASS_NAMES[class as usize].to_string(), counters.into());
            }
            let mut segments = Vec::new();
            for from in &st.config().segments {
                for to in &st.config().segments {
                    let c = dp.segment_drops(from.id, to.id)?;
                    segments.push(json!({"from": from.name, "to": to.name,
                        "dropped_packets": c.packets, "dropped_bytes": c.bytes}));
                }
            }
            debug_assert!(NUM_REASONS as usize >= reason::NAMES.len());
            Ok(json!({ "interfaces": interfaces, "classes": classes, "segments": segments }))
        }
        "routes" => {
            let mut value = match arg {
                None => serde_json::to_value(st.fib().route_views())?,
                Some(arg) => route_lookup(st.fib(), arg)?,
            };
            annotate_resolution(st, &mut value);
            Ok(value)
        }
        "nexthops" => Ok(serde_json::to_value(st.fib().nexthop_views())?),
        "uninstalled" => Ok(Value::Array(
            st.fib()
                .failed_routes()
                .into_iter()
                .map(|(table, prefix, why)| {
                    json!({"table": table.name(), "prefix": prefix, "error": why})
                })
                .collect(),
        )),
        "bgp" => match (st.bgp(), arg) {
            (None, _) => Err(anyhow!("BGP is not configured")),
            (Some(feed), None) => Ok(serde_json::to_value(feed.statuses())?),
            (Some(feed), Some("neighbors")) => Ok(serde_json::to_value(feed.neighbors())?),
            (Some(feed), Some(prefix)) => {
                let prefix: IpNet = prefix
                    .parse()
                    .map_err(|_| anyhow!("{prefix:?} is not a prefix"))?;
                Ok(feed.paths(&prefix.trunc()))
            }
        },
        "health" => {
            let problems = st.self_check();
            // What does not make nva unhealthy (it keeps announcing) but needs a look.
            let warnings: Vec<String> = st
                .bgp()
                .map(|feed| {
                    feed.statuses()
                        .into_iter()
                        .filter(|p| p.announce_suppressed > 0)
                        .map(|p| {
                            format!(
                                "BGP peer {} ({}): max_announce reached, {} prefixes held back",
                                p.name, p.address, p.announce_suppressed
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(json!({
                "healthy": problems.is_empty(),
                "problems": problems,
                "warnings": warnings,
                "probes": st.prober().status(),
            }))
        }
        other => Err(anyhow!("unknown command {other:?}")),
    }
}

/// One route of `nva routes`: the FIB's view and how its next hops resolve.
#[derive(serde::Serialize)]
struct RouteReply {
    #[serde(flatten)]
    view: crate::fib::RouteView,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_via: Option<std::sync::Arc<Vec<Value>>>,
}

/// Every route, on the controller's task: copied, with each next-hop set described
/// once. The JSON is written by the asker, so BGP and netlink never wait on a
/// full-table dump being serialised.
fn all_routes(st: &Controller) -> Vec<RouteReply> {
    let mut memo = std::collections::HashMap::new();
    st.fib()
        .route_views()
        .into_iter()
        .map(|view| {
            let resolved_via =
                st.resolved_via_memo(view.source, view.table, &view.prefix, &mut memo);
            RouteReply { view, resolved_via }
        })
        .collect()
}

/// The whole `routes` reply (`{"ok": true, "data": [...]}`), as text.
fn routes_reply(routes: &[RouteReply]) -> Result<String> {
    let mut out = String::from(r#"{"ok":true,"data":"#);
    out.push_str(&serde_json::to_string(&routes)?);
    out.push('}');
    Ok(out)
}

/// Adds `resolved_via` (the recursive next hops and their gateways) to every route
/// of a `routes` reply that has some.
fn annotate_resolution(st: &Controller, value: &mut Value) {
    let mut annotate = |route: &mut Value| {
        let source = match route["source"].as_str() {
            Some("bgp") => crate::fib::Source::Bgp,
            Some("static") => crate::fib::Source::Static,
            Some("static-backup") => crate::fib::Source::StaticBackup,
            _ => return,
        };
        let table = match route["table"].as_str() {
            Some("east-west") => Table::EastWest,
            _ => Table::NorthSouth,
        };
        let Some(prefix) = route["prefix"].as_str().and_then(|p| p.parse().ok()) else {
            return;
        };
        let via = st.resolved_via(source, table, &prefix);
        if !via.is_empty() {
            route["resolved_via"] = Value::Array(via);
        }
    };
    match value {
        Value::Array(routes) => routes.iter_mut().for_each(&mut annotate),
        Value::Object(lookup) => {
            if let Some(route) = lookup.get_mut("route").filter(|r| !r.is_null()) {
                annotate(route);
            }
        }
        _ => {}
    }
}

/// `nva routes ADDRESS` answers like `ip route get`: the longest match, and what the
/// data plane itself finds for the address. `nva routes PREFIX` shows that route.
fn route_lookup(fib: &Fib, arg: &str) -> Result<Value> {
    // "ADDRESS@TABLE" looks up in that table instead of the address's own class.
    let (arg, table) = match arg.split_once('@') {
        Some((a, "east-west")) => (a, Some(Table::EastWest)),
        Some((a, "north-south")) => (a, Some(Table::NorthSouth)),
        Some((_, t)) => return Err(anyhow!("{t:?} is not a table (east-west, north-south)")),
        None => (arg, None),
    };
    if let Ok(addr) = arg.parse::<IpAddr>() {
        let class = match table {
            Some(t) => t.class(),
            None => fib.dataplane().classify(addr),
        };
        let route = match table {
            Some(t) => fib.longest_match_in(t, addr),
            None => fib.longest_match(addr),
        };
        let dataplane = fib
            .dataplane()
            .lookup(class, addr)
            .map(|r| json!({"action": r.action, "group": r.group}));
        return Ok(json!({
            "address": addr,
            "table": CLASS_NAMES.get(class as usize),
            "route": route,
            "dataplane": dataplane,
        }));
    }
    let prefix: IpNet = arg
        .parse()
        .map_err(|_| anyhow!("{arg:?} is neither an address nor a prefix"))?;
    let routes: Vec<_> = fib
        .route_views()
        .into_iter()
        .filter(|r| r.prefix == prefix.trunc() && table.is_none_or(|t| r.table == t))
        .collect();
    Ok(serde_json::to_value(routes)?)
}

/// Client side: sends one request and returns the reply's data.
pub fn request(path: &Path, cmd: &str) -> Result<Value> {
    request_with(path, cmd, None)
}

/// Client side with a command argument.
pub fn request_with(path: &Path, cmd: &str, arg: Option<&str>) -> Result<Value> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the nva daemon at {} (is `nva run` running?)",
            path.display()
        )
    })?;
    // A reload may drain BGP sessions or rewrite a full table.
    let timeout = match cmd {
        "reload" => 120,
        "routes" => 60,
        _ => 10,
    };
    stream.set_read_timeout(Some(Duration::from_secs(timeout)))?;
    let mut line = serde_json::to_string(&Request {
        cmd: cmd.to_string(),
        arg: arg.map(str::to_string),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let reply: Value = serde_json::from_str(&reply).context("malformed reply from daemon")?;
    if reply["ok"] == Value::Bool(true) {
        Ok(reply["data"].clone())
    } else {
        Err(anyhow!(
            "daemon: {}",
            reply["error"].as_str().unwrap_or("unknown error")
        ))
    }
}
