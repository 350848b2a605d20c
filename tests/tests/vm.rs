//! nva on real Linux guests (QEMU, software emulation) with stock Debian kernels: native
//! XDP on virtio-net, traffic from the kernel's pktgen.
//!
//! ```text
//!  generator guest             router guest (nva)                  host namespaces
//!  eth0 --- br-a (lab ns) --- eth0      eth1 --- br-b (lab ns) ---+--- sink 1 (10.2.0.11, fd02::11)
//!  pktgen                     native XDP, ECMP                     +--- sink 2 (10.2.0.12, fd02::12)
//! ```
//!
//! Both sinks accept 10.9.0.0/24 and 2001:db8:9::/64 locally and count UDP datagrams.
//! The bench's pktgen backend (`nva-bench --generator pktgen --dev eth0`, one pktgen
//! thread per vCPU of the generator) runs there too, toward the same nva.
//! Rates stay at 2,000 pps: emulated virtio loses frames above a few thousand, and the
//! counts are asserted exactly. Each kernel gets one boot of both guests and one
//! sequence of checks (boots under emulation cost 15-30 s each). Run by `cargo xtask
//! test`, which installs the kernels and virtio-ng (`cargo xtask setup`); a plain `cargo
//! test` without them skips.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nva_tests::netns::Netns;
use nva_tests::vm::{Guest, Kernel, Lab, Nic, Pktgen, pktgen_sent};
use nva_tests::{Counters, UdpSink, nva_binary, require_root, serial, wait_until};

const ROUTER_IN_MAC: &str = "52:54:00:4e:56:01";
const ROUTER_OUT_MAC: &str = "52:54:00:4e:56:02";
const GEN_MAC: &str = "52:54:00:4e:56:10";
/// Packets per stream and their rate.
const COUNT: u64 = 1000;
const PPS: u32 = 2000;
/// Flows per stream (UDP source ports).
const SRC_PORTS: (u16, u16) = (20000, 20063);
const SINK_PORT: u16 = 9;
/// The generator guest's vCPUs: one pktgen thread each in the bench's run.
const GEN_CPUS: u32 = 2;
/// Packets per pktgen thread of the bench's run, and the gap between them (1,000 pps per
/// thread).
const BENCH_COUNT: u64 = 400;
const BENCH_DELAY_NS: u64 = 1_000_000;

/// `nva-bench`: `$NVA_BENCH_BIN`, else next to the `nva` the tests run.
fn nva_bench_binary() -> PathBuf {
    let p = std::env::var_os("NVA_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| nva_binary().unwrap().with_file_name("nva-bench"));
    assert!(
        p.is_file(),
        "nva-bench not found at {} (cargo build -p nva-bench, or point NVA_BENCH_BIN at it)",
        p.display()
    );
    p
}

fn router_config() -> String {
    r#"
[dataplane]
xdp_mode = "native"
# Small FIBs: the guest has 512 MiB.
ipv4_fib_north_south = "lpm-trie"
ipv6_fib_north_south = "lpm-trie"

[health]
probe = "icmp"
interval_ms = 200
multiplier = 3

[[interfaces]]
name = "eth0"

[[interfaces]]
name = "eth1"

[[routes]]
prefix = "10.9.0.0/24"
nexthops = [{ via = "10.2.0.11" }, { via = "10.2.0.12" }]

[[routes]]
prefix = "2001:db8:9::/64"
nexthops = [{ via = "fd02::11" }, { via = "fd02::12" }]
"#
    .to_string()
}

/// Everything of one run; fields drop in order: guests first, then the namespaces.
struct Rig {
    router: Guest,
    generator: Guest,
    sinks: Vec<UdpSink>,
    sink_ns: Vec<Netns>,
    _lab: Lab,
    nva: String,
}

impl Rig {
    fn build(kernel: &Kernel) -> Rig {
        let lab = Lab::new("vm").unwrap();
        lab.bridge("br-a").unwrap();
        lab.bridge("br-b").unwrap();
        lab.tap("tap-gen", "br-a", GEN_CPUS).unwrap();
        lab.tap("tap-r0", "br-a", 4).unwrap();
        lab.tap("tap-r1", "br-b", 4).unwrap();
        let mut sink_ns = Vec::new();
        for k in 1..=2 {
            let ns = Netns::new(&format!("sink{k}")).unwrap();
            lab.attach(&ns, "eth0", &format!("sink{k}"), "br-b")
                .unwrap();
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
            ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0").unwrap();
            ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0").unwrap();
            ns.ip(&format!("addr add 10.2.0.1{k}/24 dev eth0")).unwrap();
            ns.ip(&format!("-6 addr add fd02::1{k}/64 dev eth0 nodad"))
                .unwrap();
            ns.ip("route add local 10.9.0.0/24 dev lo").unwrap();
            ns.ip("-6 route add local 2001:db8:9::/64 dev lo").unwrap();
            sink_ns.push(ns);
        }
        let sinks = sink_ns
            .iter()
            .map(|ns| {
                UdpSink::start(
                    ns,
                    &[
                        SocketAddr::new("0.0.0.0".parse().unwrap(), SINK_PORT),
                        SocketAddr::new("::".parse().unwrap(), SINK_PORT),
                    ],
                )
                .unwrap()
            })
            .collect();
        // Two vCPUs and four queue pairs for the router: XDP_REDIRECT gets TX queues of
        // its own on virtio-net. Both guests boot at once.
        let mut router = Guest::start(
            &lab,
            "router",
            kernel,
            2,
            &[
                Nic::new("tap-r0", ROUTER_IN_MAC, 4),
                Nic::new("tap-r1", ROUTER_OUT_MAC, 4),
            ],
        )
        .unwrap();
        // As many queue pairs as vCPUs: one TX queue per pktgen thread.
        let mut generator = Guest::start(
            &lab,
            "gen",
            kernel,
            GEN_CPUS,
            &[Nic::new("tap-gen", GEN_MAC, GEN_CPUS)],
        )
        .unwrap();
        router.wait_ready(Duration::from_secs(180)).unwrap();
        generator.wait_ready(Duration::from_secs(180)).unwrap();
        let nva = nva_binary().unwrap().display().to_string();
        Rig {
            router,
            generator,
            sinks,
            sink_ns,
            _lab: lab,
            nva,
        }
    }

    /// `nva CMD --json` in the router guest.
    fn nva_json(&self, cmd: &str) -> anyhow::Result<serde_json::Value> {
        let out = self.router.sh(&format!("{} {cmd} --json", self.nva))?;
        Ok(serde_json::from_str(&out)?)
    }

    fn counters(&self) -> Counters {
        Counters::from_json(&self.nva_json("stats").unwrap()).unwrap()
    }

    fn nva_log(&self) -> String {
        std::fs::read_to_string(self.router.share().join("nva.log")).unwrap_or_default()
    }

    /// Sends one pktgen stream to `dst`; returns what each sink received (datagrams
    /// with their UDP source ports) after the counts settle.
    fn stream(&self, dst: IpAddr) -> (Vec<usize>, Vec<Vec<u16>>, Counters) {
        for s in &self.sinks {
            s.clear();
        }
        let before = self.counters();
        let src: IpAddr = if dst.is_ipv6() {
            "fd01::2".parse().unwrap()
        } else {
            "10.1.0.2".parse().unwrap()
        };
        let pg = Pktgen {
            dev: "eth0",
            dst_mac: ROUTER_IN_MAC,
            src,
            dst,
            dst_port: SINK_PORT,
            src_ports: SRC_PORTS,
            count: COUNT,
            pps: PPS,
            size: 128,
        };
        let started = Instant::now();
        let report = self
            .generator
            .sh_status(&pg.script(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(report.0, 0, "pktgen failed:\n{}", report.1);
        assert_eq!(
            pktgen_sent(&report.1),
            Some(COUNT),
            "pktgen report:\n{}",
            report.1
        );
        // Arrivals stop growing (or all arrived): then count.
        let _ = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            Ok(self.sinks.iter().map(UdpSink::count).sum::<usize>() as u64 >= COUNT)
        });
        std::thread::sleep(Duration::from_millis(500));
        let counts: Vec<usize> = self.sinks.iter().map(UdpSink::count).collect();
        let ports = self
            .sinks
            .iter()
            .map(|s| {
                let mut p: Vec<u16> = s.received().iter().map(|d| d.src.port()).collect();
                p.sort_unstable();
                p.dedup();
                p
            })
            .collect();
        let delta = self.counters().since(&before);
        eprintln!(
            "vm: {dst}: {COUNT} sent in {:.1?}, received {counts:?}",
            started.elapsed()
        );
        (counts, ports, delta)
    }

    /// Every packet of the stream (`count`) was forwarded in XDP on eth0, none went to
    /// the kernel.
    fn assert_all_forwarded(&self, dst: IpAddr, count: u64, delta: &Counters) {
        assert_eq!(
            delta.get("eth0", "forwarded"),
            count,
            "{dst}: XDP forwarded on eth0, counters {delta:?}\nnva log:\n{}",
            self.nva_log()
        );
        for reason in nva_common::reason::NAMES {
            if reason.starts_with("passed-") || reason.starts_with("dropped-") {
                // Neighbour discovery and router solicitations of the router's own
                // stack arrive on eth1 and are the kernel's (passed-local).
                if reason == "passed-local" || reason == "passed-not-ip" {
                    continue;
                }
                assert_eq!(
                    delta.total(reason),
                    0,
                    "{dst}: {reason} during the stream: {delta:?}"
                );
            }
        }
    }
}

impl Rig {
    /// The bench's pktgen backend in the generator guest toward nva: `nva-bench
    /// --generator pktgen --dev eth0 --src SRC --dst DST`, one thread per vCPU, the 64
    /// destinations of DST and 64 flows, paced. The bench's figures are pktgen's own, every packet it reports sent was
    /// forwarded by nva in XDP and arrived, over both next hops. Under emulation the
    /// rates say nothing about speed: this checks that it works.
    fn bench_pktgen(&self, src: &str, dst: &str) {
        for s in &self.sinks {
            s.clear();
        }
        let before = self.counters();
        let started = Instant::now();
        let cmd = format!(
            "{} --generator pktgen --dev eth0 --dst-mac {ROUTER_IN_MAC} --src {src} \
             --dst {dst} --udp-dst {SINK_PORT} --flows 64 --sizes 128 \
             --threads {GEN_CPUS} --count {BENCH_COUNT} --delay {BENCH_DELAY_NS} 2>&1",
            nva_bench_binary().display()
        );
        let (code, out) = self
            .generator
            .sh_status(&cmd, Duration::from_secs(120))
            .unwrap();
        eprintln!("vm: nva-bench --generator pktgen (exit {code}):\n{out}");
        assert_eq!(code, 0, "{cmd}\n{out}");
        let total = GEN_CPUS as u64 * BENCH_COUNT;
        // The bench's table: one row per thread, then the total.
        let rows: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| l.starts_with("| 128 B |"))
            .map(|l| {
                l.split('|')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), GEN_CPUS as usize + 1, "{out}");
        for (cpu, row) in rows[..GEN_CPUS as usize].iter().enumerate() {
            assert_eq!(row[1], format!("eth0@{cpu}"), "{out}");
            assert_eq!(row[2], BENCH_COUNT.to_string(), "thread {cpu} sent: {out}");
            assert_eq!(row[5], "0", "errors: {out}");
        }
        let sum = &rows[GEN_CPUS as usize];
        assert_eq!(sum[1..3], ["total", &total.to_string()], "{out}");
        let pps: u64 = sum[4].parse().unwrap();
        assert!(pps > 0, "{out}");
        assert!(
            out.contains(&format!(
                "nva-bench: pktgen 128 B: {total} packets sent by {GEN_CPUS} thread(s)"
            )),
            "{out}"
        );
        // pktgen's own files agree with the bench.
        for cpu in 0..GEN_CPUS {
            let dev = self
                .generator
                .sh(&format!("cat /proc/net/pktgen/eth0@{cpu}"))
                .unwrap();
            assert_eq!(pktgen_sent(&dev), Some(BENCH_COUNT), "eth0@{cpu}:\n{dev}");
            assert!(dev.contains("Result: OK:"), "{dev}");
        }
        let _ = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            Ok(self.sinks.iter().map(UdpSink::count).sum::<usize>() as u64 >= total)
        });
        std::thread::sleep(Duration::from_millis(500));
        let counts: Vec<usize> = self.sinks.iter().map(UdpSink::count).collect();
        let delta = self.counters().since(&before);
        eprintln!(
            "vm: bench pktgen to {dst}: {total} sent in {:.1?}, received {counts:?}",
            started.elapsed()
        );
        assert_eq!(
            counts.iter().sum::<usize>() as u64,
            total,
            "received {counts:?}, counters {delta:?}"
        );
        assert!(
            counts.iter().all(|&c| c > 0),
            "ECMP over two next hops: {counts:?}"
        );
        let first: IpAddr = dst.split('/').next().unwrap().parse().unwrap();
        self.assert_all_forwarded(first, total, &delta);
        // The next streams' pktgen uses thread 0 only.
        self.generator
            .sh("for t in /proc/net/pktgen/kpktgend_*; do echo rem_device_all > $t; done")
            .unwrap();
    }

    /// `nva-bench --generator pktgen` as `cargo xtask bench` runs it, inside the generator
    /// guest: its own namespaces, pktgen in the generator namespace (a pktgen of its own
    /// there) on veth, the 1-route modes (XDP_DROP, the minimal forwarder, nva, Linux) for
    /// both families. Every mode generated and delivered frames, nva forwarded them all
    /// in XDP, and the report names pktgen. About a minute under emulation (set-up).
    fn bench_pktgen_namespaces(&self) {
        let started = Instant::now();
        let cmd = format!(
            "{} --generator pktgen --quick --only live --secs 0.3 --sizes 64 --no-churn \
             --no-dir24 --full-v4 16 --full-v6 16 --dsts 256 --hot-dsts 256 --cpu 1 \
             --nexthops 2 \
             --out {}/bench-out 2>&1",
            nva_bench_binary().display(),
            self.generator.share().display()
        );
        let (code, out) = self
            .generator
            .sh_status(&cmd, Duration::from_secs(300))
            .unwrap();
        eprintln!(
            "vm: nva-bench --generator pktgen in namespaces (exit {code}, {:.1?}):\n{out}",
            started.elapsed()
        );
        assert_eq!(code, 0, "{cmd}\n{out}");
        // "nva-bench: run 1 IPv4   64 B Nva 1 route: 0.05 Mpps (generated 0.05; frames
        // generated 15000, received 15000), 100.0% forwarded in XDP, else -"
        let runs: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("nva-bench: run 1 "))
            .collect();
        let mut seen = Vec::new();
        for line in &runs {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (family, kind) = (words[3], words[6]);
            let number = |key: &str| -> u64 {
                let at = line.find(key).unwrap_or_else(|| panic!("{key} in {line}"));
                line[at + key.len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let (generated, received) = (number("frames generated "), number("received "));
            // Emulated: thousands to tens of thousands of frames per second (fewer on a
            // busy host); the window's edges hold frames in flight (rings, backlog).
            assert!(generated >= 100, "{line}");
            assert!(
                received >= generated / 2 && received <= generated + 2000,
                "{line}"
            );
            if kind == "Nva" {
                assert!(line.contains("100.0% forwarded in XDP"), "{line}");
            }
            seen.push(format!("{family} {kind}"));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "IPv4 Drop",
                "IPv4 Linux",
                "IPv4 Minimal",
                "IPv4 Nva",
                "IPv6 Drop",
                "IPv6 Linux",
                "IPv6 Minimal",
                "IPv6 Nva"
            ],
            "{out}"
        );
        assert!(
            out.contains("- generator: kernel pktgen (`--generator pktgen`)")
                && out.contains("### Live forwarding"),
            "{out}"
        );
    }
}

fn forwarding_on(kernel_name: &str) {
    if !require_root(&format!("vm forwarding on {kernel_name}")) {
        return;
    }
    let Some(kernel) = Kernel::find(kernel_name).unwrap() else {
        return;
    };
    let _g = serial();
    let t0 = Instant::now();
    let rig = Rig::build(&kernel);
    eprintln!("vm: {}: guests up in {:.1?}", kernel.version, t0.elapsed());

    let uname = rig.router.sh("uname -r").unwrap();
    assert_eq!(uname.trim(), kernel.version);
    let setup = "set -e
ip link set lo up
for i in eth0 eth1; do
  ip link set $i up
  sysctl -qw net.ipv6.conf.$i.accept_dad=0
done
ip addr add 10.1.0.1/24 dev eth0
ip -6 addr add fd01::1/64 dev eth0 nodad
ip addr add 10.2.0.1/24 dev eth1
ip -6 addr add fd02::1/64 dev eth1 nodad
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
cat /sys/class/net/eth0/address /sys/class/net/eth1/address
basename -a $(readlink /sys/class/net/eth0/device/driver /sys/class/net/eth1/device/driver)
";
    let nics = rig.router.sh(setup).unwrap();
    assert_eq!(
        nics.split_whitespace().collect::<Vec<_>>(),
        [ROUTER_IN_MAC, ROUTER_OUT_MAC, "virtio_net", "virtio_net"],
        "router NICs eth0 and eth1: MACs and drivers"
    );
    std::fs::write(rig.router.share().join("nva.toml"), router_config()).unwrap();
    rig.router
        .sh(&format!(
            "{} run --config {share}/nva.toml > {share}/nva.log 2>&1 &",
            rig.nva,
            share = rig.router.share().display()
        ))
        .unwrap();
    // The generator only sends (pktgen addresses frames itself): no IPv6 chatter.
    rig.generator
        .sh("set -e\nsysctl -qw net.ipv6.conf.all.disable_ipv6=1\nip link set eth0 up\nmodprobe pktgen")
        .unwrap();

    // nva attached and resolved both next hops of both families.
    wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        let st = rig.nva_json("status")?;
        Ok(st["nexthops"]["live"] == 4 && st["nexthops"]["resolved"] == 4)
    })
    .unwrap_or_else(|e| panic!("{e:#}\nnva log:\n{}", rig.nva_log()));
    eprintln!("vm: {}: nva ready at {:.1?}", kernel.version, t0.elapsed());
    let status = rig.nva_json("status").unwrap();
    for i in status["interfaces"].as_array().unwrap() {
        assert_eq!(i["attached"], true, "{status}");
    }
    // Native (driver) mode as the kernel reports it: `xdp`, not `xdpgeneric`.
    let links = rig
        .router
        .sh("ip -d link show eth0; ip -d link show eth1")
        .unwrap();
    assert_eq!(links.matches("prog/xdp ").count(), 2, "{links}");
    assert!(!links.contains("xdpgeneric"), "{links}");

    let mut owners_before = Vec::new();
    for dst in ["10.9.0.7", "2001:db8:9::7"] {
        let dst: IpAddr = dst.parse().unwrap();
        let (counts, ports, delta) = rig.stream(dst);
        assert_eq!(
            counts.iter().sum::<usize>() as u64,
            COUNT,
            "{dst}: received {counts:?}, counters {delta:?}\nnva log:\n{}",
            rig.nva_log()
        );
        assert!(
            counts.iter().all(|&c| c > 0),
            "{dst}: ECMP over two next hops, received {counts:?}"
        );
        rig.assert_all_forwarded(dst, COUNT, &delta);
        owners_before.push(ports);
    }

    rig.bench_pktgen("10.1.0.2", "10.9.0.0/26");
    rig.bench_pktgen("fd01::2", "2001:db8:9::/122");

    // Sink 1 fails (its link goes down): nva's probes find it dead, its flows move to
    // sink 2 and nothing is lost.
    rig.sink_ns[0].set_link("eth0", false).unwrap();
    wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        Ok(rig.nva_json("status")?["nexthops"]["live"] == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\nnva log:\n{}", rig.nva_log()));
    for (k, dst) in ["10.9.0.7", "2001:db8:9::7"].into_iter().enumerate() {
        let dst: IpAddr = dst.parse().unwrap();
        let (counts, ports, delta) = rig.stream(dst);
        assert_eq!(
            counts,
            [0, COUNT as usize],
            "{dst}: all to sink 2 after sink 1 failed, counters {delta:?}"
        );
        rig.assert_all_forwarded(dst, COUNT, &delta);
        // Sink 1's flows are now sink 2's.
        for port in &owners_before[k][0] {
            assert!(ports[1].contains(port), "{dst}: flow {port} did not move");
        }
    }
    // The bench's own live part with pktgen, once (about a minute under emulation).
    if kernel_name == "debian-12" {
        rig.bench_pktgen_namespaces();
    }
    eprintln!("vm: {}: done in {:.1?}", kernel.version, t0.elapsed());
}

#[test]
fn vm_forwarding_debian_12_kernel_6_1() {
    forwarding_on("debian-12");
}

#[test]
fn vm_forwarding_debian_12_backports_kernel_6_12() {
    forwarding_on("debian-12-backports");
}

#[test]
fn vm_forwarding_debian_11_kernel_5_10() {
    forwarding_on("debian-11");
}

/// The same on another kernel of the cache, named by `NVA_VM_KERNEL` (a directory under
/// `$NVA_VM_DIR/kernels` as the set-up leaves them); nothing when unset.
#[test]
fn vm_forwarding_kernel_from_env() {
    if let Ok(name) = std::env::var("NVA_VM_KERNEL") {
        forwarding_on(&name);
    }
}

/// Native attach on virtio-net fails when the hypervisor implements receive offloads the
/// guest cannot turn off (QEMU `ctrl_guest_offloads=off` with the guest offloads on):
/// `bpf_link_create` says only "Operation not supported", so nva asks the kernel through
/// netlink and reports its reason and the fix. With the offloads off on the host side,
/// the same guest attaches.
#[test]
fn vm_attach_error_names_the_kernels_reason_and_the_fix() {
    if !require_root("vm_attach_error_names_the_kernels_reason_and_the_fix") {
        return;
    }
    let Some(kernel) = Kernel::find("debian-12").unwrap() else {
        return;
    };
    let _g = serial();
    let t0 = Instant::now();
    let lab = Lab::new("vmattach").unwrap();
    lab.bridge("br-a").unwrap();
    lab.tap("tap-r0", "br-a", 4).unwrap();
    lab.tap("tap-r1", "br-a", 4).unwrap();
    let mut offloads_on = Nic::new("tap-r0", ROUTER_IN_MAC, 4);
    offloads_on.extra = "ctrl_guest_offloads=off".into();
    let mut offloads_off = Nic::new("tap-r1", ROUTER_OUT_MAC, 4);
    offloads_off.extra = "ctrl_guest_offloads=off,guest_tso4=off,guest_tso6=off,\
                          guest_ecn=off,guest_ufo=off,guest_csum=off"
        .into();
    let mut router =
        Guest::start(&lab, "router", &kernel, 2, &[offloads_on, offloads_off]).unwrap();
    router.wait_ready(Duration::from_secs(180)).unwrap();
    let nva = nva_binary().unwrap().display().to_string();
    let share = router.share().display().to_string();
    router
        .sh("set -e\nip link set eth0 up\nip link set eth1 up")
        .unwrap();
    let config = |ifname: &str| {
        format!(
            "[dataplane]\nxdp_mode = \"native\"\nipv4_fib_north_south = \"lpm-trie\"\n\
             ipv6_fib_north_south = \"lpm-trie\"\n\n[[interfaces]]\nname = \"{ifname}\"\n"
        )
    };
    std::fs::write(router.share().join("eth0.toml"), config("eth0")).unwrap();
    std::fs::write(router.share().join("eth1.toml"), config("eth1")).unwrap();

    // The preflight of `nva config check` says so before anything is attached.
    let check = router
        .sh(&format!("{nva} config check {share}/eth0.toml"))
        .unwrap();
    assert!(
        check.contains("warning: host: eth0: the hypervisor implements receive offloads")
            && check.contains("guest_csum=off"),
        "{check}"
    );
    let check = router
        .sh(&format!("{nva} config check {share}/eth1.toml"))
        .unwrap();
    assert!(!check.contains("warning: host:"), "{check}");

    let (code, out) = router
        .sh_status(
            &format!("timeout 90 {nva} run --config {share}/eth0.toml 2>&1"),
            Duration::from_secs(120),
        )
        .unwrap();
    eprintln!("vm: nva on eth0 (exit {code}):\n{out}");
    assert!(
        code != 0 && code != 124,
        "nva must fail to start: exit {code}\n{out}"
    );
    for needle in [
        "Can't set XDP while host is implementing GRO_HW/CSUM",
        "ethtool -K eth0",
        "guest_csum=off",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    let links = router.sh("ip -d link show eth0").unwrap();
    assert!(
        !links.contains("prog/xdp"),
        "nothing stays attached: {links}"
    );

    // The fix applied on the host side: eth1 attaches in native mode.
    router
        .sh(&format!(
            "{nva} run --config {share}/eth1.toml > {share}/nva.log 2>&1 &"
        ))
        .unwrap();
    wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        let out = router.sh(&format!("{nva} status --json"))?;
        let st: serde_json::Value = serde_json::from_str(&out)?;
        Ok(st["interfaces"][0]["attached"] == true)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nnva log:\n{}",
            std::fs::read_to_string(router.share().join("nva.log")).unwrap_or_default()
        )
    });
    let links = router.sh("ip -d link show eth1").unwrap();
    assert!(links.contains("prog/xdp "), "native XDP on eth1: {links}");
    eprintln!("vm: attach errors: done in {:.1?}", t0.elapsed());
}
