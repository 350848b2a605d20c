//! The `nva` command: the daemon (`nva run`) and the CLI that talks to it.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nva::{
    config::{Config, DEFAULT_SOCKET},
    control, daemon,
};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "nva", version, about = "XDP hub router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Control socket of the running daemon.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: attach XDP, program routes, follow the kernel's neighbour table.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `control.socket` from the config.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Log lines as text or as one JSON object each (for log shippers); also
        /// NVA_LOG_FORMAT.
        #[arg(long, env = "NVA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Daemon status: interfaces, route and next-hop counts.
    Status(ClientArgs),
    /// Re-read the config file and apply it (what SIGHUP does), and say whether it
    /// worked and what changed (the service's ExecReload).
    Reload(ClientArgs),
    /// Per-interface packet counters by reason.
    Stats(ClientArgs),
    /// Installed routes; with an address, the route it matches (like `ip route get`).
    Routes {
        /// An address (longest match) or a prefix (exact).
        target: Option<String>,
        /// Only this table (east-west or north-south); for an address, look it up there.
        #[arg(long, value_parser = ["east-west", "north-south"])]
        table: Option<String>,
        /// The routes that could not be installed (a full FIB, group or next-hop table),
        /// with why; they are retried every second.
        #[arg(long, conflicts_with_all = ["target", "table"])]
        uninstalled: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Next hops with their neighbour and link state.
    Nexthops(ClientArgs),
    /// Self health and next-hop health probes.
    Health(ClientArgs),
    /// BGP peers: state, uptime, prefixes received now/accepted/announced;
    /// `nva bgp PREFIX`: the paths the RIB holds for a prefix; `nva bgp neighbors
    /// [PEER]`: each session in detail (negotiated capabilities and timers, flaps, last
    /// error, prefixes per family); `nva bgp clear PEER [--soft]`: restart a session
    /// (soft: ask for its routes again, keep the session).
    Bgp {
        prefix: Option<String>,
        /// The peer (name or address) for `clear`.
        peer: Option<String>,
        /// With `clear`: a route refresh and our announcements again, no session reset.
        #[arg(long)]
        soft: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write the man pages (`man`: nva.1, nva-SUBCOMMAND.1) or the bash, zsh and fish
    /// completions (`completions`: nva.bash, _nva, nva.fish) into DIR; `cargo xtask
    /// dist` packages them.
    #[command(hide = true)]
    Generate {
        #[arg(value_parser = ["man", "completions"])]
        what: String,
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: everything `nva run` checks before it touches
    /// anything, including against this machine (interfaces, next hops).
    Check {
        file: PathBuf,
        /// Only the file itself, not against this machine.
        #[arg(long)]
        offline: bool,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("nva: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A client writing into a closed pipe (`nva routes | head`) ends quietly, killed
        // by SIGPIPE like other tools, instead of panicking in println!. The daemon keeps
        // Rust's default (ignored: a write error is an error it handles).
        // SAFETY: signal(2) with the default disposition, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run {
            config,
            socket,
            log_format,
        } => {
            // Under systemd (stderr is the journal): each line starts with its syslog
            // priority, so `journalctl -p warning` finds the warnings; the journal adds
            // its own time stamps.
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            let builder = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr);
            match (journal, log_format == "json") {
                (true, false) => builder
                    .event_format(logging::JournalPriority(
                        tracing_subscriber::fmt::format().without_time(),
                    ))
                    .init(),
                // JSON objects, still prefixed with the priority for journald.
                (true, true) => builder
                    .event_format(logging::JournalPriority(
                        tracing_subscriber::fmt::format().json().without_time(),
                    ))
                    .init(),
                (false, true) => builder.json().init(),
                (false, false) => builder.init(),
            }
            let config_path = config;
            let config = Config::from_file(&config_path)?;
            let socket = socket.unwrap_or_else(|| PathBuf::from(&config.control.socket));
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(daemon::run(config, config_path, socket))
        }
        Command::Config {
            command: ConfigCommand::Check { file, offline },
        } => {
            let config = Config::from_file(&file)?;
            for w in config.warnings() {
                println!("warning: {w}");
            }
            if !offline {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(daemon::check_on_host(&config))
                    .with_context(|| format!("{} on this machine", file.display()))?;
                // What the kernel and the NICs will make of native XDP (warnings only).
                if config.dataplane.xdp_mode == nva::config::XdpMode::Native {
                    let names: Vec<String> =
                        config.interfaces.iter().map(|i| i.name.clone()).collect();
                    let pin = config.dataplane.pin_path.as_deref();
                    for w in nva::preflight::findings(&nva::preflight::gather(&names, pin)) {
                        println!("warning: host: {w}");
                    }
                }
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Generate { what, dir } => generate(&what, &dir),
        Command::Status(args) => client(&args, "status", print_status),
        Command::Reload(args) => client(&args, "reload", |d| println!("{}", s(d))),
        Command::Stats(args) => client(&args, "stats", print_stats),
        Command::Routes {
            uninstalled: true,
            client: args,
            ..
        } => client(&args, "uninstalled", |d| {
            println!("{:<12} {:<28} ERROR", "TABLE", "PREFIX");
            for r in items(d) {
                println!(
                    "{:<12} {:<28} {}",
                    s(&r["table"]),
                    s(&r["prefix"]),
                    s(&r["error"])
                );
            }
        }),
        Command::Routes {
            target,
            table,
            client: args,
            ..
        } => {
            let arg = match (&target, &table) {
                (Some(t), Some(table)) => Some(format!("{t}@{table}")),
                (Some(t), None) => Some(t.clone()),
                (None, _) => None,
            };
            let mut data = control::request_with(&args.socket, "routes", arg.as_deref())?;
            if let (None, Some(table), Value::Array(routes)) = (&target, &table, &mut data) {
                routes.retain(|r| r["table"] == table.as_str());
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else if data.get("address").is_some() {
                print_lookup(&data);
            } else {
                print_routes(&data);
            }
            Ok(())
        }
        Command::Nexthops(args) => client(&args, "nexthops", print_nexthops),
        Command::Health(args) => client(&args, "health", print_health),
        Command::Bgp {
            prefix: Some(clear),
            peer: Some(peer),
            soft,
            client: args,
        } if clear == "clear" => {
            let arg = if soft { format!("{peer} soft") } else { peer };
            let data = control::request_with(&args.socket, "bgp-clear", Some(&arg))?;
            println!("{}", s(&data));
            Ok(())
        }
        Command::Bgp {
            prefix: Some(neighbors),
            peer,
            client: args,
            ..
        } if neighbors == "neighbors" => {
            let mut data = control::request_with(&args.socket, "bgp", Some("neighbors"))?;
            if let (Some(peer), Value::Array(peers)) = (&peer, &mut data) {
                peers.retain(|p| p["name"] == peer.as_str() || p["address"] == peer.as_str());
                if peers.is_empty() {
                    anyhow::bail!("no BGP peer {peer:?}");
                }
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                print_neighbors(&data);
            }
            Ok(())
        }
        Command::Bgp {
            prefix,
            client: args,
            ..
        } => {
            let data = control::request_with(&args.socket, "bgp", prefix.as_deref())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else if prefix.is_some() {
                print_paths(&data);
            } else {
                print_bgp(&data);
            }
            Ok(())
        }
    }
}

fn generate(what: &str, dir: &Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    if what == "man" {
        clap_mangen::generate_to(cmd, dir)?;
    } else {
        use clap_complete::Shell;
        // A copy without the hidden subcommands, which the generators would offer.
        let mut visible = clap::Command::new("nva")
            .version(env!("CARGO_PKG_VERSION"))
            .about(cmd.get_about().cloned().unwrap_or_default())
            .subcommand_required(true)
            .subcommands(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut visible, "nva", dir)?;
        }
    }
    Ok(())
}

fn client(args: &ClientArgs, cmd: &str, human: fn(&Value)) -> Result<()> {
    let data = control::request(&args.socket, cmd)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        human(&data);
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The elements of a JSON array; nothing for any other value.
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A JSON array of scalars as one comma-separated cell.
fn join_list(v: &Value) -> String {
    items(v).map(s).collect::<Vec<_>>().join(",")
}

fn print_status(d: &Value) {
    println!(
        "nva {}  up {}s  xdp {}  no-route {}",
        s(&d["version"]),
        s(&d["uptime_secs"]),
        s(&d["xdp_mode"]),
        s(&d["no_route"])
    );
    println!(
        "routes: {} IPv4, {} IPv6",
        s(&d["routes"]["ipv4"]),
        s(&d["routes"]["ipv6"])
    );
    let size = |v: &Value| {
        let b = v.as_u64().unwrap_or(0) as f64;
        if b < (1 << 20) as f64 {
            format!("{:.1} KiB", b / 1024.0)
        } else {
            format!("{:.1} MiB", b / (1 << 20) as f64)
        }
    };
    println!("memory: {} resident", size(&d["resident_bytes"]));
    for f in items(&d["fib"]) {
        let blocks = match (f["blocks_used"].as_u64(), f["blocks_total"].as_u64()) {
            (Some(u), Some(t)) if s(&f["structure"]) == "dxr" => {
                format!(", {u} of {t} range cells in use")
            }
            (Some(u), Some(t)) => format!(", {u} of {t} blocks in use"),
            _ => String::new(),
        };
        println!(
            "fib {} {}: {}, {} in the kernel{blocks}",
            s(&f["table"]),
            s(&f["family"]),
            s(&f["structure"]),
            size(&f["kernel_bytes"])
        );
    }
    println!(
        "next hops: {} total, {} live, {} resolved",
        d["nexthops"]["total"],
        s(&d["nexthops"]["live"]),
        s(&d["nexthops"]["resolved"])
    );
    println!(
        "{:<16} {:>7} {:>5} {:>6} {:>8}",
        "INTERFACE", "IFINDEX", "UP", "MTU", "ATTACHED"
    );
    for i in items(&d["interfaces"]) {
        println!(
            "{:<16} {:>7} {:>5} {:>6} {:>8}",
            s(&i["name"]),
            s(&i["ifindex"]),
            s(&i["up"]),
            s(&i["mtu"]),
            s(&i["attached"])
        );
    }
}

fn print_stats(d: &Value) {
    println!(
        "{:<16} {:<20} {:>14} {:>16} {:>12}",
        "INTERFACE", "REASON", "PACKETS", "BYTES", "PPS"
    );
    for i in items(&d["interfaces"]) {
        for (reason, c) in i["counters"].as_object().into_iter().flatten() {
            if c["packets"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "{:<16} {:<20} {:>14} {:>16} {:>12.0}",
                    s(&i["name"]),
                    reason,
                    s(&c["packets"]),
                    s(&c["bytes"]),
                    c["pps"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
}

/// The resolution chain of a route's recursive next hops: "via 10.88.0.4 (recursive
/// via 10.88.0.4/32 (static)) -> 10.88.1.1", or nothing for direct next hops.
fn resolution_chain(r: &Value) -> String {
    items(&r["resolved_via"])
        .map(|v| {
            format!(
                ", via {} ({}) -> {}",
                s(&v["next_hop"]),
                s(&v["resolution"]),
                join_list(&v["gateways"])
            )
        })
        .collect()
}

fn print_routes(d: &Value) {
    println!(
        "{:<12} {:<28} {:<10} {:<10} NEXT HOPS (live)",
        "TABLE", "PREFIX", "SOURCE", "ACTION"
    );
    for r in items(d) {
        println!(
            "{:<12} {:<28} {:<10} {:<10} {} ({}){}",
            s(&r["table"]),
            s(&r["prefix"]),
            s(&r["source"]),
            s(&r["action"]),
            join_list(&r["nexthops"]),
            join_list(&r["live_nexthops"]),
            resolution_chain(r)
        );
    }
}

/// `nva bgp neighbors`: one block per session, in the spirit of `show bgp neighbors`.
fn print_neighbors(d: &Value) {
    let yes = |v: &Value| v.as_bool() == Some(true);
    for p in items(d) {
        println!(
            "BGP neighbor {}, {}, remote AS {}",
            s(&p["name"]),
            s(&p["address"]),
            s(&p["remote_as"])
        );
        println!(
            "  state {} for {}s, {} flaps",
            s(&p["state"]),
            s(&p["uptime_secs"]),
            s(&p["flaps"])
        );
        if !p["last_error"].is_null() {
            println!(
                "  last error: {} ({}s ago)",
                s(&p["last_error"]),
                s(&p["last_error_secs"])
            );
        }
        let n = &p["session"];
        if !n.is_null() {
            println!(
                "  connection: local {}, remote {}, router id {}",
                s(&n["local"]),
                s(&n["remote"]),
                s(&n["router_id"])
            );
            let mut caps = vec![format!(
                "hold time {}s, keepalive {}s",
                s(&n["hold_time"]),
                s(&n["keepalive"])
            )];
            for (key, name) in [
                ("four_octet_as", "4-octet AS"),
                ("route_refresh", "route refresh"),
                ("extended_message", "extended messages"),
            ] {
                if yes(&n[key]) {
                    caps.push(name.to_string());
                }
            }
            if !n["graceful_restart"].is_null() {
                caps.push(format!("graceful restart {}s", s(&n["graceful_restart"])));
            }
            println!("  negotiated: {}", caps.join(", "));
            println!("  families: {}", join_list(&n["families"]));
        }
        println!(
            "  messages received {}, sent {}; UPDATEs received {} (withdrawing {} prefixes), sent {}",
            s(&p["messages_received"]),
            s(&p["messages_sent"]),
            s(&p["updates_received"]),
            s(&p["withdrawn_received"]),
            s(&p["updates_sent"])
        );
        println!("  {:<28} {:>9} {:>9}", "prefixes", "IPv4", "IPv6");
        for (key, name) in [
            ("accepted_by_family", "accepted (in the RIB)"),
            ("announced_by_family", "announced"),
        ] {
            println!("  {:<28} {:>9} {:>9}", name, s(&p[key][0]), s(&p[key][1]));
        }
        println!(
            "  received now {} (rejected by import policy {}); dropped before policy: invalid next hop {}, martian {}; over unresolved next hops {}",
            s(&p["received_now"]),
            s(&p["rejected_by_policy"]),
            s(&p["invalid_next_hop"]),
            s(&p["martian"]),
            s(&p["unresolved"])
        );
        let limit = if p["max_prefix"].is_null() {
            "none".to_string()
        } else {
            format!(
                "{}{}",
                s(&p["max_prefix"]),
                if yes(&p["max_prefix_reached"]) {
                    " (reached)"
                } else {
                    ""
                }
            )
        };
        println!(
            "  max-prefix {limit}; held back by max_announce {}\n",
            s(&p["announce_suppressed"])
        );
    }
}

fn print_bgp(d: &Value) {
    println!(
        "{:<12} {:<26} {:>8} {:<12} {:>9} {:>10} {:>9} {:>10}  LAST ERROR",
        "PEER", "ADDRESS", "AS", "STATE", "UPTIME", "RECEIVED", "ACCEPTED", "ANNOUNCED"
    );
    for p in items(d) {
        println!(
            "{:<12} {:<26} {:>8} {:<12} {:>8}s {:>10} {:>9} {:>10}  {}",
            s(&p["name"]),
            s(&p["address"]),
            s(&p["remote_as"]),
            s(&p["state"]),
            s(&p["uptime_secs"]),
            s(&p["received_now"]),
            s(&p["accepted"]),
            s(&p["announced"]),
            s(&p["last_error"])
        );
    }
}

fn print_paths(d: &Value) {
    println!(
        "{:<12} {:<26} {:<24} {:>6} {:>6}  {:<28} AS PATH",
        "TABLE", "PEER", "NEXT HOP", "BEST", "ECMP", "RESOLVED"
    );
    for p in items(d) {
        let resolution = match (p["rejected"].as_str(), p["resolution"].as_str()) {
            (Some(why), _) => format!("NOT IN THE RIB: {why}"),
            (None, Some(r)) => format!("{r} -> {}", join_list(&p["gateways"])),
            (None, None) => "-".into(),
        };
        let table = if p["table"].is_null() {
            "-".to_string()
        } else {
            s(&p["table"])
        };
        println!(
            "{:<12} {:<26} {:<24} {:>6} {:>6}  {:<28} {}",
            table,
            s(&p["peer"]),
            s(&p["next_hop"]),
            s(&p["best"]),
            s(&p["multipath"]),
            resolution,
            s(&p["as_path"])
        );
    }
}

fn print_health(d: &Value) {
    println!(
        "nva: {}",
        if d["healthy"] == true {
            "healthy"
        } else {
            "UNHEALTHY"
        }
    );
    for p in items(&d["problems"]) {
        println!("  - {}", s(p));
    }
    for w in items(&d["warnings"]) {
        println!("  warning: {}", s(w));
    }
    println!(
        "{:<26} {:<16} {:>8} {:>10} {:>10} {:>10}",
        "TARGET", "PROBE", "HEALTHY", "SENT", "RECEIVED", "RTT(us)"
    );
    for p in items(&d["probes"]) {
        println!(
            "{:<26} {:<16} {:>8} {:>10} {:>10} {:>10}",
            s(&p["spec"]["target"]),
            s(&p["spec"]["kind"]),
            s(&p["healthy"]),
            s(&p["sent"]),
            s(&p["received"]),
            s(&p["last_rtt_us"])
        );
    }
}

fn print_lookup(d: &Value) {
    let r = &d["route"];
    if r.is_null() {
        println!("{}: no route", s(&d["address"]));
        return;
    }
    println!(
        "{} via {} ({}, {} {}, live: {}{})",
        s(&d["address"]),
        s(&r["prefix"]),
        s(&r["source"]),
        s(&r["action"]),
        join_list(&r["nexthops"]),
        join_list(&r["live_nexthops"]),
        resolution_chain(r)
    );
}

fn print_nexthops(d: &Value) {
    println!(
        "{:>4} {:<26} {:<12} {:>5} {:<18} {:>5} {:>5} {:>6}",
        "ID", "VIA", "DEV", "VLAN", "MAC", "LINK", "LIVE", "ROUTES"
    );
    for n in items(d) {
        println!(
            "{:>4} {:<26} {:<12} {:>5} {:<18} {:>5} {:>5} {:>6}",
            s(&n["id"]),
            s(&n["via"]),
            s(&n["dev"]),
            s(&n["vlan"]),
            s(&n["mac"]),
            s(&n["link_up"]),
            s(&n["live"]),
            s(&n["routes"])
        );
    }
}

mod logging {
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::{
        fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
        registry::LookupSpan,
    };

    /// Prefixes each line with its syslog priority (`<3>` error ... `<7>` debug), the
    /// form journald reads from a service's stderr.
    pub struct JournalPriority<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
    where
        F: FormatEvent<S, N>,
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> std::fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}
