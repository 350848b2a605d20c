//! Test environment for interop tests (root only): network namespaces joined by a veth,
//! a BIRD process in one of them, and threads that enter a namespace. Everything is
//! removed by Drop guards, also when a test fails.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `None` (and a message) when the test cannot run here.
pub fn skip_unless_root(tools: &[&str]) -> Option<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (network namespaces)");
        return None;
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()));
        if !found {
            eprintln!("skipped: {t} not installed");
            return None;
        }
    }
    Some(())
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("bgpt{}x{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Moves the calling thread into this namespace (network only).
    pub fn enter(&self) {
        let f = fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        // SAFETY: a valid namespace fd; affects only the calling thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` (interface `veth0`) and `b` (`veth1`) and brings both up.
pub fn veth(a: &Netns, b: &Netns) {
    a.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &b.name,
    ]);
    a.ip(&["link", "set", "veth0", "up"]);
    b.ip(&["link", "set", "veth1", "up"]);
}

/// Waits until `dev` in `ns` has a usable (not tentative) IPv6 link-local address.
pub fn wait_link_local(ns: &Netns, dev: &str) {
    let t = Instant::now();
    loop {
        let out = ns.ip(&["-6", "addr", "show", "dev", dev, "scope", "link"]);
        if out.contains("fe80") && !out.contains("tentative") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no link-local address on {dev}: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f` on a new thread inside `ns`, with a current-thread tokio runtime.
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = ns.name.clone();
    std::thread::spawn(move || {
        Netns { name: path.clone() }.enter_then_forget();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

impl Netns {
    fn enter_then_forget(self) {
        self.enter();
        std::mem::forget(self); // the owner deletes the namespace, not this copy
    }
}

/// A BIRD 2 daemon in a namespace, killed on drop.
pub struct Bird {
    child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

impl Bird {
    pub fn start(ns: &Netns, config: &str) -> Bird {
        let dir = std::env::temp_dir().join(format!("{}-bird", ns.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("bird.conf");
        fs::write(&conf, config).expect("write bird.conf");
        let sock = dir.join("bird.ctl");
        let log = fs::File::create(dir.join("bird.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bird");
        let bird = Bird { child, dir, sock };
        let t = Instant::now();
        while !bird.sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "BIRD did not start: {}",
                bird.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bird
    }

    /// Kills BIRD at once (SIGKILL): its TCP sessions end without a NOTIFICATION.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `birdc ARGS`, stdout and stderr; not checked for success because birdc exits
    /// non-zero for answers such as "Network not found".
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .expect("run birdc");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    /// Polls `birdc ARGS` until `pred` holds on its output (or panics after `within`).
    pub fn wait_for(&self, args: &[&str], within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let out = self.birdc(args);
            if pred(&out) {
                return out;
            }
            assert!(
                t.elapsed() < within,
                "birdc {args:?} never matched; last output:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `ip netns exec` execs bird, so the child is bird itself.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A GoBGP daemon in a namespace (API on the namespace's own loopback), killed on drop.
pub struct Gobgp {
    child: Child,
    ns: String,
    pub dir: PathBuf,
}

impl Gobgp {
    pub fn start(ns: &Netns, config_toml: &str) -> Gobgp {
        let dir = std::env::temp_dir().join(format!("{}-gobgp", ns.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("gobgp.toml");
        fs::write(&conf, config_toml).expect("write gobgp.toml");
        let log = fs::File::create(dir.join("gobgpd.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "gobgpd", "-t", "toml", "-f"])
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50051"])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gobgpd");
        let g = Gobgp {
            child,
            ns: ns.name.clone(),
            dir,
        };
        let t = Instant::now();
        while !g.gobgp(&["global"]).contains("AS:") {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "gobgpd did not start: {}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }

    /// `gobgp ARGS` against this daemon; stdout and stderr.
    pub fn gobgp(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .output()
            .expect("run gobgp");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("gobgpd.log")).unwrap_or_default()
    }

    pub fn wait_for(&self, args: &[&str], within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let out = self.gobgp(args);
            if pred(&out) {
                return out;
            }
            assert!(
                t.elapsed() < within,
                "gobgp {args:?} never matched; last output:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A speaker listening on `listen` (inside the current namespace), with tracing set up
/// and its event queue (`queue` events deep).
pub fn listening_speaker(
    listen: &str,
    queue: usize,
) -> (super::Speaker, tokio::sync::mpsc::Receiver<super::Event>) {
    super::tests_local::init_tracing();
    let (tx, rx) = tokio::sync::mpsc::channel(queue);
    let mut speaker = super::Speaker::new(tx);
    speaker
        .listen(listen.parse().expect("listen address"))
        .expect("listen");
    (speaker, rx)
}
