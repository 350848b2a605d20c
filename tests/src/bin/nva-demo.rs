//! `cargo xtask demo`: the hub nva is built for, in network namespaces: a route server
//! (two BIRD endpoints, AS 65515) teaching two single-NIC nva instances the spokes'
//! and on-prem prefixes with next hops off their subnet, a fabric spreading traffic
//! over both NVAs (N-active ECMP), then one NVA stopping and its traffic moving.
//! Everything is torn down at the end.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nva_tests::{
    NvaProcess,
    azure::{AzureHub, ONPREM, SPOKE1, daemons, deliver, fabric_nexthops, nva_config, sink},
    paced, require_root, sequence_numbers, wait_until,
};

const HELP: &str = "\
nva-demo: nva as the hub NVA behind a route server, in network namespaces

  spoke1 10.1.0.4 --+                      +-- route server rs1 10.0.255.4 (BIRD)
  spoke2 10.2.0.4 --+-- fabric (.1 each) --+-- route server rs2 10.0.255.5 (BIRD)
                    |                      +-- ExpressRoute gateway 10.0.200.4 (GoBGP)
                    |                          on-prem 192.168.50.10
                    +-- 10.0.1.0/24 -- nva1 10.0.1.4, nva2 10.0.1.5 (one NIC each)

Shows: the routes nva learns over BGP and how their next hops resolve, traffic from a
spoke to on-prem forwarded in XDP by both NVAs, one NVA stopping gracefully and its
traffic moving to the other, the counters. Takes about a minute; needs root, BIRD 2
and GoBGP (`cargo xtask setup` installs them). Run it with `cargo xtask demo`.";

fn banner(text: &str) {
    println!("\n=== {text} ===");
}

fn show(nva: &NvaProcess, args: &[&str]) -> Result<()> {
    let out = nva.cli_raw(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn tx(nva: &NvaProcess) -> u64 {
    nva.counters().map(|c| c.get("eth0", "tx")).unwrap_or(0)
}

fn main() -> Result<()> {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        return Ok(());
    }
    if !require_root("nva-demo") {
        bail!("the demo builds network namespaces and attaches XDP: run it as root");
    }
    println!("{HELP}");
    banner("building the hub (namespaces, veth, bridges) and starting BIRD and GoBGP");
    let hub = AzureHub::build()?;
    let d = daemons(&hub)?;
    println!("nva1's configuration:\n{}", nva_config(1, false).trim());

    banner("starting nva1 and nva2 (XDP, native mode)");
    let mut nvas = vec![
        NvaProcess::start(&hub.nvas[0], &nva_config(1, false))?,
        NvaProcess::start(&hub.nvas[1], &nva_config(2, false))?,
    ];
    wait_until(Duration::from_secs(40), Duration::from_millis(200), || {
        let learned = nvas.iter().all(|n| {
            n.cli(&["routes", ONPREM])
                .is_ok_and(|r| r["route"]["source"] == "bgp")
        });
        Ok(learned && fabric_nexthops(&hub, "192.168.0.0/16").len() == 2)
    })
    .with_context(|| {
        format!(
            "the NVAs did not learn the hub's routes\n{}",
            d.rs[0].birdc(&["show", "protocols"])
        )
    })?;
    println!("nva1's BGP peers (nva bgp):");
    show(&nvas[0], &["bgp"])?;
    println!("\nwhat it learned, with the next hops' resolution (nva bgp 192.168.50.0/24):");
    show(&nvas[0], &["bgp", "192.168.50.0/24"])?;
    println!("\nnva1's routes (nva routes): BGP next hops resolved through the /32 routes");
    println!("to the route server and the VM's default route to the subnet gateway");
    show(&nvas[0], &["routes", "--table", "east-west"])?;
    println!(
        "\nthe fabric's route to on-prem for spoke traffic: ECMP over {:?}",
        fabric_nexthops(&hub, "192.168.0.0/16")
    );

    banner("2000 datagrams from spoke1 to on-prem, over 32 flows");
    let onprem = sink(&hub.ergw, ONPREM)?;
    let before: Vec<u64> = nvas.iter().map(tx).collect();
    let got = deliver(&hub.spokes[0], &onprem, ONPREM, 2000);
    for (k, nva) in nvas.iter().enumerate() {
        println!(
            "  nva{}: {:5} packets sent back out in XDP (XDP_TX)",
            k + 1,
            tx(nva) - before[k]
        );
    }
    println!("  on-prem received {got} of 2000");
    let back = sink(&hub.spokes[0], SPOKE1)?;
    let got = deliver(&hub.ergw, &back, SPOKE1, 500);
    println!("  and 500 the other way: spoke1 received {got}");

    banner("nva2 stops (SIGTERM): it withdraws, drains, the fabric moves its flows");
    let sender = paced(&hub.spokes[0], ONPREM, 4000, Duration::from_millis(1));
    onprem.clear();
    std::thread::sleep(Duration::from_millis(800));
    let t = Instant::now();
    nvas[1].stop()?;
    let stopped = t.elapsed();
    let sent = sender.join().expect("sender");
    std::thread::sleep(Duration::from_millis(300));
    let received = sequence_numbers(&onprem);
    let lost = (0..sent.len() as u32)
        .filter(|n| !received.contains(n))
        .count();
    println!(
        "  {lost} of {} datagrams lost; nva2 was gone after {:.1} s; the fabric now sends to {:?}",
        sent.len(),
        stopped.as_secs_f64(),
        fabric_nexthops(&hub, "192.168.0.0/16")
    );

    println!("  nva1's route to on-prem now (nva routes {ONPREM}):");
    show(&nvas[0], &["routes", ONPREM])?;

    banner("nva1's counters (nva stats)");
    show(&nvas[0], &["stats"])?;
    banner("tearing down");
    drop(nvas);
    drop(d);
    drop(hub);
    println!("done: namespaces removed");
    Ok(())
}
