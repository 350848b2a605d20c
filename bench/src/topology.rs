//! generator netns -> DUT netns -> sink netns, over veth.
//!
//! Two DUT namespaces share the generator and the sink: `dut1` with one route per
//! family, `dutF` with the full tables (Linux routes loaded once; nva has one data plane
//! per DUT). Each DUT has one ingress `d0` (peer `g<k>` in the generator netns) and
//! `n` egress ports `e<i>` (peers `s<k><i>` in the sink netns), one ECMP next hop each.
//! Every MAC is fixed, so one generator template fits both DUTs.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use nva_testkit::Netns;

pub const DUT_MAC: [u8; 6] = [0x02, 0xd0, 0, 0, 0, 0];
pub const GEN_MAC: [u8; 6] = [0x02, 0x90, 0, 0, 0, 0];
pub const GEN_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
pub const GEN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 2);

pub fn egress_mac(i: usize) -> [u8; 6] {
    [0x02, 0xe0, 0, 0, 0, i as u8]
}

pub fn sink_mac(k: usize, i: usize) -> [u8; 6] {
    [0x02, 0x50, 0, 0, k as u8, i as u8]
}

pub fn nexthop_v4(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, i as u8, 2))
}

pub fn nexthop_v6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, i as u16, 0, 0, 0, 0, 2))
}

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub struct Egress {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub sink_mac: [u8; 6],
}

pub struct Dut {
    pub ns: Netns,
    pub ingress: u32,
    pub egress: Vec<Egress>,
    /// The generator-side peer of `d0`, in the generator netns.
    pub gen_ifindex: u32,
}

pub struct Topology {
    pub duts: Vec<Dut>,
    pub gen_ns: Netns,
    pub sink: Netns,
}

fn veth(
    a: &Netns,
    a_if: &str,
    a_mac: &[u8; 6],
    b: &Netns,
    b_if: &str,
    b_mac: &[u8; 6],
) -> Result<()> {
    let (am, bm) = (mac_str(a_mac), mac_str(b_mac));
    a.ip_args(&[
        "link",
        "add",
        a_if,
        "address",
        &am,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "address",
        &bm,
        "netns",
        b.name(),
    ])?;
    a.ip_args(&["link", "set", a_if, "up"])?;
    b.ip_args(&["link", "set", b_if, "up"])?;
    Ok(())
}

impl Topology {
    /// Builds the namespaces and links; `nexthops` egress ports per DUT.
    pub fn build(nexthops: usize) -> Result<Topology> {
        let gen_ns = Netns::new("gen")?;
        let sink = Netns::new("sink")?;
        for ns in [&gen_ns, &sink] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let mut duts = Vec::new();
        for (k, tag) in ["dut1", "dutF"].iter().enumerate() {
            let ns = Netns::new(tag)?;
            for (key, v) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv6.fib_multipath_hash_policy", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.route.max_size", "4194304"),
            ] {
                ns.sysctl(key, v)?;
            }
            let g = format!("g{k}");
            veth(&ns, "d0", &DUT_MAC, &gen_ns, &g, &GEN_MAC)?;
            ns.ip_args(&["addr", "add", "10.100.0.1/24", "dev", "d0"])?;
            ns.ip_args(&["addr", "add", "fd00:100::1/64", "dev", "d0", "nodad"])?;
            let mut egress = Vec::new();
            for i in 0..nexthops {
                let e = format!("e{i}");
                let (mac, smac) = (egress_mac(i), sink_mac(k, i));
                veth(&ns, &e, &mac, &sink, &format!("s{k}{i}"), &smac)?;
                ns.ip_args(&["addr", "add", &format!("10.200.{i}.1/24"), "dev", &e])?;
                ns.ip_args(&[
                    "addr",
                    "add",
                    &format!("fd00:200:{i}::1/64"),
                    "dev",
                    &e,
                    "nodad",
                ])?;
                for via in [nexthop_v4(i), nexthop_v6(i)] {
                    let via = via.to_string();
                    let lladdr = mac_str(&smac);
                    ns.ip_args(&[
                        "neigh",
                        "replace",
                        &via,
                        "lladdr",
                        &lladdr,
                        "dev",
                        &e,
                        "nud",
                        "permanent",
                    ])?;
                }
                egress.push(Egress {
                    ifindex: ns.ifindex(&e)?,
                    name: e,
                    mac,
                    sink_mac: smac,
                });
            }
            duts.push(Dut {
                ingress: ns.ifindex("d0")?,
                gen_ifindex: gen_ns.ifindex(&g)?,
                ns,
                egress,
            });
        }
        Ok(Topology { duts, gen_ns, sink })
    }

    /// Sink-side interface names.
    pub fn sink_ifs(&self) -> Vec<String> {
        self.duts
            .iter()
            .enumerate()
            .flat_map(|(k, d)| (0..d.egress.len()).map(move |i| format!("s{k}{i}")))
            .collect()
    }
}
