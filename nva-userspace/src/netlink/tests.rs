//! Tests against the real kernel, in network namespaces created for the test
//! (`ip netns add`), plus decoder tests on hand-built messages.
//!
//! The netns tests need root; without it they print a message and pass.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use nva_testkit::Netns;
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage, State},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
};
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

// ---------------------------------------------------------------- harness

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    ($name:literal) => {
        if !is_root() {
            eprintln!(
                "skipping {}: needs root to create network namespaces",
                $name
            );
            return;
        }
    };
}

fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_in(ns: &str, args: &str) -> anyhow::Result<String> {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    run(&v)
}

/// Runs `f` on a fresh thread that has joined netns `ns`, on a current-thread
/// tokio runtime, with an overall timeout. Panics (failing the test) on error.
fn in_netns<F, Fut>(ns: &Netns, f: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = ns.name().to_string();
    let res = std::thread::spawn(move || -> anyhow::Result<()> {
        let file = std::fs::File::open(format!("/run/netns/{name}")).context("open netns")?;
        // SAFETY: valid fd; setns only changes this thread's namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), f(name))
                .await
                .context("test timed out")?
        })
    })
    .join();
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Waits for an event matching `pred`; errors after `secs` seconds, listing
/// what was received instead.
async fn wait_event(
    rx: &mut UnboundedReceiver<NetEvent>,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&NetEvent) -> bool,
) -> anyhow::Result<(NetEvent, Vec<NetEvent>)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return Ok((ev, seen)),
            Ok(Some(ev)) => seen.push(ev),
            Ok(None) => bail!("watch channel closed while waiting for {what}; got {seen:#?}"),
            Err(_) => bail!("timed out waiting for {what}; got {seen:#?}"),
        }
    }
}

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
async fn poll_until<T, Fut>(secs: u64, what: &str, mut f: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn must_link(nl: &Netlink, name: &str) -> anyhow::Result<LinkInfo> {
    nl.link_by_name(name)
        .await?
        .with_context(|| format!("link {name} not found"))
}

async fn wait_link_up(nl: &Netlink, name: &str, up: bool) -> anyhow::Result<LinkInfo> {
    let nl = nl.clone();
    poll_until(5, &format!("{name} up={up}"), || {
        let nl = nl.clone();
        async move { Ok(nl.link_by_name(name).await?.filter(|l| l.up == up)) }
    })
    .await
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];

// ---------------------------------------------------------------- netns tests

#[test]
fn links_and_link_events() {
    require_root!("links_and_link_events");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va address 02:00:00:00:0a:01 mtu 1400")
        .unwrap();
    ns.ip("link set va up").unwrap();
    ns.ip("link set vb up").unwrap();
    in_netns(&ns, |ns| async move {
        let nl = Netlink::connect()?;
        let mut rx = watch()?;

        let va = wait_link_up(&nl, "va", true).await?;
        assert_eq!(va.mac, MAC_A);
        assert_eq!(va.mtu, 1400);
        let links = nl.links().await?;
        assert!(links.contains(&va), "{links:#?}");
        let lo = links.iter().find(|l| l.name == "lo").context("no lo")?;
        assert_eq!(lo.mac, [0; 6]);
        assert!(!lo.up, "lo of a new netns is down");
        let vb = must_link(&nl, "vb").await?;
        assert!(vb.up);
        assert_ne!(vb.mac, [0; 6]);

        assert_eq!(nl.link_by_name("nosuchdev0").await?, None);
        assert_eq!(nl.link_by_name("").await?, None);
        assert_eq!(
            nl.link_by_name("a-name-far-too-long-for-a-link").await?,
            None
        );
        assert_eq!(nl.link_by_index(va.ifindex).await?.as_ref(), Some(&va));
        assert_eq!(nl.link_by_index(1_000_000).await?, None);
        assert_eq!(nl.link_by_index(0).await?, None);

        // Peer down: va keeps IFF_UP but loses carrier.
        ip_in(&ns, "link set vb down")?;
        wait_event(
            &mut rx,
            5,
            "va down",
            |e| matches!(e, NetEvent::Link(l) if l.ifindex == va.ifindex && !l.up),
        )
        .await?;
        let now = must_link(&nl, "va").await?;
        assert!(!now.up, "{now:?}");

        ip_in(&ns, "link set vb up")?;
        wait_event(
            &mut rx,
            5,
            "va up",
            |e| matches!(e, NetEvent::Link(l) if l.ifindex == va.ifindex && l.up),
        )
        .await?;
        assert!(must_link(&nl, "va").await?.up);

        // Admin down on va itself.
        ip_in(&ns, "link set va down")?;
        wait_event(
            &mut rx,
            5,
            "va admin down",
            |e| matches!(e, NetEvent::Link(l) if l.ifindex == va.ifindex && !l.up),
        )
        .await?;

        ip_in(&ns, "link set va mtu 1300")?;
        wait_event(
            &mut rx,
            5,
            "va mtu 1300",
            |e| matches!(e, NetEvent::Link(l) if l.ifindex == va.ifindex && l.mtu == 1300),
        )
        .await?;

        ip_in(&ns, "link del vb")?;
        let mut gone = HashSet::new();
        while gone.len() < 2 {
            let (ev, _) = wait_event(&mut rx, 5, "LinkRemoved va, vb", |e| {
                matches!(e, NetEvent::LinkRemoved(_))
            })
            .await?;
            if let NetEvent::LinkRemoved(i) = ev {
                gone.insert(i);
            }
        }
        assert_eq!(gone, HashSet::from([va.ifindex, vb.ifindex]));
        assert_eq!(nl.link_by_name("va").await?, None);
        Ok(())
    });
}

#[test]
fn addresses_and_addr_events() {
    require_root!("addresses_and_addr_events");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va up").unwrap();
    in_netns(&ns, |ns| async move {
        let nl = Netlink::connect()?;
        let mut rx = watch()?;
        let va = must_link(&nl, "va").await?;

        ip_in(&ns, "addr add 10.1.2.3/24 dev va")?;
        ip_in(&ns, "addr add fd00:1::3/64 dev va nodad")?;
        let a4 = AddrInfo {
            ifindex: va.ifindex,
            addr: v4("10.1.2.3"),
            prefix_len: 24,
        };
        let a6 = AddrInfo {
            ifindex: va.ifindex,
            addr: v4("fd00:1::3"),
            prefix_len: 64,
        };

        let addrs = nl.addresses().await?;
        assert!(addrs.contains(&a4), "{addrs:#?}");
        assert!(addrs.contains(&a6), "{addrs:#?}");
        wait_event(&mut rx, 5, "AddrAdded v4", |e| {
            *e == NetEvent::AddrAdded(a4.clone())
        })
        .await?;
        wait_event(&mut rx, 5, "AddrAdded v6", |e| {
            *e == NetEvent::AddrAdded(a6.clone())
        })
        .await?;

        ip_in(&ns, "addr del 10.1.2.3/24 dev va")?;
        wait_event(&mut rx, 5, "AddrRemoved v4", |e| {
            *e == NetEvent::AddrRemoved(a4.clone())
        })
        .await?;
        let addrs = nl.addresses().await?;
        assert!(!addrs.contains(&a4), "{addrs:#?}");
        assert!(addrs.contains(&a6), "{addrs:#?}");
        Ok(())
    });
}

#[test]
fn permanent_neighbours_and_events() {
    require_root!("permanent_neighbours_and_events");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va up").unwrap();
    in_netns(&ns, |ns| async move {
        let nl = Netlink::connect()?;
        let mut rx = watch()?;
        let va = must_link(&nl, "va").await?;
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

        ip_in(
            &ns,
            "neigh add 10.1.2.9 lladdr 02:11:22:33:44:55 dev va nud permanent",
        )?;
        ip_in(
            &ns,
            "neigh add fd00:1::9 lladdr 02:11:22:33:44:55 dev va nud permanent",
        )?;
        let n4 = Neighbour {
            ifindex: va.ifindex,
            ip: v4("10.1.2.9"),
            mac: Some(mac),
            usable: true,
            failed: false,
        };
        let n6 = Neighbour {
            ip: v4("fd00:1::9"),
            ..n4.clone()
        };

        let neighs = nl.neighbours().await?;
        assert!(neighs.contains(&n4), "{neighs:#?}");
        assert!(neighs.contains(&n6), "{neighs:#?}");
        wait_event(&mut rx, 5, "Neighbour v4", |e| {
            *e == NetEvent::Neighbour(n4.clone())
        })
        .await?;
        wait_event(&mut rx, 5, "Neighbour v6", |e| {
            *e == NetEvent::Neighbour(n6.clone())
        })
        .await?;

        assert_eq!(nl.neighbour(va.ifindex, n4.ip).await?, Some(n4.clone()));
        assert_eq!(nl.neighbour(va.ifindex, n6.ip).await?, Some(n6.clone()));
        assert_eq!(nl.neighbour(va.ifindex, v4("10.1.2.99")).await?, None);
        assert_eq!(nl.neighbour(999_999, n4.ip).await?, None);

        // resolve() on an existing (permanent) entry: no error, no change
        // (a plain NTF_USE request would turn it INCOMPLETE, see resolve()).
        nl.resolve(va.ifindex, n4.ip).await?;
        nl.resolve(va.ifindex, n6.ip).await?;
        let neighs = nl.neighbours().await?;
        assert!(neighs.contains(&n4), "{neighs:#?}");
        assert!(neighs.contains(&n6), "{neighs:#?}");

        ip_in(&ns, "neigh del 10.1.2.9 dev va")?;
        wait_event(&mut rx, 5, "NeighbourRemoved v4", |e| {
            *e == NetEvent::NeighbourRemoved {
                ifindex: va.ifindex,
                ip: n4.ip,
            }
        })
        .await?;
        let neighs = nl.neighbours().await?;
        assert!(!neighs.iter().any(|n| n.ip == n4.ip), "{neighs:#?}");
        Ok(())
    });
}

/// Two namespaces joined by a veth: `va` (10.9.0.1, fd00:9::1) in A,
/// `vb` (10.9.0.2, fd00:9::2, MAC_B) in B. The test runs in A.
fn two_netns() -> (Netns, Netns) {
    let a = Netns::new_bare("nl").expect("ip netns add");
    let b = Netns::new_bare("nl").expect("ip netns add");
    a.ip(&format!(
        "link add va type veth peer name vb netns {}",
        b.name()
    ))
    .unwrap();
    a.ip("link set va address 02:00:00:00:0a:01").unwrap();
    b.ip("link set vb address 02:00:00:00:0b:02").unwrap();
    a.ip("addr add 10.9.0.1/24 dev va").unwrap();
    b.ip("addr add 10.9.0.2/24 dev vb").unwrap();
    a.ip("addr add fd00:9::1/64 dev va nodad").unwrap();
    b.ip("addr add fd00:9::2/64 dev vb nodad").unwrap();
    a.ip("link set va up").unwrap();
    b.ip("link set vb up").unwrap();
    (a, b)
}

#[test]
fn resolve_makes_entry_reachable() {
    require_root!("resolve_makes_entry_reachable");
    let (a, _b) = two_netns();
    in_netns(&a, |_| async move {
        let nl = Netlink::connect()?;
        let mut rx = watch()?;
        let va = wait_link_up(&nl, "va", true).await?;

        for ip in [v4("10.9.0.2"), v4("fd00:9::2")] {
            // On a link just up, the first IPv6 solicitations can go unanswered (the
            // entry FAILS): asked again, as nva asks every second for a next hop
            // without a MAC.
            let mut attempt = 0;
            let (ev, before) = loop {
                attempt += 1;
                nl.resolve(va.ifindex, ip).await?;
                let (ev, before) = wait_event(
                    &mut rx,
                    10,
                    &format!("{ip} reachable or failed"),
                    |e| matches!(e, NetEvent::Neighbour(n) if n.ip == ip && (n.usable || n.failed)),
                )
                .await?;
                match &ev {
                    NetEvent::Neighbour(n) if n.failed && attempt < 3 => continue,
                    _ => break (ev, before),
                }
            };
            let NetEvent::Neighbour(n) = ev else {
                unreachable!()
            };
            assert_eq!(n.ifindex, va.ifindex);
            assert_eq!(n.mac, Some(MAC_B));
            assert!(!n.failed);
            let pending: Vec<_> = before
                .iter()
                .filter(|e| matches!(e, NetEvent::Neighbour(n) if n.ip == ip))
                .collect();
            eprintln!("{ip}: events before usable: {pending:?}");

            let neighs = nl.neighbours().await?;
            let found = neighs
                .iter()
                .find(|n| n.ip == ip)
                .context("entry not dumped")?;
            assert!(found.usable && found.mac == Some(MAC_B), "{found:?}");

            // Again, on the now existing entry: fine.
            nl.resolve(va.ifindex, ip).await?;
        }
        Ok(())
    });
}

#[test]
fn resolve_unanswered_fails() {
    require_root!("resolve_unanswered_fails");
    let (a, _b) = two_netns();
    in_netns(&a, |_| async move {
        let nl = Netlink::connect()?;
        let mut rx = watch()?;
        let va = wait_link_up(&nl, "va", true).await?;
        let ip = v4("10.9.0.77");
        nl.resolve(va.ifindex, ip).await?;
        // Default: 3 probes 1 s apart, then FAILED.
        let (ev, before) = wait_event(
            &mut rx,
            15,
            "FAILED entry",
            |e| matches!(e, NetEvent::Neighbour(n) if n.ip == ip && n.failed),
        )
        .await?;
        eprintln!("first failed event: {ev:?}; before: {before:?}");
        let NetEvent::Neighbour(n) = ev else {
            unreachable!()
        };
        assert!(!n.usable);
        assert_eq!(n.mac, None);
        // It is FAILED (not just INCOMPLETE) once resolution has given up.
        let n = poll_until(10, "dumped entry with failed", || {
            let nl = nl.clone();
            async move {
                Ok(nl
                    .neighbours()
                    .await?
                    .into_iter()
                    .find(|n| n.ip == ip && n.failed))
            }
        })
        .await?;
        assert!(!n.usable);

        // A failed entry can be re-triggered without error.
        nl.resolve(va.ifindex, ip).await?;
        Ok(())
    });
}

#[test]
fn request_errors_are_errors() {
    require_root!("request_errors_are_errors");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    in_netns(&ns, |_| async move {
        let nl = Netlink::connect()?;
        let err = nl
            .resolve(999_999, v4("10.0.0.1"))
            .await
            .expect_err("resolve on a missing ifindex must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("resolving 10.0.0.1 on ifindex 999999"),
            "{msg}"
        );
        let io = err
            .downcast_ref::<std::io::Error>()
            .context("no io::Error inside")?;
        assert_eq!(io.raw_os_error(), Some(libc::ENODEV), "{msg}");
        Ok(())
    });
}

#[test]
fn resync_reports_missed_changes() {
    require_root!("resync_reports_missed_changes");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va up").unwrap();
    ns.ip("addr add 10.1.2.3/24 dev va").unwrap();
    ns.ip("neigh add 10.1.2.9 lladdr 02:11:22:33:44:55 dev va nud permanent")
        .unwrap();
    in_netns(&ns, |_| async move {
        let nl = Netlink::connect()?;
        let va = must_link(&nl, "va").await?;
        let stale_addr = AddrInfo {
            ifindex: va.ifindex,
            addr: v4("10.1.2.4"),
            prefix_len: 24,
        };
        let seen = Seen {
            links: HashSet::from([va.ifindex, 4242]),
            addrs: HashSet::from([stale_addr.clone()]),
            neighs: HashSet::from([(va.ifindex, v4("10.1.2.10"))]),
        };
        let evs = seen.resync(&nl).await?;
        assert!(evs.contains(&NetEvent::LinkRemoved(4242)), "{evs:#?}");
        assert!(
            !evs.contains(&NetEvent::LinkRemoved(va.ifindex)),
            "{evs:#?}"
        );
        assert!(evs.contains(&NetEvent::AddrRemoved(stale_addr)), "{evs:#?}");
        assert!(
            evs.contains(&NetEvent::NeighbourRemoved {
                ifindex: va.ifindex,
                ip: v4("10.1.2.10")
            }),
            "{evs:#?}"
        );
        assert!(evs.contains(&NetEvent::Link(va.clone())), "{evs:#?}");
        assert!(
            evs.contains(&NetEvent::AddrAdded(AddrInfo {
                ifindex: va.ifindex,
                addr: v4("10.1.2.3"),
                prefix_len: 24
            })),
            "{evs:#?}"
        );
        assert!(
            evs.iter()
                .any(|e| matches!(e, NetEvent::Neighbour(n) if n.ip == v4("10.1.2.9") && n.usable)),
            "{evs:#?}"
        );
        // Removals come before the current state.
        let first_add = evs
            .iter()
            .position(|e| matches!(e, NetEvent::Link(_)))
            .unwrap();
        assert!(evs[..first_add].iter().all(|e| matches!(
            e,
            NetEvent::LinkRemoved(_) | NetEvent::AddrRemoved(_) | NetEvent::NeighbourRemoved { .. }
        )));
        Ok(())
    });
}

#[test]
fn watch_resyncs_after_overrun() {
    require_root!("watch_resyncs_after_overrun");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va up").unwrap();
    ns.ip("addr add 10.1.3.1/24 dev va").unwrap();
    in_netns(&ns, |ns| async move {
        let nl = Netlink::connect()?;
        let va = must_link(&nl, "va").await?;
        // Smallest buffer the kernel allows: a burst of notifications
        // overflows it while this (single-threaded) runtime is blocked below.
        let mut rx = watch_with_rcvbuf(1)?;

        ip_in(
            &ns,
            "neigh add 10.1.3.200 lladdr 02:11:22:33:44:55 dev va nud permanent",
        )?;
        let x = v4("10.1.3.200");
        wait_event(
            &mut rx,
            5,
            "Neighbour x",
            |e| matches!(e, NetEvent::Neighbour(n) if n.ip == x),
        )
        .await?;

        // Blocking: the watch task cannot read while these run.
        let batch = std::env::temp_dir().join(format!("{ns}.batch"));
        let mut lines = String::from("neigh del 10.1.3.200 dev va\n");
        for i in 2..=150 {
            lines += &format!(
                "neigh add 10.1.3.{i} lladdr 02:11:22:33:44:{i:02x} dev va nud permanent\n"
            );
        }
        std::fs::write(&batch, lines)?;
        let res = run(&["ip", "-n", &ns, "-batch", batch.to_str().unwrap()]);
        let _ = std::fs::remove_file(&batch);
        res?;

        let mut added = HashSet::new();
        let mut x_removed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while added.len() < 149 || !x_removed {
            let ev = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .with_context(|| format!("timeout: {} added, x removed {x_removed}", added.len()))?
                .context("channel closed")?;
            match ev {
                NetEvent::Neighbour(n) if n.ifindex == va.ifindex && n.usable => {
                    added.insert(n.ip);
                }
                NetEvent::NeighbourRemoved { ip, .. } if ip == x => x_removed = true,
                _ => {}
            }
        }
        Ok(())
    });
}

#[test]
fn an_entry_from_before_the_watch_gone_in_an_overrun_is_reported_removed() {
    require_root!("an_entry_from_before_the_watch_gone_in_an_overrun_is_reported_removed");
    let ns = Netns::new_bare("nl").expect("ip netns add");
    ns.ip("link add va type veth peer name vb").unwrap();
    ns.ip("link set va up").unwrap();
    ns.ip("addr add 10.1.3.1/24 dev va").unwrap();
    // There before the watch starts: no notification of it is ever read.
    ns.ip("neigh add 10.1.3.200 lladdr 02:11:22:33:44:55 dev va nud permanent")
        .unwrap();
    in_netns(&ns, |ns| async move {
        let mut rx = watch_with_rcvbuf(1)?;
        // The watch reads the state it starts from.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let batch = std::env::temp_dir().join(format!("{ns}.batch"));
        // The flood first: the socket overflows, and the deletion's notification
        // is lost with the rest.
        let mut lines = String::new();
        for i in 2..=150 {
            lines += &format!(
                "neigh add 10.1.3.{i} lladdr 02:11:22:33:44:{i:02x} dev va nud permanent\n"
            );
        }
        lines += "neigh del 10.1.3.200 dev va\n";
        std::fs::write(&batch, lines)?;
        let res = run(&["ip", "-n", &ns, "-batch", batch.to_str().unwrap()]);
        let _ = std::fs::remove_file(&batch);
        res?;
        let x = v4("10.1.3.200");
        wait_event(
            &mut rx,
            10,
            "NeighbourRemoved x",
            |e| matches!(e, NetEvent::NeighbourRemoved { ip, .. } if *ip == x),
        )
        .await?;
        Ok(())
    });
}

// ---------------------------------------------------------------- no root needed

#[test]
fn connect_outside_runtime_is_an_error() {
    let err = Netlink::connect()
        .err()
        .expect("must fail without a runtime");
    assert!(format!("{err:#}").contains("tokio runtime"), "{err:#}");
    let err = watch().expect_err("must fail without a runtime");
    assert!(format!("{err:#}").contains("tokio runtime"), "{err:#}");
}

fn link_msg(flags: LinkFlags, oper: Option<State>, addr: &[u8]) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = 7;
    m.header.flags = flags;
    m.attributes.push(LinkAttribute::IfName("eth7".into()));
    m.attributes.push(LinkAttribute::Mtu(9000));
    m.attributes.push(LinkAttribute::Address(addr.to_vec()));
    if let Some(s) = oper {
        m.attributes.push(LinkAttribute::OperState(s));
    }
    m
}

#[test]
fn decode_link() {
    let up_carrier = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
    let l = decode::link_info(&link_msg(up_carrier, Some(State::Up), &MAC_A));
    assert_eq!(
        l,
        LinkInfo {
            name: "eth7".into(),
            ifindex: 7,
            mac: MAC_A,
            mtu: 9000,
            up: true
        }
    );
    // Loopback-like: unknown operstate with carrier is up; no 6-byte address.
    let l = decode::link_info(&link_msg(up_carrier, Some(State::Unknown), &[]));
    assert!(l.up);
    assert_eq!(l.mac, [0; 6]);
    // No carrier.
    let l = decode::link_info(&link_msg(
        LinkFlags::Up,
        Some(State::LowerLayerDown),
        &MAC_A,
    ));
    assert!(!l.up);
    // Admin down.
    let l = decode::link_info(&link_msg(LinkFlags::LowerUp, Some(State::Down), &MAC_A));
    assert!(!l.up);
    // Carrier but dormant.
    let l = decode::link_info(&link_msg(up_carrier, Some(State::Dormant), &MAC_A));
    assert!(!l.up);
    // Odd-sized hardware address (e.g. IPoIB, 20 bytes).
    let l = decode::link_info(&link_msg(up_carrier, Some(State::Up), &[1; 20]));
    assert_eq!(l.mac, [0; 6]);

    let mut del = link_msg(LinkFlags::empty(), None, &MAC_A);
    assert_eq!(
        decode::event(&RouteNetlinkMessage::DelLink(del.clone())),
        Some(NetEvent::LinkRemoved(7))
    );
    // Bridge port notifications (AF_BRIDGE) are not about the device.
    del.header.interface_family = AddressFamily::Bridge;
    assert_eq!(
        decode::event(&RouteNetlinkMessage::DelLink(del.clone())),
        None
    );
    assert_eq!(decode::event(&RouteNetlinkMessage::NewLink(del)), None);
}

fn neigh_msg(ip: IpAddr, state: NeighbourState, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = 3;
    m.header.state = state;
    match ip {
        IpAddr::V4(a) => {
            m.header.family = AddressFamily::Inet;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(a)));
        }
        IpAddr::V6(a) => {
            m.header.family = AddressFamily::Inet6;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)));
        }
    }
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}

#[test]
fn decode_neighbour_states() {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let cases = [
        (NeighbourState::Reachable, Some(MAC_B), true, false),
        (NeighbourState::Stale, Some(MAC_B), true, false),
        (NeighbourState::Delay, Some(MAC_B), true, false),
        (NeighbourState::Probe, Some(MAC_B), true, false),
        (NeighbourState::Permanent, Some(MAC_B), true, false),
        (NeighbourState::Noarp, Some(MAC_B), true, false),
        (NeighbourState::Noarp, None, false, false),
        (NeighbourState::Incomplete, None, false, false),
        (NeighbourState::Failed, None, false, true),
        (NeighbourState::None, None, false, false),
        // A bitmask with several bits (never seen from the kernel, but legal).
        (NeighbourState::Other(0x82), Some(MAC_B), true, false),
    ];
    for (state, mac, usable, failed) in cases {
        let n = decode::neighbour(&neigh_msg(ip, state, mac)).unwrap();
        assert_eq!(
            n,
            Neighbour {
                ifindex: 3,
                ip,
                mac,
                usable,
                failed
            },
            "state {state:?} mac {mac:?}"
        );
    }
    let ip6 = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    let m = neigh_msg(ip6, NeighbourState::Reachable, Some(MAC_B));
    assert_eq!(
        decode::event(&RouteNetlinkMessage::NewNeighbour(m.clone())),
        Some(NetEvent::Neighbour(Neighbour {
            ifindex: 3,
            ip: ip6,
            mac: Some(MAC_B),
            usable: true,
            failed: false
        }))
    );
    assert_eq!(
        decode::event(&RouteNetlinkMessage::DelNeighbour(m.clone())),
        Some(NetEvent::NeighbourRemoved {
            ifindex: 3,
            ip: ip6
        })
    );
    // Proxy entries and bridge FDB entries are not neighbours.
    let mut proxy = m.clone();
    proxy.header.flags = NeighbourFlags::Proxy;
    assert_eq!(decode::neighbour(&proxy), None);
    let mut fdb = NeighbourMessage::default();
    fdb.header.family = AddressFamily::Bridge;
    fdb.attributes
        .push(NeighbourAttribute::LinkLayerAddress(MAC_B.to_vec()));
    assert_eq!(
        decode::event(&RouteNetlinkMessage::NewNeighbour(fdb.clone())),
        None
    );
    assert_eq!(decode::event(&RouteNetlinkMessage::DelNeighbour(fdb)), None);
}

#[test]
fn decode_address() {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.index = 5;
    m.header.prefix_len = 31;
    // Point-to-point: LOCAL is ours, ADDRESS is the peer.
    m.attributes.push(AddressAttribute::Address(v4("10.0.0.2")));
    m.attributes.push(AddressAttribute::Local(v4("10.0.0.1")));
    let a = AddrInfo {
        ifindex: 5,
        addr: v4("10.0.0.1"),
        prefix_len: 31,
    };
    assert_eq!(decode::addr_info(&m), Some(a.clone()));
    assert_eq!(
        decode::event(&RouteNetlinkMessage::NewAddress(m.clone())),
        Some(NetEvent::AddrAdded(a.clone()))
    );
    assert_eq!(
        decode::event(&RouteNetlinkMessage::DelAddress(m)),
        Some(NetEvent::AddrRemoved(a))
    );

    let mut m6 = AddressMessage::default();
    m6.header.family = AddressFamily::Inet6;
    m6.header.index = 5;
    m6.header.prefix_len = 64;
    m6.attributes
        .push(AddressAttribute::Address(v4("2001:db8::1")));
    assert_eq!(
        decode::addr_info(&m6),
        Some(AddrInfo {
            ifindex: 5,
            addr: v4("2001:db8::1"),
            prefix_len: 64
        })
    );
    let mut empty = AddressMessage::default();
    empty.header.family = AddressFamily::Inet;
    assert_eq!(decode::addr_info(&empty), None);
}
