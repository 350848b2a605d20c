//! The XDP program itself, run by the kernel on crafted frames (BPF_PROG_TEST_RUN),
//! with its maps programmed through the real controller code (`nva::fib::Fib`).
//!
//! Each test builds a namespace with one veth pair: `in0` is the ingress port, `out0`
//! the egress port. Returned actions, output bytes and counters are checked exactly.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use nva::{
    dataplane::{Dataplane, LoadOptions},
    fib::{Fib, NhKey, Port, Source, Target},
};
use nva_common::{SET_DROP_NO_ROUTE, SET_SYMMETRIC_HASH, Settings, reason};
use nva_tests::{
    Netns,
    checksum::ipv4_header_valid,
    frames::{eth_ipv4_udp, eth_ipv6_udp, fix_ipv4_checksum, with_vlan},
    require_root, serial, veth,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const NVA_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const SERVICE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);

fn nh_mac(i: u8) -> [u8; 6] {
    [0x02, 0xee, 0, 0, 0, i]
}

/// A loaded program with ports `in0` (ingress, counter slot 1) and `out0` (slot 2).
struct Rig {
    fib: Fib,
    a: u32,
    b: u32,
    port_b: Port,
}

impl Rig {
    fn with_options(settings: Settings, options: LoadOptions) -> Rig {
        let a = nva_tests::netns::if_nametoindex("in0").expect("in0");
        let b = nva_tests::netns::if_nametoindex("out0").expect("out0");
        let mut dp = Dataplane::load_with(options).expect("load");
        dp.set_settings(settings).unwrap();
        dp.add_port(a, 1, 0, [0; 6]).unwrap();
        dp.add_port(b, 2, 0, [0; 6]).unwrap();
        let port_b = Port {
            name: "out0".into(),
            mac: NVA_MAC,
            mtu: 1500,
            up: true,
        };
        Rig {
            fib: Fib::new(dp),
            a,
            b,
            port_b,
        }
    }

    /// Adds `n` resolved next hops on port `b` (MACs nh_mac(1..=n)) and routes `prefix`
    /// over all of them. Returns their ids.
    fn route(&mut self, prefix: &str, n: u8, vlan: u16) -> Vec<u16> {
        let prefix: IpNet = prefix.parse().unwrap();
        let mut ids = Vec::new();
        for i in 1..=n {
            let via: IpAddr = match prefix {
                IpNet::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1 + i)),
                IpNet::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1 + i as u16)),
            };
            let key = NhKey {
                ifindex: self.b,
                via,
                vlan,
            };
            let id = self.fib.nexthop(key, &self.port_b).unwrap();
            self.fib
                .update_neighbour(self.b, via, Some(nh_mac(i)), false)
                .unwrap();
            ids.push(id);
        }
        self.fib
            .set_route(
                prefix,
                Source::Static,
                Target::Forward(ids.as_slice().into()),
            )
            .unwrap();
        ids
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(frame, self.a)
    }

    fn run_on(&self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 64];
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let mut ctx = Vec::new();
        for v in [0u32, frame.len() as u32, 0, ingress, 0, 0] {
            ctx.extend_from_slice(&v.to_ne_bytes());
        }
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        };
        let result = self
            .fib
            .dataplane()
            .program()
            .unwrap()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn count(&self, slot: u32, reason: u32) -> u64 {
        self.fib.dataplane().counters(slot).unwrap()[reason as usize].packets
    }
}

/// Runs `f` with a fresh rig inside a new namespace holding the veth pair in0/out0.
fn with_rig(name: &str, settings: Settings, f: impl FnOnce(&mut Rig) + Send) {
    with_rig_options(name, settings, LoadOptions::default(), f)
}

fn with_rig_options(
    name: &str,
    settings: Settings,
    options: LoadOptions,
    f: impl FnOnce(&mut Rig) + Send,
) {
    if !require_root(name) {
        return;
    }
    let _guard = serial();
    let ns = Netns::new("xdp").unwrap();
    veth(&ns, "in0", &ns, "out0").unwrap();
    ns.run(|| {
        let mut rig = Rig::with_options(settings, options.clone());
        f(&mut rig)
    });
}

fn udp4(dst: Ipv4Addr, sport: u16, ttl: u8) -> Vec<u8> {
    eth_ipv4_udp(NVA_MAC, CLIENT_MAC, CLIENT, dst, sport, 53, ttl, b"payload")
}

fn udp6(dst: Ipv6Addr, sport: u16, hop_limit: u8) -> Vec<u8> {
    eth_ipv6_udp(
        NVA_MAC, CLIENT_MAC, CLIENT6, dst, sport, 53, hop_limit, b"payload",
    )
}

fn default_settings() -> Settings {
    Settings {
        hash_seed: 0x1234_5678,
        flags: 0,
    }
}

#[test]
fn ipv4_is_forwarded_with_ttl_checksum_and_macs_rewritten() {
    with_rig("ipv4_forward", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        let frame = udp4(SERVICE, 4000, 64);
        let (action, out) = rig.run(&frame);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out.len(), frame.len());
        assert_eq!(&out[0..6], &nh_mac(1), "destination MAC is the next hop's");
        assert_eq!(&out[6..12], &NVA_MAC, "source MAC is the egress port's");
        assert_eq!(out[14 + 8], 63, "TTL decremented");
        assert!(ipv4_header_valid(&out[14..34]), "IPv4 checksum still valid");
        assert_eq!(&out[34..], &frame[34..], "L4 untouched");
        assert_eq!(rig.count(1, reason::FORWARDED), 1);
    });
}

#[test]
fn ipv6_is_forwarded_with_hop_limit_decremented() {
    with_rig("ipv6_forward", default_settings(), |rig| {
        rig.route("fd00:100::/64", 1, 0);
        let frame = udp6(SERVICE6, 4000, 64);
        let (action, out) = rig.run(&frame);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(&out[0..6], &nh_mac(1));
        assert_eq!(&out[6..12], &NVA_MAC);
        assert_eq!(out[14 + 7], 63);
        assert_eq!(&out[14 + 8..], &frame[14 + 8..]);
        assert_eq!(rig.count(1, reason::FORWARDED), 1);
    });
}

#[test]
fn longest_prefix_wins() {
    with_rig("lpm", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        let prefix: IpNet = "10.100.0.0/24".parse().unwrap();
        rig.fib
            .set_route(prefix, Source::Static, Target::Blackhole)
            .unwrap();
        assert_eq!(rig.run(&udp4(SERVICE, 1, 64)).0, XDP_DROP);
        assert_eq!(
            rig.run(&udp4(Ipv4Addr::new(10, 100, 1, 1), 1, 64)).0,
            XDP_REDIRECT
        );
        assert_eq!(rig.count(1, reason::DROP_BLACKHOLE), 1);
    });
}

#[test]
fn egress_on_the_ingress_port_uses_xdp_tx() {
    with_rig("hairpin", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        let (action, out) = rig.run_on(&udp4(SERVICE, 1, 64), rig.b);
        assert_eq!(action, XDP_TX);
        assert_eq!(&out[0..6], &nh_mac(1));
        assert_eq!(rig.count(2, reason::TX), 1);
    });
}

#[test]
fn expiring_ttl_goes_to_the_kernel_unchanged() {
    with_rig("ttl", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        rig.route("fd00:100::/64", 1, 0);
        for frame in [
            udp4(SERVICE, 1, 1),
            udp4(SERVICE, 1, 0),
            udp6(SERVICE6, 1, 1),
        ] {
            let (action, out) = rig.run(&frame);
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, frame, "the kernel gets the original frame");
        }
        assert_eq!(rig.count(1, reason::PASS_TTL), 3);
    });
}

#[test]
fn no_route_passes_or_drops_as_configured() {
    with_rig("no_route_pass", default_settings(), |rig| {
        assert_eq!(rig.run(&udp4(SERVICE, 1, 64)).0, XDP_PASS);
        assert_eq!(rig.run(&udp6(SERVICE6, 1, 64)).0, XDP_PASS);
        assert_eq!(rig.count(1, reason::PASS_NO_ROUTE), 2);
    });
    let drop = Settings {
        hash_seed: 1,
        flags: SET_DROP_NO_ROUTE,
    };
    with_rig("no_route_drop", drop, |rig| {
        assert_eq!(rig.run(&udp4(SERVICE, 1, 64)).0, XDP_DROP);
        assert_eq!(rig.run(&udp6(SERVICE6, 1, 64)).0, XDP_DROP);
        assert_eq!(rig.count(1, reason::DROP_NO_ROUTE), 2);
    });
}

#[test]
fn local_link_scoped_and_non_ip_go_to_the_kernel() {
    with_rig("local", default_settings(), |rig| {
        let local: IpNet = "10.0.0.1/32".parse().unwrap();
        rig.fib
            .set_route(local, Source::Local, Target::Local)
            .unwrap();
        let frames = [
            udp4(Ipv4Addr::new(10, 0, 0, 1), 1, 64),
            udp4(Ipv4Addr::new(224, 0, 0, 5), 1, 1),
            udp4(Ipv4Addr::BROADCAST, 1, 64),
            udp6("ff02::1".parse().unwrap(), 1, 1),
            udp6("fe80::1".parse().unwrap(), 1, 64),
        ];
        for f in &frames {
            assert_eq!(rig.run(f).0, XDP_PASS);
        }
        assert_eq!(rig.count(1, reason::PASS_LOCAL), frames.len() as u64);
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&CLIENT_MAC);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        assert_eq!(rig.run(&arp).0, XDP_PASS);
        assert_eq!(rig.count(1, reason::PASS_NOT_IP), 1);
    });
}

#[test]
fn unresolved_next_hop_and_too_big_packets_go_to_the_kernel() {
    with_rig("neigh_mtu", default_settings(), |rig| {
        // A next hop nobody has resolved yet: its traffic goes to the kernel.
        let key = NhKey {
            ifindex: rig.b,
            via: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 9)),
            vlan: 0,
        };
        let unresolved = rig.fib.nexthop(key, &rig.port_b).unwrap();
        let prefix: IpNet = "10.200.0.0/16".parse().unwrap();
        rig.fib
            .set_route(prefix, Source::Static, Target::Forward([unresolved].into()))
            .unwrap();
        let to_unresolved = udp4(Ipv4Addr::new(10, 200, 0, 1), 1, 64);
        assert_eq!(rig.run(&to_unresolved).0, XDP_PASS);
        assert_eq!(rig.count(1, reason::PASS_NEIGH), 1);

        let ids = rig.route("10.100.0.0/16", 1, 0);
        let small_mtu = Port {
            mtu: 100,
            ..rig.port_b.clone()
        };
        rig.fib.update_port(rig.b, &small_mtu).unwrap();
        let big = eth_ipv4_udp(NVA_MAC, CLIENT_MAC, CLIENT, SERVICE, 1, 2, 64, &[0u8; 200]);
        assert_eq!(rig.run(&big).0, XDP_PASS);
        assert_eq!(rig.count(1, reason::PASS_MTU), 1);
        assert_eq!(
            rig.run(&udp4(SERVICE, 1, 64)).0,
            XDP_REDIRECT,
            "small one fits"
        );
        assert_eq!(ids.len(), 1);
    });
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    with_rig("malformed", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        rig.route("fd00:100::/64", 1, 0);
        let good = udp4(SERVICE, 1, 64);
        let good6 = udp6(SERVICE6, 1, 64);
        let mut bad: Vec<(&str, Vec<u8>)> = Vec::new();
        bad.push(("truncated IPv4 header", good[..14 + 12].to_vec()));
        let mut f = good.clone();
        f[14] = 0x44; // IHL 4 (< 5)
        fix_ipv4_checksum(&mut f);
        bad.push(("IHL below 5", f));
        let mut f = good.clone();
        f[14] = 0x4f; // IHL 15: 60-byte header, longer than the packet
        bad.push(("IHL past the end", f));
        let mut f = good.clone();
        f[14] = 0x55; // version 5
        fix_ipv4_checksum(&mut f);
        bad.push(("IP version 5 in an IPv4 frame", f));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&1000u16.to_be_bytes()); // total length beyond frame
        fix_ipv4_checksum(&mut f);
        bad.push(("total length beyond frame", f));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&10u16.to_be_bytes()); // total length < header
        fix_ipv4_checksum(&mut f);
        bad.push(("total length below header length", f));
        let mut f = good.clone();
        f[24] ^= 0x55; // corrupt checksum
        bad.push(("bad header checksum", f));
        bad.push(("truncated IPv6 header", good6[..14 + 30].to_vec()));
        let mut f = good6.clone();
        f[18..20].copy_from_slice(&2000u16.to_be_bytes());
        bad.push(("IPv6 payload length beyond frame", f));
        let mut f = good6.clone();
        f[14] = 0x40;
        bad.push(("IP version 4 in an IPv6 frame", f));
        bad.push(("truncated VLAN tag", with_vlan(&good, 10)[..16].to_vec()));

        for (what, frame) in &bad {
            assert_eq!(rig.run(frame).0, XDP_DROP, "{what}");
        }
        assert_eq!(rig.count(1, reason::DROP_MALFORMED), bad.len() as u64);
        assert_eq!(rig.count(1, reason::FORWARDED), 0);
        // Padding after the IP packet (short frames padded to 60 bytes) is fine.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(rig.run(&padded).0, XDP_REDIRECT);
    });
}

#[test]
fn vlan_tags_are_removed_added_and_rewritten() {
    with_rig("vlan", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        rig.route("10.101.0.0/16", 1, 20);
        let plain = udp4(SERVICE, 1, 64);

        // Tagged in, untagged out: the tag is removed.
        let (action, out) = rig.run(&with_vlan(&plain, 10));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out.len(), plain.len());
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(out[14 + 8], 63);
        assert!(ipv4_header_valid(&out[14..34]));

        // Untagged in, tagged out: a tag with the next hop's VLAN is added.
        let to_vlan = udp4(Ipv4Addr::new(10, 101, 0, 1), 1, 64);
        let (action, out) = rig.run(&to_vlan);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out.len(), to_vlan.len() + 4);
        assert_eq!(&out[12..14], &[0x81, 0x00]);
        assert_eq!(u16::from_be_bytes([out[14], out[15]]) & 0x0fff, 20);
        assert_eq!(&out[16..18], &[0x08, 0x00]);
        assert_eq!(out[18 + 8], 63);
        assert!(ipv4_header_valid(&out[18..38]));

        // Tagged in, tagged out: the VLAN id is rewritten.
        let (action, out) = rig.run(&with_vlan(&to_vlan, 10));
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(out.len(), to_vlan.len() + 4);
        assert_eq!(u16::from_be_bytes([out[14], out[15]]) & 0x0fff, 20);
        assert_eq!(rig.count(1, reason::FORWARDED), 3);
    });
}

/// Which next hop (by MAC index) a frame was sent to.
fn chosen(rig: &Rig, frame: &[u8]) -> u8 {
    let (action, out) = rig.run(frame);
    assert_eq!(action, XDP_REDIRECT);
    out[5]
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_one_next_hop() {
    with_rig("ecmp", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 4, 0);
        let mut per_nh = [0u32; 5];
        for sport in 0..2000u16 {
            let frame = udp4(SERVICE, 10_000 + sport, 64);
            let first = chosen(rig, &frame);
            assert_eq!(chosen(rig, &frame), first, "same flow, same next hop");
            per_nh[first as usize] += 1;
        }
        for (i, &n) in per_nh.iter().enumerate().skip(1) {
            assert!(
                (350..=650).contains(&n),
                "next hop {i} got {n} of 2000 flows: {per_nh:?}"
            );
        }
    });
}

#[test]
fn removing_a_next_hop_moves_only_its_flows() {
    with_rig("resilient", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 4, 0);
        let frames: Vec<Vec<u8>> = (0..1000u16)
            .map(|p| udp4(SERVICE, 20_000 + p, 64))
            .collect();
        let before: Vec<u8> = frames.iter().map(|f| chosen(rig, f)).collect();
        // Next hop 3 fails (its neighbour entry goes FAILED).
        let via = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 4));
        rig.fib.update_neighbour(rig.b, via, None, true).unwrap();
        let after: Vec<u8> = frames.iter().map(|f| chosen(rig, f)).collect();
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == 3 {
                assert_ne!(*a, 3, "flows of the failed next hop move");
                moved += 1;
            } else {
                assert_eq!(b, a, "flows of healthy next hops stay");
            }
        }
        assert!(moved > 150, "next hop 3 had {moved} flows");
        // And back: when it recovers, flows of the others still stay put.
        rig.fib
            .update_neighbour(rig.b, via, Some(nh_mac(3)), false)
            .unwrap();
        let back: Vec<u8> = frames.iter().map(|f| chosen(rig, f)).collect();
        for (b, a) in before.iter().zip(&back) {
            if *b != 3 {
                assert!(*a == *b || *a == 3);
            }
        }
    });
}

#[test]
fn symmetric_hash_gives_both_directions_the_same_next_hop() {
    let settings = Settings {
        hash_seed: 99,
        flags: SET_SYMMETRIC_HASH,
    };
    with_rig("symmetric", settings, |rig| {
        rig.route("10.0.0.0/8", 4, 0);
        let mut differ = 0;
        for p in 0..300u16 {
            let a = Ipv4Addr::new(10, 1, (p >> 8) as u8, p as u8);
            let b = Ipv4Addr::new(10, 2, 0, 1);
            let fwd = eth_ipv4_udp(NVA_MAC, CLIENT_MAC, a, b, 1000 + p, 443, 64, b"x");
            let rev = eth_ipv4_udp(NVA_MAC, CLIENT_MAC, b, a, 443, 1000 + p, 64, b"x");
            assert_eq!(chosen(rig, &fwd), chosen(rig, &rev));
            let other = eth_ipv4_udp(NVA_MAC, CLIENT_MAC, a, b, 2000 + p, 443, 64, b"x");
            differ += usize::from(chosen(rig, &other) != chosen(rig, &fwd));
        }
        assert!(differ > 100, "ports still matter: {differ}");
    });
}

#[test]
fn fragments_hash_on_addresses_only() {
    with_rig("fragments", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 4, 0);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 0..200u16 {
            let mut f = udp4(SERVICE, sport, 64);
            f[20] = 0x20; // more fragments, offset 0 (and DF cleared)
            fix_ipv4_checksum(&mut f);
            seen.insert(chosen(rig, &f));
            let mut later = f.clone();
            later[20..22].copy_from_slice(&(0x0010u16).to_be_bytes()); // offset 16*8, last
            fix_ipv4_checksum(&mut later);
            assert_eq!(chosen(rig, &later), chosen(rig, &f));
        }
        assert_eq!(seen.len(), 1, "the 'ports' of fragments are not hashed");
    });
}

/// IPv6 frame with a hop-by-hop and a destination-options header before UDP.
fn udp6_with_ext_headers(sport: u16) -> Vec<u8> {
    let plain = udp6(SERVICE6, sport, 64);
    let udp = &plain[14 + 40..];
    let mut f = plain[..14 + 40].to_vec();
    f[14 + 6] = 0; // next header: hop-by-hop
    let ext_len = 16;
    f[18..20].copy_from_slice(&((udp.len() + ext_len) as u16).to_be_bytes());
    f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // HBH -> dest opts, PadN
    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // dest opts -> UDP, PadN
    f.extend_from_slice(udp);
    f
}

#[test]
fn ipv6_extension_headers_are_skipped_to_find_ports() {
    with_rig("ipv6_ext", default_settings(), |rig| {
        rig.route("fd00:100::/64", 4, 0);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 0..200u16 {
            let with_ext = chosen(rig, &udp6_with_ext_headers(sport));
            assert_eq!(with_ext, chosen(rig, &udp6(SERVICE6, sport, 64)));
            seen.insert(with_ext);
        }
        assert_eq!(seen.len(), 4, "ports behind extension headers spread flows");
    });
}

/// Installs 400 random routes (lengths from `lens`, half of them blackholes) next to
/// `routes`, then checks the real XDP program's verdict for random destinations and for
/// both ends of every route against a reference longest-prefix match; then removes half
/// of the routes and checks again. `random` gives an address and the random number it
/// came from.
fn fib_answers_like_a_reference(
    rig: &mut Rig,
    forward: u16,
    mut routes: Vec<(IpNet, bool)>,
    lens: &[u8],
    mut random: impl FnMut() -> (IpAddr, u64),
) {
    for _ in 0..400 {
        let (a, r) = random();
        let len = lens[(r >> 40) as usize % lens.len()];
        let prefix = IpNet::new(a, len).unwrap().trunc();
        let blackhole = (r >> 50) % 2 == 0;
        let target = if blackhole {
            Target::Blackhole
        } else {
            Target::Forward([forward].into())
        };
        rig.fib.set_route(prefix, Source::Static, target).unwrap();
        routes.retain(|(p, _)| *p != prefix);
        routes.push((prefix, blackhole));
    }
    let expect = |routes: &[(IpNet, bool)], a: IpAddr| {
        routes
            .iter()
            .filter(|(p, _)| p.contains(&a))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, b)| if *b { XDP_DROP } else { XDP_REDIRECT })
            .unwrap_or(XDP_PASS)
    };
    for round in 0..2 {
        let mut probes: Vec<IpAddr> = (0..300).map(|_| random().0).collect();
        for (p, _) in &routes {
            probes.push(p.network());
            probes.push(p.broadcast());
        }
        for a in probes {
            let frame = match a {
                IpAddr::V4(a) => udp4(a, 1, 64),
                IpAddr::V6(a) => {
                    if a.segments()[0] & 0xffc0 == 0xfe80 || a.segments()[0] >> 8 == 0xff {
                        continue; // link-scoped and multicast never reach the FIB
                    }
                    udp6(a, 1, 64)
                }
            };
            let (action, _) = rig.run(&frame);
            let userspace = rig.fib.dataplane().lookup(1, a);
            assert_eq!(
                action,
                expect(&routes, a),
                "round {round}: {a} (userspace view of the table: {userspace:?})"
            );
        }
        let removed: Vec<_> = routes.iter().step_by(2).cloned().collect();
        for (p, _) in &removed {
            rig.fib.remove_route(*p, Source::Static).unwrap();
        }
        routes.retain(|r| !removed.contains(r));
    }
}

/// xorshift64 from a fixed seed.
fn xorshift() -> impl FnMut() -> u64 {
    let mut rng = nva_testkit::Rng::xorshift(0x2545_f491_4f6c_dd1d);
    move || rng.next_u64()
}

/// The IPv6 multibit trie answers like a reference longest-prefix match, in the real XDP
/// program, for random nested tables (from ::/0 to /128) and random destinations, and
/// while routes are removed.
#[test]
fn multibit_ipv6_fib_answers_like_a_reference_lpm() {
    let options = LoadOptions {
        multibit_ipv6: [true, true],
        multibit_blocks: 1 << 16,
        ..Default::default()
    };
    with_rig_options("mbt6", default_settings(), options, |rig| {
        let forward = rig.route("2001:db8:ffff::/48", 1, 0)[0];
        let mut next = xorshift();
        // Addresses in 2001:db8::/32 with the bits below /64 mostly zero, so prefixes of
        // all lengths nest and overlap.
        let addr = move || {
            let r = next();
            let hi = 0x2001_0db8_0000_0000u64 | (r & 0x0000_0000_00ff_f0ff);
            let lo = if r >> 60 == 0 { next() } else { 0 };
            (IpAddr::V6(((hi as u128) << 64 | lo as u128).into()), r)
        };
        let lens = [
            0u8, 16, 20, 29, 32, 36, 40, 44, 46, 48, 48, 52, 56, 64, 65, 100, 128,
        ];
        let base = vec![("2001:db8:ffff::/48".parse().unwrap(), false)];
        fib_answers_like_a_reference(rig, forward, base, &lens, addr);
    });
}

/// DIR-24-8 answers like a reference longest-prefix match, in the real XDP program, for
/// random nested tables and random destinations, and while routes are removed.
#[test]
fn dir24_fib_answers_like_a_reference_lpm() {
    let options = LoadOptions {
        dir24_ipv4: [true, true],
        ..Default::default()
    };
    with_rig_options("dir24", default_settings(), options, |rig| {
        // Fib has no east-west prefixes configured here: everything is north-south.
        let forward = rig.route("203.0.113.0/24", 1, 0)[0];
        let mut next = xorshift();
        let addr = move || {
            let r = next();
            (
                IpAddr::V4((0x0a00_0000 | (r as u32 & 0x00ff_ffff)).into()),
                r,
            )
        };
        let lens = [8u8, 14, 16, 20, 24, 24, 25, 27, 30, 32];
        fib_answers_like_a_reference(rig, forward, Vec::new(), &lens, addr);
    });
}

/// DXR answers like a reference longest-prefix match, in the real XDP program, for
/// random nested tables across many /16 chunks, and while routes are removed.
#[test]
fn dxr_fib_answers_like_a_reference_lpm() {
    let options = LoadOptions {
        dxr_ipv4: [true, true],
        ..Default::default()
    };
    with_rig_options("dxr", default_settings(), options, |rig| {
        let forward = rig.route("203.0.113.0/24", 1, 0)[0];
        let mut next = xorshift();
        let addr = move || {
            let r = next();
            (
                IpAddr::V4((0x0a00_0000 | (r as u32 & 0x00ff_ffff)).into()),
                r,
            )
        };
        let lens = [8u8, 12, 14, 16, 17, 20, 24, 24, 25, 27, 30, 32];
        fib_answers_like_a_reference(rig, forward, Vec::new(), &lens, addr);
    });
}

/// The IPv4 policy table (class and segment of an address, built from the union of the
/// east-west and segment prefixes) answers like the two longest matches it replaces:
/// random nested class and segment prefixes, random denied pairs, random sources and
/// destinations, then again after half of the prefixes are removed.
#[test]
fn class_and_segment_prefixes_nest_like_two_longest_matches() {
    let addr = |r: u64| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (r >> 20) as u32 & 0x00ff_ffff));
    policy_like_two_longest_matches(
        "policy",
        "192.0.2.0/24",
        "0.0.0.0/0",
        addr,
        (9, 26),
        (8, 30),
    );
}

/// The same for IPv6 (the class and segment LPM tries).
#[test]
fn ipv6_class_and_segment_prefixes_nest_like_two_longest_matches() {
    // Under fd00::/16 with bits spread over the first 64, so /16 to /64 nest and overlap.
    let addr = |r: u64| {
        let hi = 0xfd00_0000_0000_0000u64 | (r & 0x0000_ff0f_f0ff_0f0f);
        IpAddr::V6(Ipv6Addr::from((hi as u128) << 64 | (r >> 7) as u128))
    };
    policy_like_two_longest_matches(
        "policy6",
        "2001:db8:ffff::/48",
        "::/0",
        addr,
        (20, 56),
        (16, 64),
    );
}

/// East-west destinations (in a class prefix) are forwarded unless their segment pair is
/// denied; north-south ones hit a blackhole default. `addr` turns a random number into
/// an address; prefixes of `class_lens` and `segment_lens` are drawn around such addresses.
fn policy_like_two_longest_matches(
    name: &str,
    nexthop_route: &str,
    default: &str,
    addr: impl Fn(u64) -> IpAddr + Send + Sync,
    class_lens: (u64, u64),
    segment_lens: (u64, u64),
) {
    let settings = Settings {
        flags: nva_common::SET_SEGMENTS,
        ..default_settings()
    };
    with_rig(name, settings, |rig| {
        use nva::fib::Table;
        let ids = rig.route(nexthop_route, 1, 0);
        let any: IpNet = default.parse().unwrap();
        let forward = Target::Forward(ids.as_slice().into());
        rig.fib
            .set_route_in(Table::EastWest, any, Source::Static, forward)
            .unwrap();
        rig.fib
            .set_route_in(Table::NorthSouth, any, Source::Static, Target::Blackhole)
            .unwrap();
        let mut next = xorshift();
        let prefix = |r: u64, (min, max): (u64, u64)| -> IpNet {
            let len = (min + (r >> 50) % (max - min + 1)) as u8;
            IpNet::new(addr(r), len).unwrap().trunc()
        };
        let mut classes: Vec<IpNet> = (0..12).map(|_| prefix(next(), class_lens)).collect();
        let mut segments: Vec<(IpNet, u32)> = (0..40)
            .map(|i| (prefix(next(), segment_lens), 1 + i % 15))
            .collect();
        classes.sort();
        classes.dedup();
        segments.sort_by_key(|(p, _)| *p);
        segments.dedup_by_key(|(p, _)| *p);
        let deny: Vec<(u32, u32)> = (0..40)
            .map(|_| {
                let r = next();
                (1 + (r % 15) as u32, 1 + ((r >> 8) % 15) as u32)
            })
            .collect();
        for (from, to) in &deny {
            rig.fib
                .dataplane_mut()
                .set_segment_policy(*from, *to, true)
                .unwrap();
        }
        for round in 0..2 {
            rig.fib.set_east_west(&classes).unwrap();
            for (p, id) in &segments {
                rig.fib
                    .dataplane_mut()
                    .set_segment_prefix(p, Some(*id))
                    .unwrap();
            }
            let segment_of = |a: IpAddr| {
                segments
                    .iter()
                    .filter(|(p, _)| p.contains(&a))
                    .max_by_key(|(p, _)| p.prefix_len())
                    .map_or(0, |(_, id)| *id)
            };
            let mut addrs: Vec<IpAddr> = (0..300).map(|_| addr(next())).collect();
            for p in classes.iter().chain(segments.iter().map(|(p, _)| p)) {
                addrs.extend([p.network(), p.broadcast()]);
            }
            for (i, dst) in addrs.iter().enumerate() {
                let src = addrs[(i * 7 + 3) % addrs.len()];
                let east_west = classes.iter().any(|p| p.contains(dst));
                let denied = east_west && deny.contains(&(segment_of(src), segment_of(*dst)));
                let frame = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        eth_ipv4_udp(NVA_MAC, CLIENT_MAC, s, *d, 1000, 53, 64, b"x")
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        eth_ipv6_udp(NVA_MAC, CLIENT_MAC, s, *d, 1000, 53, 64, b"x")
                    }
                    _ => unreachable!("one family"),
                };
                let before = rig.count(1, reason::DROP_SEGMENT);
                let (action, _) = rig.run(&frame);
                let segment_drop = rig.count(1, reason::DROP_SEGMENT) > before;
                let expected = match (east_west, denied) {
                    (false, _) => (XDP_DROP, false),
                    (true, true) => (XDP_DROP, true),
                    (true, false) => (XDP_REDIRECT, false),
                };
                assert_eq!(
                    (action, segment_drop),
                    expected,
                    "round {round}: {src} -> {dst} (segments {} -> {})",
                    segment_of(src),
                    segment_of(*dst)
                );
            }
            // Remove every other prefix of both sets.
            let gone: Vec<(IpNet, u32)> = segments.iter().step_by(2).copied().collect();
            for (p, _) in &gone {
                rig.fib.dataplane_mut().set_segment_prefix(p, None).unwrap();
            }
            segments.retain(|s| !gone.contains(s));
            classes = classes.iter().skip(1).step_by(2).copied().collect();
        }
    });
}

/// On a segment that floods (a failed router's MAC aged out of the switch), frames for
/// another router's MAC reach us too: forwarding them would duplicate them. They go to
/// the kernel (which drops them) and are counted.
#[test]
fn unicast_frames_for_another_mac_are_not_forwarded() {
    with_rig("other_host", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        rig.fib
            .dataplane_mut()
            .add_port(rig.a, 1, 0, NVA_MAC)
            .unwrap();
        let (action, _) = rig.run(&udp4(SERVICE, 4000, 64));
        assert_eq!(action, XDP_REDIRECT, "for our MAC: forwarded");
        let mut other = udp4(SERVICE, 4000, 64);
        other[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        let (action, out) = rig.run(&other);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, other, "passed unchanged");
        assert_eq!(rig.count(1, reason::PASS_OTHER_HOST), 1);
        // Group addresses are not unicast: not this check's business.
        let mut bcast = udp4(SERVICE, 4000, 64);
        bcast[0..6].copy_from_slice(&[0xff; 6]);
        rig.run(&bcast);
        assert_eq!(rig.count(1, reason::PASS_OTHER_HOST), 1);
    });
}

/// An egress port missing from the redirect map (an interface a reload is removing):
/// the frame goes to the kernel exactly as it came, TTL and MACs untouched (before, it
/// was passed up already rewritten).
#[test]
fn a_missing_egress_port_passes_the_frame_untouched() {
    with_rig("no_txport", default_settings(), |rig| {
        rig.route("10.100.0.0/16", 1, 0);
        let b = rig.b;
        rig.fib.dataplane_mut().remove_port(b).unwrap();
        let frame = udp4(SERVICE, 4000, 64);
        let (action, out) = rig.run(&frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, frame, "passed as it came");
        assert_eq!(rig.count(1, reason::PASS_NO_TXPORT), 1);
    });
}
