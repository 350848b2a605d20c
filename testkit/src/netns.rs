//! Network namespace guard ([`Netns`]) and veth pair creation ([`veth`]).
//!
//! Names are [`NAME_PREFIX`]`<pid>-<n>-<tag>`: the first namespace a process creates
//! deletes those of earlier runs whose process is gone (killed before its `Drop` ran).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::{NAME_PREFIX, unique_suffix};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Runs `cmd`, returning its stdout; a non-zero exit becomes an error carrying stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if out.stdout.is_empty() {
                String::new()
            } else {
                format!(" / stdout: {}", String::from_utf8_lossy(&out.stdout).trim())
            }
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread into the network namespace mounted at `path` (setns CLONE_NEWNET).
pub fn enter_netns(path: &str) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: valid fd owned by `f`; setns only changes the calling thread's netns.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

static STALE_CLEANUP: Once = Once::new();

/// Deletes namespaces left by earlier, killed runs of the kit's users (prefix `nvat<pid>-`
/// whose pid is no longer alive). Namespaces of live processes are never touched.
pub fn cleanup_stale_namespaces() {
    let Ok(list) = run_cmd(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_netns_pids(name);
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", name])) {
            eprintln!("nva-testkit: could not delete stale netns {name}: {e:#}");
        }
    }
}

/// SIGKILLs every process whose network namespace is `name` (never this process).
fn kill_netns_pids(name: &str) {
    let Ok(pids) = run_cmd(Command::new("ip").args(["netns", "pids", name])) else {
        return;
    };
    let me = std::process::id() as i32;
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if pid > 1 && pid != me {
            // SAFETY: plain kill(2) on a pid that lives in our own private namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A network namespace with a run-unique name; deleted (after killing its processes) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ip netns add nvat<pid>-<n>-<tag>` and brings its `lo` up.
    pub fn new(tag: &str) -> Result<Netns> {
        let ns = Netns::new_bare(tag)?;
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    /// Like [`Netns::new`], but `lo` stays down, as a new namespace has it.
    pub fn new_bare(tag: &str) -> Result<Netns> {
        ensure!(
            !tag.is_empty()
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "bad netns tag {tag:?}"
        );
        STALE_CLEANUP.call_once(cleanup_stale_namespaces);
        let name = format!("{NAME_PREFIX}{}-{tag}", unique_suffix());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Netns { name })
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount (`/run/netns/NAME`).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip -n NAME <args>` (args split on whitespace); returns stdout or an error with stderr.
    pub fn ip(&self, args: &str) -> Result<String> {
        let args: Vec<&str> = args.split_whitespace().collect();
        self.ip_args(&args)
    }

    /// Like [`Netns::ip`] with pre-split arguments.
    pub fn ip_args(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `ip netns exec NAME cmd...` to completion; the caller inspects the exit status.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output> {
        ensure!(!cmd.is_empty(), "exec: empty command");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("spawning {cmd:?} in {}", self.name))
    }

    /// Runs `cmd` in the namespace and returns stdout, or an error with stderr on failure.
    pub fn exec_ok(&self, cmd: &[&str]) -> Result<String> {
        ensure!(!cmd.is_empty(), "exec_ok: empty command");
        run_cmd(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(cmd),
        )
    }

    /// Starts a long-running `cmd` in the namespace (stdin null, stdout/stderr inherited).
    pub fn spawn(&self, cmd: &[&str]) -> Result<Child> {
        self.spawn_with(cmd, Stdio::inherit(), Stdio::inherit())
    }

    /// Starts `cmd` in the namespace with the given stdout / stderr (stdin null).
    /// `ip netns exec` execs the command, so the child's pid is the command's pid.
    pub fn spawn_with(&self, cmd: &[&str], stdout: Stdio, stderr: Stdio) -> Result<Child> {
        ensure!(!cmd.is_empty(), "spawn: empty command");
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {cmd:?} in {}", self.name))
    }

    /// Sets sysctl `key` (dotted like `net.ipv4.ip_forward`, or slash-separated) in this netns.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        let value = value.to_string();
        self.run(move || {
            std::fs::write(&path, value.as_bytes()).with_context(|| format!("writing {path}"))
        })
    }

    /// Reads sysctl `key` in this netns (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        self.run(move || {
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading {path}"))
        })
    }

    /// Runs `f` on a scoped thread that first `setns`es into this namespace, so sockets it
    /// creates live here (they stay in this netns when moved to other threads). Panics in
    /// `f` propagate; failing to enter the namespace panics.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                enter_netns(&path).unwrap_or_else(|e| panic!("{e:#}"));
                f()
            });
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Moves the calling thread into this namespace (for threads the caller manages).
    pub fn enter(&self) -> Result<()> {
        enter_netns(&self.path())
    }

    /// Starts a thread inside this namespace that runs the future `f` makes on a
    /// current-thread tokio runtime (timers and I/O enabled) and returns its output.
    pub fn spawn_async<T, F, Fut>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        self.spawn_thread(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f())
        })
    }

    /// Starts a detached background thread inside this namespace (see [`Netns::run`]).
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        })
    }

    /// `ip -j link show dev IF` parsed as one JSON object.
    fn link_json(&self, ifname: &str) -> Result<serde_json::Value> {
        let out = self.ip_args(&["-j", "link", "show", "dev", ifname])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("parsing ip -j output {out:?}"))?;
        v.get(0)
            .cloned()
            .ok_or_else(|| anyhow!("no link {ifname} in {}", self.name))
    }

    /// MAC address of interface `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let v = self.link_json(ifname)?;
        let s = v["address"]
            .as_str()
            .ok_or_else(|| anyhow!("{ifname}: no address in {v}"))?;
        parse_mac(s)
    }

    /// Interface index of `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let v = self.link_json(ifname)?;
        v["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .ok_or_else(|| anyhow!("{ifname}: no ifindex in {v}"))
    }

    /// Sets interface `ifname` administratively up or down.
    pub fn set_link(&self, ifname: &str, up: bool) -> Result<()> {
        self.ip_args(&["link", "set", "dev", ifname, if up { "up" } else { "down" }])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_netns_pids(&self.name);
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("nva-testkit: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// `/proc/sys/...` path of a sysctl key (dots become slashes unless the key has slashes).
fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches('/'))
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    ensure!(parts.len() == 6, "bad MAC {s:?}");
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

/// Creates a veth pair: `a_if` in `a` and its peer `b_if` in `b` (created directly in the
/// target namespaces, so the names never appear in the root netns), both brought up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    for n in [a_if, b_if] {
        ensure!(
            !n.is_empty() && n.len() <= MAX_IFNAME && !n.contains(['/', ' ', ':']),
            "bad interface name {n:?}"
        );
    }
    a.ip_args(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])
    .with_context(|| format!("veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
    a.set_link(a_if, true)?;
    b.set_link(b_if, true)?;
    Ok(())
}

/// The gateways (`via ADDR`) in `ip route show` output, sorted.
pub fn route_gateways(ip_route_output: &str) -> Vec<String> {
    let mut hops: Vec<String> = ip_route_output
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

/// Returns the index of `ifname` in the calling thread's network namespace.
pub fn if_nametoindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname)?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "if_nametoindex({ifname}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(idx)
}
