//! Running the router under test: [`NvaProcess`] (daemon in a namespace + its CLI),
//! [`Counters`] (parsed `nva stats --json`) and the [`wait_until`] polling helper.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use crate::netns::Netns;
use crate::unique_suffix;

/// The `nva` binary: `$NVA_BIN` if set, else `<workspace>/target/debug/nva`; errors if missing.
pub fn nva_binary() -> Result<PathBuf> {
    let p = match std::env::var_os("NVA_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug")
            .join("nva"),
    };
    if !p.is_file() {
        bail!(
            "nva binary not found at {} (build it with `cargo build -p nva-userspace`, \
             or point NVA_BIN at it)",
            p.display()
        );
    }
    Ok(p)
}

/// The Debian package to test: `$NVA_DEB` (`cargo xtask test` builds it first), or one
/// built now with `cargo xtask dist` in `<target>/packaging-test` (a target dir of its
/// own: the running `cargo test` holds the workspace's; kept between runs, so only the
/// first is slow). Panics when there is none.
pub fn nva_deb() -> PathBuf {
    let deb = match std::env::var_os("NVA_DEB") {
        Some(deb) => PathBuf::from(deb),
        None => build_deb(),
    };
    assert!(deb.is_file(), "no package at {}", deb.display());
    deb
}

/// `cargo xtask dist` in `<target>/packaging-test`; the path it prints.
fn build_deb() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .args(["xtask", "dist"])
        .env("CARGO_TARGET_DIR", target.join("packaging-test"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo xtask dist");
    assert!(out.status.success(), "cargo xtask dist failed");
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("cargo xtask dist printed no path")
            .trim(),
    )
}

/// Polls `f` every `poll` until it returns Ok(true); errors after `timeout`, including the
/// last error `f` returned (errors from `f` are retried, not fatal).
pub fn wait_until(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("condition not met within {timeout:?}")),
                None => anyhow!("condition not met within {timeout:?}"),
            });
        }
        std::thread::sleep(poll);
    }
}

/// Packet and byte count of one counter cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PacketsBytes {
    /// Packets.
    #[serde(default)]
    pub packets: u64,
    /// Bytes.
    #[serde(default)]
    pub bytes: u64,
}

/// Counters of one interface, by reason name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IfaceCounters {
    /// Interface name in nva's namespace.
    pub name: String,
    /// Interface index in nva's namespace.
    #[serde(default)]
    pub ifindex: u32,
    /// Reason name (see `nva_common::reason::NAMES`) -> counts.
    #[serde(default)]
    pub counters: BTreeMap<String, PacketsBytes>,
}

/// Parsed `nva stats --json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Counters {
    /// One entry per interface nva is attached to.
    pub interfaces: Vec<IfaceCounters>,
}

/// Panics unless `reason` is one of `nva_common::reason::NAMES` (catches typos in tests).
fn check_reason(reason: &str) {
    assert!(
        nva_common::reason::NAMES.contains(&reason),
        "unknown counter reason {reason:?}; known: {:?}",
        nva_common::reason::NAMES
    );
}

impl Counters {
    /// Parses the JSON of `nva stats --json`.
    pub fn from_json(v: &serde_json::Value) -> Result<Counters> {
        Counters::deserialize(v).with_context(|| format!("parsing stats JSON {v}"))
    }

    fn cell(&self, ifname: &str, reason: &str) -> PacketsBytes {
        check_reason(reason);
        self.interfaces
            .iter()
            .filter(|i| i.name == ifname)
            .filter_map(|i| i.counters.get(reason))
            .fold(PacketsBytes::default(), |a, c| PacketsBytes {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            })
    }

    /// Packets counted for `reason` on `ifname` (0 if absent). Panics on an unknown reason.
    pub fn get(&self, ifname: &str, reason: &str) -> u64 {
        self.cell(ifname, reason).packets
    }

    /// Bytes counted for `reason` on `ifname` (0 if absent).
    pub fn get_bytes(&self, ifname: &str, reason: &str) -> u64 {
        self.cell(ifname, reason).bytes
    }

    /// Packets counted for `reason` over all interfaces.
    pub fn total(&self, reason: &str) -> u64 {
        check_reason(reason);
        self.interfaces
            .iter()
            .filter_map(|i| i.counters.get(reason))
            .map(|c| c.packets)
            .sum()
    }

    /// Bytes counted for `reason` over all interfaces.
    pub fn total_bytes(&self, reason: &str) -> u64 {
        check_reason(reason);
        self.interfaces
            .iter()
            .filter_map(|i| i.counters.get(reason))
            .map(|c| c.bytes)
            .sum()
    }

    /// `self - earlier`, cell by cell (saturating), for "what did this test cause" checks.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = self.clone();
        for i in &mut out.interfaces {
            for (reason, c) in &mut i.counters {
                let before = earlier.cell_unchecked(&i.name, reason);
                c.packets = c.packets.saturating_sub(before.packets);
                c.bytes = c.bytes.saturating_sub(before.bytes);
            }
        }
        out
    }

    fn cell_unchecked(&self, ifname: &str, reason: &str) -> PacketsBytes {
        self.interfaces
            .iter()
            .find(|i| i.name == ifname)
            .and_then(|i| i.counters.get(reason).copied())
            .unwrap_or_default()
    }
}

/// The nva daemon running in a namespace; SIGTERMed (then SIGKILLed) and cleaned up on drop.
pub struct NvaProcess {
    bin: PathBuf,
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl NvaProcess {
    /// Writes `config_toml` to a unique temp file, starts `nva run --config FILE --socket SOCK`
    /// in `ns` (output to a log file) and waits up to 10 s until `nva status` answers.
    pub fn start(ns: &Netns, config_toml: &str) -> Result<NvaProcess> {
        NvaProcess::start_with_binary(&nva_binary()?, ns, config_toml)
    }

    /// Like [`NvaProcess::start`] with an explicit binary (e.g. a stub in harness tests).
    pub fn start_with_binary(bin: &Path, ns: &Netns, config_toml: &str) -> Result<NvaProcess> {
        let bin = bin.to_path_buf();
        let id = unique_suffix();
        let dir = std::env::temp_dir().join(format!("nva-test-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut p = NvaProcess {
            config: dir.join("nva.toml"),
            log: dir.join("nva.log"),
            socket: std::env::temp_dir().join(format!("nva-test-{id}.sock")),
            dir,
            bin,
            child: None,
        };
        std::fs::write(&p.config, config_toml)
            .with_context(|| format!("writing {}", p.config.display()))?;
        let log = File::create(&p.log)?;
        let (bin, cfg, sock) = (
            p.bin.to_string_lossy().into_owned(),
            p.config.to_string_lossy().into_owned(),
            p.socket.to_string_lossy().into_owned(),
        );
        p.child = Some(ns.spawn_with(
            &[&bin, "run", "--config", &cfg, "--socket", &sock],
            Stdio::from(log.try_clone()?),
            Stdio::from(log),
        )?);

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("nva exited early ({st}); log:\n{}", p.log());
            }
            if p.socket.exists() {
                let ok = Command::new(&p.bin)
                    .args(["status", "--socket", &sock])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(p);
                }
            }
            if Instant::now() >= deadline {
                bail!("nva not ready after 10 s; log:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Path of the config file (rewrite it to test reloads).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The daemon's stdout + stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// True while the daemon has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Runs `nva <args...> --socket SOCK` and returns the raw output (no status check).
    pub fn cli_raw(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running nva {args:?}"))
    }

    /// Runs `nva <args...> --socket SOCK --json` and parses stdout as JSON (Null if empty).
    pub fn cli(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--json");
        let out = self.cli_raw(&full)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "nva {args:?} failed ({}): {}{stdout}",
                out.status,
                stderr.trim()
            );
        }
        if stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&stdout)
            .with_context(|| format!("nva {args:?}: bad JSON {stdout:?} (stderr: {stderr})"))
    }

    /// Per-interface counters (`nva stats --json`).
    pub fn counters(&self) -> Result<Counters> {
        Counters::from_json(&self.cli(&["stats"])?)
    }

    /// SIGTERM, wait up to 15 s (a BGP drain takes `health.drain_ms`, 5 s by default),
    /// then SIGKILL; returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_within(Duration::from_secs(15))
    }

    /// SIGTERM, wait up to `patience`, then SIGKILL; returns the exit status.
    pub fn stop_within(&mut self, patience: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("nva already stopped"))?;
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("nva-tests: nva did not exit {patience:?} after SIGTERM; killing it");
        child.kill()?;
        Ok(child.wait()?)
    }

    /// SIGKILLs the daemon at once (e.g. to test what survives a crash).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("nva already stopped"))?;
        let _ = child.kill();
        Ok(child.wait()?)
    }
}

impl Drop for NvaProcess {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("nva-tests: stopping nva: {e:#}");
        }
        if std::thread::panicking() {
            eprintln!("--- nva log ({}) ---\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.socket);
        // nva removes its lock on a clean exit; not when it was killed.
        let _ = std::fs::remove_file(format!("{}.lock", self.socket.display()));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_and_sum() {
        let v = serde_json::json!({"interfaces":[
            {"name":"c0","ifindex":2,"counters":{"forwarded":{"packets":3,"bytes":300},
                                               "dropped-malformed":{"packets":1,"bytes":60}}},
            {"name":"s1","ifindex":3,"counters":{"forwarded":{"packets":2,"bytes":200}}}]});
        let c = Counters::from_json(&v).unwrap();
        assert_eq!(c.get("c0", "forwarded"), 3);
        assert_eq!(c.get("s1", "forwarded"), 2);
        assert_eq!(c.get("s1", "dropped-malformed"), 0);
        assert_eq!(c.get("nope", "forwarded"), 0);
        assert_eq!(c.total("forwarded"), 5);
        assert_eq!(c.total_bytes("forwarded"), 500);
        let mut later = c.clone();
        later.interfaces[0]
            .counters
            .get_mut("forwarded")
            .unwrap()
            .packets = 10;
        let d = later.since(&c);
        assert_eq!(d.get("c0", "forwarded"), 7);
        assert_eq!(d.get("s1", "forwarded"), 0);
    }

    #[test]
    #[should_panic(expected = "unknown counter reason")]
    fn unknown_reason_panics() {
        Counters::default().get("c0", "forwardedd");
    }

    #[test]
    fn wait_until_times_out_with_last_error() {
        let mut n = 0;
        wait_until(Duration::from_secs(1), Duration::from_millis(1), || {
            n += 1;
            Ok(n >= 3)
        })
        .unwrap();
        let e = wait_until(Duration::from_millis(30), Duration::from_millis(5), || {
            bail!("still broken")
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("still broken"), "{e:#}");
    }

    #[test]
    fn nva_binary_respects_env() {
        // Only checks the missing-binary message; NVA_BIN is not modified (tests run in threads).
        if std::env::var_os("NVA_BIN").is_none()
            && let Err(e) = nva_binary()
        {
            assert!(format!("{e}").contains("NVA_BIN"));
        }
    }
}
