//! The README's installation, done on a new machine: a Debian 12 guest with systemd as
//! PID 1 (QEMU, software emulation; the image is built by `cargo xtask setup`) gets the
//! `.deb` of `cargo xtask dist`, installed with apt; the test writes
//! `/etc/nva/nva.toml` for the guest's NICs and a BGP peer, runs `nva config check`
//! and `systemctl enable --now nva`, then checks what the unit promises under the real
//! systemd: READY (Type=notify) with the routes programmed, the sandbox (exactly the
//! unit's capabilities, no new privileges, a system-call filter, a mount namespace of
//! its own with a read-only system), the session with BIRD Established and BIRD's
//! routes in nva's FIB, XDP forwarding over them, `systemctl reload` (applied, and
//! refused for a bad file), an upgrade that restarts the running nva and keeps the
//! edited conffile, a clean `systemctl stop` and `apt purge`.
//!
//! ```text
//!  peer ns (host)                     guest (systemd, nva.service)        sink ns (host)
//!  BIRD 10.0.1.1 AS 65010 --- br-a --- eth0 10.0.1.4   eth1 10.0.2.4 --- br-b --- 10.0.2.11
//!  UDP sender to 10.9.0.0/24           AS 65001, native XDP                  accepts 10.9.0.0/24
//! ```
//!
//! BIRD announces 10.9.0.0/24 and 10.8.0.0/24 with next hop 10.0.2.11 (the sink); nva
//! announces 10.0.2.0/24. The bridges and taps are in a namespace of the run; nothing
//! leaves it. `cargo xtask test` passes the package in `NVA_DEB`; run alone, the test
//! builds it ([`nva_deb`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nva_tests::daemons::Bird;
use nva_tests::netns::Netns;
use nva_tests::systemd_guest::{Image, SHARE, SystemdGuest};
use nva_tests::vm::{Lab, Nic};
use nva_tests::{Counters, UdpSink, nva_deb, paced, require_root, serial, wait_until};

const GUEST_ETH0_MAC: &str = "52:54:00:5d:00:01";
const GUEST_ETH1_MAC: &str = "52:54:00:5d:00:02";
const SINK_PORT: u16 = 7000;
const UNIT: &str = "/lib/systemd/system/nva.service";

/// The operator's /etc/nva/nva.toml for the guest: its two NICs, BIRD as BGP peer, the
/// example's bpffs pin path and control group.
const CONFIG: &str = r#"# nva on the test guest
[dataplane]
xdp_mode = "native"
pin_path = "/sys/fs/bpf/nva"

[control]
socket = "/run/nva/nva.sock"
group = "nva"

[metrics]
listen = "127.0.0.1:9450"

[[interfaces]]
name = "eth0"

[[interfaces]]
name = "eth1"

[bgp]
local_as = 65001
router_id = "10.0.1.4"
announce = ["10.0.2.0/24"]

[[bgp.peers]]
name = "bird"
address = "10.0.1.1"
remote_as = 65010
hold_time = 9
keepalive = 3
connect_retry = 1
"#;

/// The route the reload adds.
const RELOAD_ROUTE: &str = r#"
[[routes]]
prefix = "10.7.0.0/24"
nexthops = [{ via = "10.0.2.11" }]
"#;

const BIRD_CONFIG: &str = r#"
router id 10.0.1.1;
log stderr all;
protocol device { scan time 1; }
protocol static learned { ipv4; route 10.9.0.0/24 blackhole; route 10.8.0.0/24 blackhole; }
filter to_nva { if proto = "learned" then { bgp_next_hop = 10.0.2.11; accept; } reject; }
protocol bgp nva {
    local 10.0.1.1 as 65010;
    neighbor 10.0.1.4 as 65001;
    hold time 9;
    keepalive time 3;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 { import all; export filter to_nva; next hop keep; };
}
"#;

/// Repacks `deb` as the next Debian revision (`-1` -> `-2`) into `dir`; returns the
/// file name.
fn newer_version(deb: &Path, dir: &Path) -> String {
    let tree = dir.join("upgrade-tree");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("a Version field");
    let upstream = version
        .strip_suffix("-1")
        .unwrap_or_else(|| panic!("version {version} does not end in -1"));
    let newer = format!("{upstream}-2");
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {newer}\n"),
        ),
    )
    .unwrap();
    let name = format!("nva_{newer}_amd64.deb");
    run(Command::new("dpkg-deb")
        .args(["-Zgzip", "-b"])
        .arg(&tree)
        .arg(dir.join(&name)));
    std::fs::remove_dir_all(&tree).unwrap();
    name
}

/// Capability numbers (linux/capability.h) of the names the unit uses.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("capability {other} is not in the test's table"),
    }
}

/// The capability mask of the unit's `KEY=` line.
fn unit_caps(unit: &str, key: &str) -> u64 {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"));
    line.split_whitespace()
        .map(|c| 1u64 << cap_bit(c))
        .fold(0, |a, b| a | b)
}

/// `Key:\tvalue` of /proc/PID/status.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status:\n{status}"))
        .trim()
}

/// `systemctl show nva -p KEY...` as (key, value) lookups.
fn show(props: &str, key: &str) -> String {
    props
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in:\n{props}"))
        .to_string()
}

struct Rig {
    guest: SystemdGuest,
    sink: UdpSink,
    bird: Bird,
    peer: Netns,
    sink_ns: Netns,
    _lab: Lab,
}

impl Rig {
    fn build(image: &Image) -> Rig {
        let lab = Lab::new("sysd").unwrap();
        lab.bridge("br-a").unwrap();
        lab.bridge("br-b").unwrap();
        lab.tap("tap-0", "br-a", 4).unwrap();
        lab.tap("tap-1", "br-b", 4).unwrap();
        // Boot first: the guest takes longest.
        let mut guest = SystemdGuest::start(
            &lab,
            image,
            2,
            1024,
            &[
                Nic::new("tap-0", GUEST_ETH0_MAC, 4),
                Nic::new("tap-1", GUEST_ETH1_MAC, 4),
            ],
        )
        .unwrap();

        let peer = Netns::new("sysd-peer").unwrap();
        lab.attach(&peer, "eth0", "peer", "br-a").unwrap();
        peer.ip("addr add 10.0.1.1/24 dev eth0").unwrap();
        peer.ip("route add 10.9.0.0/24 via 10.0.1.4").unwrap();
        // Checksums filled in by the sender's stack (forwarded frames arrive intact).
        peer.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])
            .unwrap();
        let sink_ns = Netns::new("sysd-sink").unwrap();
        lab.attach(&sink_ns, "eth0", "sink", "br-b").unwrap();
        sink_ns.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
        sink_ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0").unwrap();
        sink_ns.ip("addr add 10.0.2.11/24 dev eth0").unwrap();
        sink_ns.ip("route add default via 10.0.2.4").unwrap();
        sink_ns.ip("route add local 10.9.0.0/24 dev lo").unwrap();
        let sink = UdpSink::start(
            &sink_ns,
            &[SocketAddr::new("0.0.0.0".parse().unwrap(), SINK_PORT)],
        )
        .unwrap();
        let bird = Bird::start(&peer, BIRD_CONFIG).unwrap();

        guest.wait_ready(Duration::from_secs(180)).unwrap();
        Rig {
            guest,
            sink,
            bird,
            peer,
            sink_ns,
            _lab: lab,
        }
    }

    fn sh(&self, script: &str) -> String {
        self.guest.sh(script).unwrap_or_else(|e| {
            panic!("{e:#}\nnva's journal:\n{}", self.journal());
        })
    }

    fn journal(&self) -> String {
        self.guest
            .sh_status(
                "journalctl -u nva --no-pager -o short-monotonic | tail -60",
                Duration::from_secs(60),
            )
            .map(|(_, out)| out)
            .unwrap_or_default()
    }

    fn nva_json(&self, cmd: &str) -> serde_json::Value {
        let out = self.sh(&format!("nva {cmd} --json"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("nva {cmd} --json: {e}: {out}"))
    }

    fn props(&self) -> String {
        self.sh(
            "systemctl show nva -p Type -p ActiveState -p SubState -p Result -p MainPID \
             -p NRestarts -p StatusText -p ExecMainStatus -p WatchdogUSec",
        )
    }

    /// Polls `f` in the guest until it holds (each poll is one guest command).
    fn wait(&self, what: &str, within: Duration, f: impl Fn(&Rig) -> bool) {
        let ok = wait_until(within, Duration::from_millis(500), || Ok(f(self))).is_ok();
        assert!(
            ok,
            "{what} within {within:?}\nnva's journal:\n{}",
            self.journal()
        );
    }

    fn established(&self) -> bool {
        self.nva_json("bgp").as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["name"] == "bird" && p["state"] == "established")
        })
    }

    fn route(&self, addr: &str) -> serde_json::Value {
        self.nva_json(&format!("routes {addr}"))
    }
}

#[test]
fn systemd_guest_installs_the_deb_and_runs_the_hardened_unit_peering_with_bird() {
    if !require_root("systemd_guest_installs_the_deb_and_runs_the_hardened_unit_peering_with_bird")
    {
        return;
    }
    let Some(image) = Image::find().unwrap() else {
        return;
    };
    let _g = serial();
    let deb = nva_deb();
    let started = Instant::now();
    let rig = Rig::build(&image);
    eprintln!("systemd_vm: guest up in {:.1?}", started.elapsed());

    // A booted system: systemd is PID 1 and reached its default target.
    let boot = rig.sh(
        "cat /proc/1/comm; systemctl is-system-running --wait || systemctl --failed --no-pager",
    );
    assert!(boot.starts_with("systemd\n"), "PID 1: {boot}");
    assert!(
        boot.lines().nth(1) == Some("running"),
        "systemctl is-system-running: {boot}"
    );

    // The machine's own network (what its network configuration would do) and IP
    // forwarding (the README's hub recipe, step 1).
    rig.sh("set -e
         ip link set eth0 up; ip addr add 10.0.1.4/24 dev eth0
         ip link set eth1 up; ip addr add 10.0.2.4/24 dev eth1
         sysctl -qw net.ipv4.ip_forward=1");

    // Installing, as the README says.
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::copy(&deb, rig.guest.share().join(&name)).unwrap();
    let t = Instant::now();
    let out = rig.sh(&format!(
        "DEBIAN_FRONTEND=noninteractive apt install -y {SHARE}/{name} 2>&1"
    ));
    eprintln!("systemd_vm: apt install in {:.1?}", t.elapsed());
    assert!(out.contains("Setting up nva"), "apt install:\n{out}");
    // Installed, neither enabled nor started.
    assert_eq!(
        rig.sh("systemctl is-enabled nva || true").trim(),
        "disabled"
    );
    assert_eq!(rig.sh("systemctl is-active nva || true").trim(), "inactive");
    assert!(rig.sh("getent group nva").starts_with("nva:"));

    // $EDITOR /etc/nva/nva.toml; nva config check; systemctl enable --now nva.
    std::fs::write(rig.guest.share().join("nva.toml"), CONFIG).unwrap();
    rig.sh(&format!("cp {SHARE}/nva.toml /etc/nva/nva.toml"));
    let check = rig.sh("nva config check /etc/nva/nva.toml 2>&1");
    eprintln!("systemd_vm: nva config check:\n{check}");
    let t = Instant::now();
    rig.sh("systemctl enable --now nva 2>&1");
    eprintln!(
        "systemd_vm: systemctl enable --now nva returned in {:.1?}",
        t.elapsed()
    );

    // Type=notify: `systemctl start` returned once READY came, with what was programmed.
    let props = rig.props();
    eprintln!("systemd_vm: {props}");
    assert_eq!(show(&props, "Type"), "notify");
    assert_eq!(show(&props, "ActiveState"), "active", "{props}");
    assert_eq!(show(&props, "SubState"), "running", "{props}");
    assert_eq!(show(&props, "NRestarts"), "0", "{props}");
    assert_eq!(show(&props, "WatchdogUSec"), "1min", "{props}");
    let status = show(&props, "StatusText");
    assert!(
        status.starts_with("forwarding: ") && status.contains("routes programmed"),
        "STATUS= of READY: {props}"
    );
    assert_eq!(rig.sh("systemctl is-active nva").trim(), "active");
    assert_eq!(rig.sh("systemctl is-enabled nva").trim(), "enabled");
    let status = rig.sh("systemctl status nva --no-pager -n 0 || true");
    assert!(
        status.contains("Status: \"forwarding: "),
        "systemctl status shows the routes programmed:\n{status}"
    );
    let pid: u32 = show(&props, "MainPID").parse().unwrap();
    assert!(pid > 1, "{props}");
    // WATCHDOG=1 keep-alives reach systemd from inside the sandbox (NotifyAccess=main).
    let watchdog = || {
        let v = rig.sh("systemctl show nva -p WatchdogTimestampMonotonic");
        show(&v, "WatchdogTimestampMonotonic")
            .parse::<u64>()
            .unwrap()
    };
    let first = watchdog();
    rig.wait(
        "a newer watchdog keep-alive",
        Duration::from_secs(10),
        |_| watchdog() > first,
    );
    assert!(first > 0, "a watchdog keep-alive after READY");

    // The sandbox, as the kernel sees the running process.
    let unit = rig.sh(&format!("cat {UNIT}"));
    let want = unit_caps(&unit, "CapabilityBoundingSet");
    assert_eq!(want, unit_caps(&unit, "AmbientCapabilities"));
    assert_eq!(want & (1 << cap_bit("CAP_SYS_ADMIN")), 0);
    let proc_status = rig.sh(&format!("cat /proc/{pid}/status"));
    for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        let have = u64::from_str_radix(status_field(&proc_status, key), 16).unwrap();
        assert_eq!(
            have, want,
            "{key} of nva ({have:#x}) is the unit's set ({want:#x})"
        );
    }
    assert_eq!(
        status_field(&proc_status, "Uid").split_whitespace().next(),
        Some("0")
    );
    assert_eq!(status_field(&proc_status, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&proc_status, "Seccomp"),
        "2",
        "a system-call filter"
    );
    let nva_gid = rig.sh("getent group nva | cut -d: -f3").trim().to_string();
    assert!(
        status_field(&proc_status, "Groups")
            .split_whitespace()
            .any(|g| g == nva_gid),
        "the nva group is a supplementary group: {proc_status}"
    );
    let ns = rig.sh(&format!("readlink /proc/1/ns/mnt /proc/{pid}/ns/mnt"));
    let ns: Vec<&str> = ns.lines().collect();
    assert_ne!(ns[0], ns[1], "nva has a mount namespace of its own");
    let mounts = rig.sh(&format!("cat /proc/{pid}/mountinfo"));
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...
    let options = |point: &str| -> Vec<String> {
        mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&point)).then(|| f[5].to_string())
            })
            .collect()
    };
    let last = |point: &str| options(point).last().cloned().unwrap_or_default();
    assert!(
        last("/").split(',').any(|o| o == "ro"),
        "ProtectSystem=strict: / is read-only for nva: {:?}",
        options("/")
    );
    assert!(
        last("/sys/fs/bpf").split(',').any(|o| o == "rw"),
        "bpffs stays writable (pin_path): {:?}",
        options("/sys/fs/bpf")
    );
    assert!(last("/run/nva").split(',').any(|o| o == "rw"), "{mounts}");
    assert!(!options("/tmp").is_empty(), "PrivateTmp: a /tmp of its own");
    assert!(
        !options("/dev").is_empty(),
        "PrivateDevices: a /dev of its own"
    );
    // What the unit writes: the pins on bpffs, the control socket for the nva group.
    rig.sh("test -d /sys/fs/bpf/nva && ls /sys/fs/bpf/nva | grep -q .");
    let sock = rig.sh("stat -c '%a %G' /run/nva/nva.sock");
    assert_eq!(sock.trim(), "660 nva", "the control socket");
    // control.group: a member of nva uses the CLI without root; others are refused.
    let member = rig.sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --groups={nva_gid} nva status >/dev/null && echo ok"
    ));
    assert_eq!(member.trim(), "ok", "a member of the nva group: {member}");
    let (code, out) = rig
        .guest
        .sh_status(
            "setpriv --reuid=65534 --regid=65534 --clear-groups nva status 2>&1",
            Duration::from_secs(60),
        )
        .unwrap();
    assert_ne!(code, 0, "not in the nva group, refused: {out}");
    let xdp = rig.sh("ip -d link show eth0; ip -d link show eth1");
    assert!(
        xdp.matches("xdp").count() >= 2,
        "native XDP on both NICs:\n{xdp}"
    );

    // BGP with BIRD: Established on both sides, BIRD's routes in nva's FIB, nva's
    // announcement in BIRD.
    rig.wait(
        "the session with BIRD Established",
        Duration::from_secs(60),
        Rig::established,
    );
    rig.bird
        .wait_for(
            &["show", "protocols", "nva"],
            Duration::from_secs(30),
            |o| o.contains("Established"),
        )
        .unwrap();
    rig.wait(
        "10.9.0.0/24 from BGP in the FIB",
        Duration::from_secs(30),
        |r| {
            let v = r.route("10.9.0.5");
            v["route"]["source"] == "bgp" && v["route"]["prefix"] == "10.9.0.0/24"
        },
    );
    let routes = rig.sh("nva routes");
    eprintln!("systemd_vm: nva routes:\n{routes}");
    assert!(
        routes.contains("10.9.0.0/24") && routes.contains("10.8.0.0/24"),
        "{routes}"
    );
    eprintln!("systemd_vm: nva bgp:\n{}", rig.sh("nva bgp"));
    rig.bird
        .wait_for(
            &["show", "route", "protocol", "nva"],
            Duration::from_secs(30),
            |o| o.contains("10.0.2.0/24"),
        )
        .unwrap();

    // XDP forwarding over the learned route: the sink's MAC resolved first, then every
    // datagram forwarded in XDP on eth0.
    rig.wait(
        "the sink resolved as next hop",
        Duration::from_secs(30),
        |r| {
            r.nva_json("nexthops")
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.to_string().contains("\"10.0.2.11\"") && n["resolved"] == true)
        },
    );
    let before = Counters::from_json(&rig.nva_json("stats")).unwrap();
    let count = 500u32;
    paced(&rig.peer, "10.9.0.5", count, Duration::from_millis(2))
        .join()
        .unwrap();
    let arrived = rig.sink.wait_for(count as usize, Duration::from_secs(10));
    let delta = Counters::from_json(&rig.nva_json("stats"))
        .unwrap()
        .since(&before);
    eprintln!("systemd_vm: {arrived}/{count} arrived; nva stats delta {delta:?}");
    assert_eq!(arrived, count as usize, "datagrams through nva to the sink");
    assert_eq!(
        delta.get("eth0", "forwarded"),
        count as u64,
        "forwarded in XDP on eth0: {delta:?}"
    );

    // systemctl reload: synchronous, the new route is there when it returns...
    let mut config = CONFIG.to_string();
    config.push_str(RELOAD_ROUTE);
    std::fs::write(rig.guest.share().join("nva.toml"), &config).unwrap();
    rig.sh(&format!(
        "cp {SHARE}/nva.toml /etc/nva/nva.toml && systemctl reload nva"
    ));
    let r = rig.route("10.7.0.1");
    assert_eq!(
        r["route"]["source"], "static",
        "after systemctl reload: {r}"
    );
    // ...and refused, with nva running on, for a file that does not apply.
    rig.sh("printf '[bogus]\\nfield = 1\\n' >> /etc/nva/nva.toml");
    let (code, out) = rig
        .guest
        .sh_status("systemctl reload nva 2>&1", Duration::from_secs(60))
        .unwrap();
    assert_ne!(code, 0, "systemctl reload of a bad file fails: {out}");
    // The journal says why, naming the field.
    let why = rig.sh("journalctl -u nva --no-pager -q -o cat | grep -i bogus || true");
    eprintln!("systemd_vm: systemctl reload of a bad file: {out}journal: {why}");
    assert!(why.contains("bogus"), "the reason in the journal: {why}");
    let props = rig.props();
    assert_eq!(show(&props, "ActiveState"), "active", "{props}");
    assert_eq!(show(&props, "MainPID"), pid.to_string(), "{props}");
    rig.sh(&format!("cp {SHARE}/nva.toml /etc/nva/nva.toml"));

    // An upgrade (the same package as version -2, repacked on the host: faster than in
    // the emulated guest) restarts the running nva and keeps the edited conffile.
    let newer = newer_version(&deb, rig.guest.share());
    let t = Instant::now();
    let upgraded = rig.sh(&format!(
        "set -e
         DEBIAN_FRONTEND=noninteractive apt install -y {SHARE}/{newer} 2>&1
         dpkg-query -W -f='${{Version}}' nva"
    ));
    assert!(upgraded.trim_end().ends_with("-2"), "upgrade:\n{upgraded}");
    eprintln!("systemd_vm: upgrade in {:.1?}", t.elapsed());
    let props = rig.props();
    assert_eq!(
        show(&props, "ActiveState"),
        "active",
        "after the upgrade: {props}"
    );
    let new_pid: u32 = show(&props, "MainPID").parse().unwrap();
    assert_ne!(new_pid, pid, "the upgrade restarted nva: {props}");
    assert_eq!(
        rig.sh("cat /etc/nva/nva.toml"),
        config,
        "the upgrade keeps the edited conffile"
    );
    rig.wait(
        "the session Established again after the upgrade",
        Duration::from_secs(60),
        Rig::established,
    );

    // systemctl stop: clean exit, XDP detached, nothing left in the kernel.
    rig.sh("systemctl stop nva");
    let props = rig.props();
    assert_eq!(show(&props, "ActiveState"), "inactive", "{props}");
    assert_eq!(show(&props, "Result"), "success", "{props}");
    assert_eq!(show(&props, "ExecMainStatus"), "0", "{props}");
    let links = rig.sh("ip -d link show eth0; ip -d link show eth1");
    assert!(!links.contains("xdp"), "XDP detached on stop:\n{links}");
    let kernel_routes = rig.sh("ip route show proto 250");
    assert!(
        kernel_routes.trim().is_empty(),
        "nva's kernel routes removed: {kernel_routes}"
    );
    // Errors in the journal: only the reload of the bad file.
    let errors = rig.sh("journalctl -u nva -p err --no-pager -q -o cat || true");
    let unexpected: Vec<&str> = errors
        .lines()
        .filter(|l| !l.starts_with("Reload failed for nva.service"))
        .collect();
    assert!(
        unexpected.is_empty() && errors.lines().count() == 1,
        "errors in nva's journal:\n{errors}"
    );

    // apt purge: the package, its config, the unit and its enablement gone.
    rig.sh("DEBIAN_FRONTEND=noninteractive apt purge -y nva 2>&1");
    let status = rig.sh("dpkg-query -W -f='${Status}' nva 2>&1 || true");
    assert!(
        !status.contains("installed"),
        "dpkg after apt purge: {status}"
    );
    let left = rig.sh(
        "for f in /etc/nva /lib/systemd/system/nva.service /usr/bin/nva \\
            /etc/systemd/system/multi-user.target.wants/nva.service /run/nva \\
            /var/lib/systemd/deb-systemd-helper-enabled/nva.service.dsh-also; do
           if [ -e $f ] || [ -L $f ]; then echo $f; fi
         done",
    );
    assert!(left.trim().is_empty(), "left after apt purge:\n{left}");
    let state = rig.sh("systemctl show nva -p LoadState");
    assert_eq!(state.trim(), "LoadState=not-found", "systemd forgot nva");
    // Debian keeps system groups on purge.
    assert!(
        rig.sh("getent group nva").starts_with("nva:"),
        "the nva group is kept"
    );
    eprintln!(
        "systemd_vm: done in {:.1?} (sink ns {}, lab torn down on drop)",
        started.elapsed(),
        rig.sink_ns.name()
    );
}
