//! The kernel's pktgen as the bench's generator (`--generator pktgen`), configured the way
//! the kernel's own scripts (samples/pktgen/pktgen_sample0*.sh) do: `reset` through
//! pgctrl, then for each thread (one kthread `kpktgend_N` per CPU) `rem_device_all` and
//! `add_device DEV@N`, and on `DEV@N` `flag QUEUE_MAP_CPU`, `count`, `clone_skb`,
//! `pkt_size`, `delay`, `flag NO_TIMESTAMP`, `dst_mac`, `dst_min`/`dst_max` (`dst6_min`/
//! `dst6_max`), the UDP ports (random source ports for flows), optionally `flows` and
//! `flowlen`, `burst`; `start` through pgctrl runs every thread and returns when they
//! are done (or stopped); each device's "Result: OK: ... pps" line has the figures.
//!
//! pktgen's files are per network namespace, and /proc/net follows the process's
//! namespace, not the thread's: everything here goes through /proc/thread-self/net, so a
//! thread that entered a namespace configures that namespace's pktgen. Writes to pgctrl
//! act on the writer's namespace too.
use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use nva_testkit::Netns;

use crate::live::INTERRUPTED;

/// Where pktgen lives for this thread's network namespace.
fn dir() -> PathBuf {
    let own = Path::new("/proc/thread-self/net/pktgen");
    if Path::new("/proc/thread-self").exists() {
        own.to_path_buf()
    } else {
        PathBuf::from("/proc/net/pktgen")
    }
}

/// Whether the kernel's pktgen is there (module loaded or built in).
pub fn available() -> bool {
    Path::new("/proc/net/pktgen").exists()
}

/// An error naming what is missing when pktgen is not there.
pub fn require() -> Result<()> {
    if !available() {
        bail!(
            "--generator pktgen: the kernel's pktgen is not available here: no /proc/net/pktgen \
             (load it with `modprobe pktgen`; the kernel needs CONFIG_NET_PKTGEN, and a \
             kernel that refuses module loading cannot get it)"
        );
    }
    Ok(())
}

/// One pktgen run: the same settings on one device per thread.
#[derive(Clone, Debug)]
pub struct Config {
    /// The network device frames leave by.
    pub dev: String,
    /// CPUs, one pktgen thread (`kpktgend_N`) each.
    pub cpus: Vec<usize>,
    /// Destination MAC (the DUT's ingress NIC).
    pub dst_mac: String,
    /// Source address (IPv4 or IPv6, the family of the destinations).
    pub src: IpAddr,
    /// Destinations from `dst.0` to `dst.1`: IPv4 in turn (`dst_min`/`dst_max`); IPv6
    /// random hosts of the range (pktgen ORs random bits into `dst6_min` and masks them
    /// with `dst6_max`, so give a prefix's first and last address).
    pub dst: (IpAddr, IpAddr),
    /// UDP destination port.
    pub udp_dst: u16,
    /// UDP source ports, drawn at random (`flag UDPSRC_RND`): the flows.
    pub udp_src: (u16, u16),
    /// pktgen's own flows: `flows` concurrent flows of `flowlen` packets each.
    pub flows: Option<(u32, u32)>,
    /// Frame length without the FCS (pktgen's `pkt_size`).
    pub pkt_size: usize,
    /// Packets per thread; 0 runs until stopped.
    pub count: u64,
    /// Nanoseconds between packets per thread; 0 is full speed.
    pub delay_ns: u64,
    /// Packets per transmit call (> 1 needs a driver that shares skbs: not veth).
    pub burst: u32,
    /// UDP checksums filled in (for receivers that are real sockets).
    pub udp_csum: bool,
}

impl Config {
    /// The device of thread `cpu`: `DEV@CPU` as the scripts name them.
    pub fn thread_dev(&self, cpu: usize) -> String {
        format!("{}@{cpu}", self.dev)
    }

    /// The writes that configure pktgen, in order: (file under the pktgen directory,
    /// command).
    pub fn commands(&self) -> Result<Vec<(String, String)>> {
        ensure!(!self.cpus.is_empty(), "pktgen: no threads");
        ensure!(
            self.src.is_ipv6() == self.dst.0.is_ipv6()
                && self.dst.0.is_ipv6() == self.dst.1.is_ipv6(),
            "pktgen: source and destinations of one family"
        );
        ensure!(self.burst >= 1, "pktgen: burst >= 1");
        let six = if self.src.is_ipv6() { "6" } else { "" };
        let mut out = vec![("pgctrl".to_string(), "reset".to_string())];
        for &cpu in &self.cpus {
            let thread = format!("kpktgend_{cpu}");
            let dev = self.thread_dev(cpu);
            out.push((thread.clone(), "rem_device_all".into()));
            out.push((thread, format!("add_device {dev}")));
            let mut set = |c: String| out.push((dev.clone(), c));
            set("flag QUEUE_MAP_CPU".into());
            set(format!("count {}", self.count));
            set("clone_skb 0".into());
            set(format!("pkt_size {}", self.pkt_size));
            set(format!("delay {}", self.delay_ns));
            set("flag NO_TIMESTAMP".into());
            set(format!("dst_mac {}", self.dst_mac));
            if self.src.is_ipv6() {
                set(format!("src6 {}", self.src));
            } else {
                set(format!("src_min {}", self.src));
                set(format!("src_max {}", self.src));
            }
            set(format!("dst{six}_min {}", self.dst.0));
            set(format!("dst{six}_max {}", self.dst.1));
            set(format!("udp_dst_min {}", self.udp_dst));
            set(format!("udp_dst_max {}", self.udp_dst));
            set("flag UDPSRC_RND".into());
            set(format!("udp_src_min {}", self.udp_src.0));
            set(format!("udp_src_max {}", self.udp_src.1));
            if let Some((flows, flowlen)) = self.flows {
                set(format!("flows {flows}"));
                set(format!("flowlen {flowlen}"));
            }
            if self.udp_csum {
                set("flag UDPCSUM".into());
            }
            if self.burst > 1 {
                set(format!("burst {}", self.burst));
            }
        }
        Ok(out)
    }
}

/// One thread's figures from its device's "Result:" line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadResult {
    pub dev: String,
    /// Packets sent.
    pub sent: u64,
    /// Run time in microseconds.
    pub usec: u64,
    /// pktgen's own rate.
    pub pps: u64,
    pub errors: u64,
}

/// Parses a device file's result:
/// `Result: OK: 500123(c500000+d123) usec, 1000 (128byte,0frags)` then
/// `  1999pps 1Mb/sec (2046976bps) errors: 0`. None while it holds no run's result.
pub fn parse_result(dev: &str, text: &str) -> Option<ThreadResult> {
    let at = text.find("Result: OK:")?;
    let words: Vec<&str> = text[at + "Result: OK:".len()..]
        .split_whitespace()
        .collect();
    let usec: u64 = words.first()?.split('(').next()?.parse().ok()?;
    if words.get(1) != Some(&"usec,") {
        return None;
    }
    let sent = words.get(2)?.parse().ok()?;
    let pps = words
        .iter()
        .find_map(|w| w.strip_suffix("pps")?.parse().ok())?;
    let errors = words
        .iter()
        .position(|w| *w == "errors:")
        .and_then(|i| words.get(i + 1)?.parse().ok())?;
    Some(ThreadResult {
        dev: dev.to_string(),
        sent,
        usec,
        pps,
        errors,
    })
}

/// `pkts-sofar:` of a device file, also while it runs.
pub fn parse_sofar(text: &str) -> Option<u64> {
    let at = text.find("pkts-sofar:")?;
    text[at + "pkts-sofar:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// pktgen configured for one run in the calling thread's namespace; its device files
/// stay open, so any thread can read them.
pub struct Pktgen {
    dir: PathBuf,
    devs: Vec<(String, File)>,
}

fn write(path: &Path, cmd: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // As `echo` writes them: pgctrl drops the last byte as the newline.
    f.write_all(format!("{cmd}\n").as_bytes())
        .with_context(|| format!("pktgen: writing '{cmd}' to {}", path.display()))
}

fn read(f: &mut File) -> Result<String> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_string(&mut s)?;
    Ok(s)
}

impl Pktgen {
    fn try_clone(&self) -> Result<Pktgen> {
        let mut devs = Vec::new();
        for (dev, f) in &self.devs {
            devs.push((dev.clone(), f.try_clone()?));
        }
        Ok(Pktgen {
            dir: self.dir.clone(),
            devs,
        })
    }

    /// Configures pktgen (see the module documentation). Every write to a device is
    /// checked as the scripts do: its "Result:" must say OK.
    pub fn configure(cfg: &Config) -> Result<Pktgen> {
        let dir = dir();
        ensure!(
            dir.join("pgctrl").exists(),
            "no {} in this network namespace",
            dir.display()
        );
        for &cpu in &cfg.cpus {
            ensure!(
                dir.join(format!("kpktgend_{cpu}")).exists(),
                "pktgen has no thread for CPU {cpu} (kpktgend_{cpu}): CPUs online here: {}",
                std::fs::read_to_string("/sys/devices/system/cpu/online")
                    .unwrap_or_default()
                    .trim()
            );
        }
        for (file, cmd) in cfg.commands()? {
            let path = dir.join(&file);
            write(&path, &cmd)?;
            if file.starts_with("kpktgend_") || file == "pgctrl" {
                if cmd.starts_with("add_device") {
                    let dev = dir.join(cmd.trim_start_matches("add_device "));
                    ensure!(
                        dev.exists(),
                        "pktgen: '{cmd}' to {file} did not add {} (is there a device {}?)",
                        dev.display(),
                        cfg.dev
                    );
                }
                continue;
            }
            let mut f = File::open(&path)?;
            let text = read(&mut f)?;
            let result = text
                .lines()
                .find(|l| l.starts_with("Result:"))
                .unwrap_or("");
            ensure!(
                result.starts_with("Result: OK"),
                "pktgen: '{cmd}' to {file}: {result}"
            );
        }
        let mut devs = Vec::new();
        for &cpu in &cfg.cpus {
            let dev = cfg.thread_dev(cpu);
            let f = File::open(dir.join(&dev)).with_context(|| format!("pktgen device {dev}"))?;
            devs.push((dev, f));
        }
        Ok(Pktgen { dir, devs })
    }

    /// Runs every thread (`start` to pgctrl); returns when all are done, or when they are
    /// stopped (a signal to this thread stops them, as ctrl-C does for the scripts).
    /// Called from a thread in the namespace that configured them.
    pub fn start(&self) -> Result<()> {
        write(&self.dir.join("pgctrl"), "start")
    }

    /// Packets sent so far by all threads.
    pub fn sent(&mut self) -> Result<u64> {
        let mut total = 0;
        for (dev, f) in &mut self.devs {
            let text = read(f)?;
            total += parse_sofar(&text)
                .with_context(|| format!("no pkts-sofar in pktgen's {dev}:\n{text}"))?;
        }
        Ok(total)
    }

    /// Every thread's result, once all have one (up to `timeout` after the run ended).
    pub fn results(&mut self, timeout: Duration) -> Result<Vec<ThreadResult>> {
        let start = Instant::now();
        loop {
            let mut out = Vec::new();
            let mut last = String::new();
            for (dev, f) in &mut self.devs {
                let text = read(f)?;
                match parse_result(dev, &text) {
                    Some(r) => out.push(r),
                    None => last = text,
                }
            }
            if out.len() == self.devs.len() {
                return Ok(out);
            }
            if start.elapsed() > timeout {
                bail!("pktgen gave no result within {timeout:?}:\n{last}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `cfg` from a thread in `ns` (None: this process's namespace) while `measure`
/// runs on the calling thread with the running pktgen to read from. With `stop`, the
/// threads are stopped once `measure` returns (by signals to the thread blocked in
/// `start`, as ctrl-C stops the scripts; [`crate::generator::install_signal`] must have
/// installed the handler), else they run to their count (or until SIGINT/SIGTERM).
/// Returns what `measure` returned and every thread's result.
pub fn run<R>(
    ns: Option<&Netns>,
    cfg: &Config,
    stop: bool,
    measure: impl FnOnce(&mut Pktgen) -> R,
) -> Result<(R, Vec<ThreadResult>)> {
    let tid = AtomicU64::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<Result<Pktgen>>();
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> Result<()> {
            // SAFETY: pthread_self has no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let configured = ns
                .map_or(Ok(()), |ns| ns.enter())
                .and_then(|()| Pktgen::configure(cfg));
            let pg = match configured {
                Ok(pg) => pg,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let reader = pg.try_clone();
            let _ = tx.send(reader);
            pg.start()
        });
        let mut pg = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the pktgen thread ended before configuring"))??;
        let out = measure(&mut pg);
        let mut stopped = stop;
        while !worker.is_finished() {
            if !stopped && INTERRUPTED.load(Ordering::SeqCst) {
                stopped = true;
            }
            if stopped {
                let t = tid.load(Ordering::SeqCst);
                // SAFETY: the thread is alive (not finished) and joined below.
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        let results = pg.results(Duration::from_secs(5))?;
        Ok((out, results))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line() {
        let text = "Params: count 1000  min_pkt_size: 128  max_pkt_size: 128\n\
                    Current:\n     pkts-sofar: 1000  errors: 0\n\
                    Result: OK: 500123(c499000+d1123) usec, 1000 (128byte,0frags)\n  \
                    1999pps 1Mb/sec (2046976bps) errors: 0\n";
        assert_eq!(
            parse_result("eth0@0", text),
            Some(ThreadResult {
                dev: "eth0@0".into(),
                sent: 1000,
                usec: 500123,
                pps: 1999,
                errors: 0
            })
        );
        assert_eq!(parse_sofar(text), Some(1000));
        // Before a run the result line holds the last command's answer.
        assert_eq!(
            parse_result("eth0@0", "Result: OK: dst_mac 52:54:00:00:00:01"),
            None
        );
        assert_eq!(parse_result("eth0@0", "Result: Starting"), None);
    }

    #[test]
    fn configures_as_the_kernels_scripts_do() {
        let cfg = Config {
            dev: "eth0".into(),
            cpus: vec![0, 1],
            dst_mac: "52:54:00:00:00:01".into(),
            src: "10.1.0.2".parse().unwrap(),
            dst: ("10.9.0.0".parse().unwrap(), "10.9.0.255".parse().unwrap()),
            udp_dst: 9,
            udp_src: (1024, 1087),
            flows: None,
            pkt_size: 64,
            count: 100,
            delay_ns: 0,
            burst: 1,
            udp_csum: false,
        };
        let c = cfg.commands().unwrap();
        assert_eq!(c[0], ("pgctrl".into(), "reset".into()));
        assert_eq!(c[1], ("kpktgend_0".into(), "rem_device_all".into()));
        assert_eq!(c[2], ("kpktgend_0".into(), "add_device eth0@0".into()));
        assert!(c.contains(&("eth0@1".into(), "dst_min 10.9.0.0".into())));
        assert!(c.contains(&("eth0@1".into(), "dst_max 10.9.0.255".into())));
        assert!(!c.iter().any(|(_, cmd)| cmd.starts_with("burst")));
        let mut six = cfg.clone();
        six.src = "fd01::2".parse().unwrap();
        six.dst = ("2001:2::".parse().unwrap(), "2001:2::ffff".parse().unwrap());
        six.burst = 32;
        let c = six.commands().unwrap();
        assert!(c.contains(&("eth0@0".into(), "dst6_min 2001:2::".into())));
        assert!(c.contains(&("eth0@0".into(), "src6 fd01::2".into())));
        assert!(c.contains(&("eth0@0".into(), "burst 32".into())));
        six.src = "10.1.0.2".parse().unwrap();
        assert!(six.commands().is_err());
    }
}
