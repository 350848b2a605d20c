//! Real Linux guests for the VM tests: QEMU (software emulation) with stock Debian kernels,
//! booted by virtme-ng with the host's root shared read-only, so a guest runs the host's
//! own `nva` build. `cargo xtask setup` installs virtme-ng and the kernels (xtask/src/vm.rs).
//!
//! - [`Kernel`]: a guest kernel of the cache (`$NVA_VM_DIR`, default /var/lib/nva-vm).
//! - [`Lab`]: a network namespace of the run holding bridges and multiqueue taps; QEMU runs
//!   in it, so guest traffic never leaves it.
//! - [`Guest`]: one VM. It runs a small agent that executes the shell scripts the test
//!   drops into a directory shared with the host (9p), so the test drives the guest step
//!   by step. Powered off (then killed) on drop, also when the test panics.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, veth};
use crate::{ScratchDir, wait_until};

/// The cache directory the set-up fills: `$NVA_VM_DIR` or /var/lib/nva-vm.
pub fn vm_dir() -> PathBuf {
    std::env::var_os("NVA_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nva-vm"))
}

/// A guest kernel unpacked by the set-up: `kernels/NAME/boot/vmlinuz-VERSION` with its
/// modules in `kernels/NAME/lib/modules/VERSION`.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Name in the cache (`debian-12`, `debian-12-backports`, ...).
    pub name: String,
    /// `uname -r` of the guest.
    pub version: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// The kernel `name` of the cache. Err when it is missing and `cargo xtask test` runs
    /// the tests (it sets `NVA_VM_DIR` after installing the kernels), Ok(None) (skip) when
    /// a plain `cargo test` finds no cache.
    pub fn find(name: &str) -> Result<Option<Kernel>> {
        let root = vm_dir().join("kernels").join(name);
        if !root.join(".complete").is_file() || !vng().is_file() {
            if std::env::var_os("NVA_VM_DIR").is_some() {
                bail!(
                    "kernel {name} or virtme-ng missing under {} (cargo xtask setup installs them)",
                    vm_dir().display()
                );
            }
            eprintln!(
                "SKIP: no VM kernel {name} under {} (run `cargo xtask setup`)",
                vm_dir().display()
            );
            return Ok(None);
        }
        let version = std::fs::read_dir(root.join("lib/modules"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .with_context(|| format!("no modules in {}", root.display()))?;
        let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
        ensure!(vmlinuz.is_file(), "{} missing", vmlinuz.display());
        Ok(Some(Kernel {
            name: name.to_string(),
            version,
            vmlinuz,
        }))
    }
}

fn vng() -> PathBuf {
    vm_dir().join("venv/bin/vng")
}

/// The namespace the guests' taps and bridges live in.
pub struct Lab {
    /// The namespace (deleted on drop, with every process still in it).
    pub ns: Netns,
}

impl Lab {
    /// A new namespace; IPv6 is off on its own interfaces (bridges and taps only carry
    /// the guests' frames, they send nothing themselves).
    pub fn new(tag: &str) -> Result<Lab> {
        let ns = Netns::new(tag)?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        Ok(Lab { ns })
    }

    /// A bridge (no STP: ports forward at once).
    pub fn bridge(&self, name: &str) -> Result<()> {
        self.ns.ip_args(&[
            "link",
            "add",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        self.ns.ip_args(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// A tap on `bridge` for a guest NIC with `queues` queue pairs (multiqueue when more
    /// than one: QEMU opens a single-queue tap without IFF_MULTI_QUEUE).
    pub fn tap(&self, name: &str, bridge: &str, queues: u32) -> Result<()> {
        let mut args = vec!["tuntap", "add", name, "mode", "tap"];
        if queues > 1 {
            args.push("multi_queue");
        }
        self.ns.ip_args(&args)?;
        self.ns
            .ip_args(&["link", "set", name, "master", bridge, "up"])?;
        Ok(())
    }

    /// A veth from `other:ifname` to a port `port` of `bridge`.
    pub fn attach(&self, other: &Netns, ifname: &str, port: &str, bridge: &str) -> Result<()> {
        veth(other, ifname, &self.ns, port)?;
        self.ns
            .ip_args(&["link", "set", port, "master", bridge, "up"])?;
        other.ip_args(&["link", "set", ifname, "up"])?;
        Ok(())
    }
}

/// A virtio-net NIC of a guest, backed by a tap of the [`Lab`].
#[derive(Debug, Clone)]
pub struct Nic {
    /// The tap in the lab namespace.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: String,
    /// Queue pairs (tap queues and virtio-net queues).
    pub queues: u32,
    /// Extra `virtio-net-pci` properties (e.g. `ctrl_guest_offloads=off`), comma-separated.
    pub extra: String,
}

impl Nic {
    /// A NIC with `queues` queue pairs and default offloads.
    pub fn new(tap: &str, mac: &str, queues: u32) -> Nic {
        Nic {
            tap: tap.into(),
            mac: mac.into(),
            queues,
            extra: String::new(),
        }
    }
}

/// One VM running the agent; see the module documentation.
pub struct Guest {
    name: String,
    child: Option<Child>,
    _scratch: ScratchDir,
    agent: Agent,
}

/// The host's side of a guest's agent (the virtme-ng guests' and the systemd guest's):
/// a script goes into the shared directory as `cmd-N.sh`, the agent answers with
/// `out-N` and then `rc-N`; the guest's console is logged to `log`.
pub struct Agent {
    /// Names the guest in errors.
    label: String,
    /// The shared directory (the host's side).
    pub share: PathBuf,
    /// Where the guest's console is logged.
    pub log: PathBuf,
    seq: AtomicU32,
}

impl Agent {
    /// The agent of a guest named `label` in errors.
    pub fn new(label: &str, share: PathBuf, log: PathBuf) -> Self {
        Agent {
            label: label.to_string(),
            share,
            log,
            seq: AtomicU32::new(0),
        }
    }

    /// Runs `script` with `sh` in the guest; returns its exit code and output (stdout and
    /// stderr), or an error after `timeout`.
    pub fn sh_status(&self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.share.join(format!("tmp-{n}"));
        std::fs::write(&tmp, script)?;
        std::fs::rename(&tmp, self.share.join(format!("cmd-{n}.sh")))?;
        let rc = self.share.join(format!("rc-{n}"));
        let start = Instant::now();
        while !rc.exists() {
            if start.elapsed() > timeout {
                bail!(
                    "{}: script did not finish within {timeout:?}:\n{script}\nconsole:\n{}",
                    self.label,
                    self.console_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = std::fs::read_to_string(&rc)?.trim().parse().unwrap_or(-1);
        let out = std::fs::read_to_string(self.share.join(format!("out-{n}"))).unwrap_or_default();
        Ok((code, out))
    }

    /// [`Agent::sh_status`]; a non-zero exit is an error.
    pub fn sh(&self, script: &str, timeout: Duration) -> Result<String> {
        let (code, out) = self.sh_status(script, timeout)?;
        ensure!(
            code == 0,
            "{}: exit {code} from:\n{script}\noutput:\n{out}",
            self.label
        );
        Ok(out)
    }

    /// The last `lines` lines of the guest's console.
    pub fn console_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The agent: loads virtio_net (NICs come up as eth0, eth1, ... in the order given), then runs `cmd-N.sh` files as they appear in the shared directory, writes
/// `out-N` and then `rc-N`; `stop` ends it (and the guest powers off). Its round over the
/// `cmd-N.sh` files, the guest's side of [`Agent`], is `vm_agent_round.sh`, which the
/// systemd guest's agent (xtask/src/systemd_vm.rs) runs too.
const AGENT: &str = concat!(
    r#"d="$1"
# virtme-ng loads only what mounting the root needs; no udev loads the NICs' driver.
modprobe virtio_net
echo ready > "$d/ready"
while :; do
"#,
    include_str!("vm_agent_round.sh"),
    r#"  [ -e "$d/stop" ] && break
  sleep 0.1
done
"#
);

impl Guest {
    /// Boots `kernel` with `cpus` vCPUs, 512 MiB and `nics`, QEMU running in `lab`. Returns
    /// once QEMU is started; [`Guest::wait_ready`] waits for the agent.
    pub fn start(lab: &Lab, name: &str, kernel: &Kernel, cpus: u32, nics: &[Nic]) -> Result<Guest> {
        let scratch = ScratchDir::new(&format!("nvat-vm-{name}"))?;
        let share = scratch.path().join("share");
        std::fs::create_dir_all(&share)?;
        std::fs::write(share.join("agent.sh"), AGENT)?;
        let log = scratch.path().join("console.log");
        let mut qemu_opts = Vec::new();
        for (i, nic) in nics.iter().enumerate() {
            qemu_opts.push(format!(
                "-netdev tap,id=n{i},ifname={},script=no,downscript=no,vhost=off,queues={}",
                nic.tap, nic.queues
            ));
            let mut dev = format!(
                "-device virtio-net-pci,netdev=n{i},mac={},mq=on,vectors={}",
                nic.mac,
                2 * nic.queues + 2
            );
            if !nic.extra.is_empty() {
                dev.push(',');
                dev.push_str(&nic.extra);
            }
            qemu_opts.push(dev);
        }
        let path = format!(
            "{}:{}",
            vng().parent().expect("venv bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", lab.ns.name()])
            .arg(vng())
            .arg("--run")
            .arg(&kernel.vmlinuz)
            .args(["--disable-kvm", "--force-9p", "--verbose", "-m", "512M"])
            .arg("-p")
            .arg(cpus.to_string())
            .arg(format!("--rwdir={}", share.display()))
            .arg(format!("--qemu-opts={}", qemu_opts.join(" ")))
            .arg("--exec")
            .arg(format!(
                "sh {}/agent.sh {}",
                share.display(),
                share.display()
            ))
            .env("PATH", path)
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().context("starting vng")?;
        Ok(Guest {
            name: name.to_string(),
            child: Some(child),
            _scratch: scratch,
            agent: Agent::new(&format!("guest {name}"), share, log),
        })
    }

    /// Waits until the agent runs (the guest booted), up to `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let ready = self.agent.share.join("ready");
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "guest {} ended before it was ready ({status}):\n{}",
                    self.name,
                    self.console_tail(40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "guest {} not ready within {timeout:?}:\n{}",
                    self.name,
                    self.console_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The directory shared with the guest (same path inside and outside).
    pub fn share(&self) -> &Path {
        &self.agent.share
    }

    /// Runs `script` with `sh` in the guest; returns its exit code and output (stdout and
    /// stderr), or an error after `timeout`.
    pub fn sh_status(&self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        self.agent.sh_status(script, timeout)
    }

    /// Like [`Guest::sh_status`] with a 60 s timeout; a non-zero exit is an error.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.agent.sh(script, Duration::from_secs(60))
    }

    /// The last `lines` lines of the guest's console (kernel messages, virtme-ng).
    pub fn console_tail(&self, lines: usize) -> String {
        self.agent.console_tail(lines)
    }

    /// The guest's kernel messages lines that contain `pattern`.
    pub fn console_grep(&self, pattern: &str) -> Vec<String> {
        std::fs::read_to_string(&self.agent.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(pattern))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The agent ends, the guest powers off; QEMU is killed if it does not.
        let _ = std::fs::write(self.agent.share.join("stop"), "");
        let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            Ok(child.try_wait()?.is_some())
        });
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the process group this guest's vng leads (spawned with
            // process_group(0)); nothing else is in it.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// A pktgen run on one device of a guest: `count` UDP packets of `size` bytes to one
/// destination, at `pps` packets per second (paced, burst 1), source ports
/// `src_ports.0..=src_ports.1` in turn (so many flows), UDP checksums filled in.
pub struct Pktgen<'a> {
    /// The guest's device.
    pub dev: &'a str,
    /// Destination MAC (the router's ingress NIC).
    pub dst_mac: &'a str,
    /// Source and destination address (both IPv4 or both IPv6).
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP source port range.
    pub src_ports: (u16, u16),
    /// Packets to send (exactly).
    pub count: u64,
    /// Rate.
    pub pps: u32,
    /// Frame size without the FCS.
    pub size: u32,
}

impl Pktgen<'_> {
    /// The shell script that configures pktgen (loading the module) and runs it to the
    /// end (writing `start` to pgctrl returns when the count is sent).
    pub fn script(&self) -> String {
        let (src_key, dst_key) = if self.dst.is_ipv6() {
            ("src6", "dst6")
        } else {
            ("src_min", "dst_min")
        };
        let mut s = String::from("set -e\nmodprobe pktgen\n");
        s += "for t in /proc/net/pktgen/kpktgend_*; do echo rem_device_all > $t; done\n";
        s += &format!(
            "echo 'add_device {}' > /proc/net/pktgen/kpktgend_0\n",
            self.dev
        );
        let dev = format!("/proc/net/pktgen/{}", self.dev);
        let mut set = |v: String| s += &format!("echo '{v}' > {dev}\n");
        set(format!("count {}", self.count));
        set(format!("pkt_size {}", self.size));
        set("clone_skb 0".into());
        set(format!("ratep {}", self.pps));
        set(format!("dst_mac {}", self.dst_mac));
        set(format!("{src_key} {}", self.src));
        if !self.dst.is_ipv6() {
            set(format!("src_max {}", self.src));
        }
        set(format!("{dst_key} {}", self.dst));
        if !self.dst.is_ipv6() {
            set(format!("dst_max {}", self.dst));
        }
        set(format!("udp_dst_min {}", self.dst_port));
        set(format!("udp_dst_max {}", self.dst_port));
        set(format!("udp_src_min {}", self.src_ports.0));
        set(format!("udp_src_max {}", self.src_ports.1));
        set("flag UDPCSUM".into());
        s += "echo start > /proc/net/pktgen/pgctrl\n";
        s += &format!("cat {dev}\n");
        s
    }
}

/// The number pktgen reports as sent in its device file ("Result: OK: ... N pkts").
pub fn pktgen_sent(report: &str) -> Option<u64> {
    // "Current:\n     pkts-sofar: 1000  errors: 0"
    let idx = report.find("pkts-sofar:")?;
    report[idx + "pkts-sofar:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
