//! Linux kernel forwarding as the DUT: the same routes over the same next hops, as
//! nexthop-group routes (`ip nexthop`, `fib_multipath_hash_policy=1`), loaded with
//! `ip -batch`. The DUT's ingress runs `bench_pass` so the veth has NAPI.
use std::{io::Write, process::Command, time::Instant};

use anyhow::{Context, Result};
use ipnet::IpNet;

use nva_testkit::netns::run_cmd as run;

use crate::{
    nva_dut::Install,
    topology::{Dut, nexthop_v4, nexthop_v6},
};

/// Group ids of the two families' ECMP groups.
const GROUP_V4: u32 = 1;
const GROUP_V6: u32 = 2;

/// Creates one next hop per egress port and family and the two ECMP groups.
pub fn nexthops(dut: &Dut) -> Result<()> {
    let (mut g4, mut g6) = (Vec::new(), Vec::new());
    for (i, e) in dut.egress.iter().enumerate() {
        let (id4, id6) = (100 + i as u32, 200 + i as u32);
        for (id, via) in [(id4, nexthop_v4(i)), (id6, nexthop_v6(i))] {
            dut.ns.ip_args(&[
                "nexthop",
                "replace",
                "id",
                &id.to_string(),
                "via",
                &via.to_string(),
                "dev",
                &e.name,
            ])?;
        }
        g4.push(id4.to_string());
        g6.push(id6.to_string());
    }
    for (id, members) in [(GROUP_V4, g4), (GROUP_V6, g6)] {
        dut.ns.ip_args(&[
            "nexthop",
            "replace",
            "id",
            &id.to_string(),
            "group",
            &members.join("/"),
        ])?;
    }
    Ok(())
}

/// Loads `table` into the DUT's main table with `ip -batch` and times it.
pub fn install(dut: &Dut, table: &[IpNet]) -> Result<Install> {
    let path = std::env::temp_dir().join(format!("{}-routes.batch", dut.ns.name()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for p in table {
            let nhid = if p.addr().is_ipv4() {
                GROUP_V4
            } else {
                GROUP_V6
            };
            writeln!(f, "route replace {p} nhid {nhid}")?;
        }
        f.flush()?;
    }
    let start = Instant::now();
    let res = run(Command::new("ip")
        .args(["-n", dut.ns.name(), "-batch"])
        .arg(&path));
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    res.context("loading routes with ip -batch")?;
    Ok(Install {
        routes: table.len(),
        secs,
    })
}
