//! Real BGP daemons for interop tests: BIRD 2 and GoBGP, each running in a test
//! namespace, killed and cleaned up on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Netns, unique_suffix};

/// A BIRD 2 instance (`bird -f`) with its own control socket.
pub struct Bird {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Bird {
    /// Starts BIRD in `ns` with `config` and waits for its control socket.
    pub fn start(ns: &Netns, config: &str) -> Result<Bird> {
        Bird::start_with_files(ns, |_| config.to_string(), &[])
    }

    /// Like [`Bird::start`], with `files` (name, content) written into BIRD's own
    /// directory first; `config` gets that directory, to `include` them by full path
    /// (e.g. a large `protocol static` table). Removed with the rest on drop.
    pub fn start_with_files(
        ns: &Netns,
        config: impl FnOnce(&Path) -> String,
        files: &[(&str, &str)],
    ) -> Result<Bird> {
        let dir = std::env::temp_dir().join(format!("nva-bird-{}", unique_suffix()));
        fs::create_dir_all(&dir)?;
        for (name, content) in files {
            fs::write(dir.join(name), content)?;
        }
        let conf = dir.join("bird.conf");
        fs::write(&conf, config(&dir))?;
        let sock = dir.join("bird.ctl");
        let log = fs::File::create(dir.join("bird.log"))?;
        let child = ns.spawn_with(
            &[
                "bird",
                "-f",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &sock.to_string_lossy(),
                "-P",
                &dir.join("bird.pid").to_string_lossy(),
            ],
            Stdio::from(log.try_clone()?),
            Stdio::from(log),
        )?;
        let mut bird = Bird { child, dir, sock };
        let t = Instant::now();
        while !bird.sock.exists() {
            if let Ok(Some(status)) = bird.child.try_wait() {
                bail!("bird exited ({status}): {}", bird.log());
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("bird did not start: {}", bird.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// `birdc ARGS` output (stdout and stderr).
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output();
        combined_text(out, "birdc")
    }

    /// Polls `birdc ARGS` until `pred` holds on its output.
    pub fn wait_for(
        &self,
        args: &[&str],
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        poll_until(
            within,
            || self.birdc(args),
            pred,
            |out| {
                format!(
                    "birdc {args:?} never matched; last output:\n{out}\nlog:\n{}",
                    self.log()
                )
            },
        )
    }

    /// BIRD's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    /// BIRD's own directory (config, log, included files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// BIRD's control socket.
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// Kills BIRD at once (SIGKILL): its TCP sessions end without a NOTIFICATION.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// BIRD's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A gobgpd instance with its gRPC API on a loopback port of its namespace.
pub struct Gobgp {
    child: Child,
    ns: String,
    dir: PathBuf,
}

impl Gobgp {
    /// Starts gobgpd in `ns` with a TOML `config` and waits until its API answers.
    pub fn start(ns: &Netns, config: &str) -> Result<Gobgp> {
        let dir = std::env::temp_dir().join(format!("nva-gobgp-{}", unique_suffix()));
        fs::create_dir_all(&dir)?;
        let conf = dir.join("gobgp.toml");
        fs::write(&conf, config)?;
        let log = fs::File::create(dir.join("gobgpd.log"))?;
        let child = ns.spawn_with(
            &[
                "gobgpd",
                "-t",
                "toml",
                "-f",
                &conf.to_string_lossy(),
                "--api-hosts",
                "127.0.0.1:50051",
            ],
            Stdio::from(log.try_clone()?),
            Stdio::from(log),
        )?;
        let g = Gobgp {
            child,
            ns: ns.name().to_string(),
            dir,
        };
        let t = Instant::now();
        while !g.gobgp(&["global"]).contains("AS:") {
            if t.elapsed() > Duration::from_secs(15) {
                bail!("gobgpd did not start: {}", g.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(g)
    }

    /// `gobgp ARGS` against this daemon (stdout and stderr).
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
            .output();
        combined_text(out, "gobgp")
    }

    /// Polls `gobgp ARGS` until `pred` holds on its output.
    pub fn wait_for(
        &self,
        args: &[&str],
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        poll_until(
            within,
            || self.gobgp(args),
            pred,
            |out| format!("gobgp {args:?} never matched; last output:\n{out}"),
        )
    }

    /// gobgpd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("gobgpd.log")).unwrap_or_default()
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A control tool's stdout and stderr as one text, or why it did not run.
fn combined_text(out: std::io::Result<Output>, tool: &str) -> String {
    match out {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        Err(e) => format!("{tool} failed: {e}"),
    }
}

/// Runs `query` every 200 ms until `pred` holds on its output; after `within`,
/// fails with `explain(last output)`.
fn poll_until(
    within: Duration,
    query: impl Fn() -> String,
    pred: impl Fn(&str) -> bool,
    explain: impl Fn(&str) -> String,
) -> Result<String> {
    let t = Instant::now();
    loop {
        let out = query();
        if pred(&out) {
            return Ok(out);
        }
        if t.elapsed() > within {
            bail!("{}", explain(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `cmd` and returns its stdout, with context on failure.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
