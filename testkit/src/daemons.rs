//! Real BGP daemons for interop tests: BIRD 2 and GoBGP, each running in a test
//! namespace, killed and cleaned up on drop.
use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Netns, unique_suffix};

/// A BIRD 2 instance (`bird -f`) with its own control socket.
pub struct Bird {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
    birdc: ControlTool,
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
        let birdc = ControlTool {
            name: "birdc",
            argv: vec!["birdc".into(), "-s".into(), sock.clone().into()],
            log: Some(dir.join("bird.log")),
        };
        let mut bird = Bird {
            child,
            dir,
            sock,
            birdc,
        };
        let Bird {
            child, dir, sock, ..
        } = &mut bird;
        let log = || read_log(&dir.join("bird.log"));
        poll_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let up = sock.exists();
                if !up && let Ok(Some(status)) = child.try_wait() {
                    bail!("bird exited ({status}): {}", log());
                }
                Ok(up)
            },
            |&up| up,
            |_| format!("bird did not start: {}", log()),
        )?;
        Ok(bird)
    }

    /// `birdc ARGS` output (stdout and stderr).
    pub fn birdc(&self, args: &[&str]) -> String {
        self.birdc.run(args)
    }

    /// Polls `birdc ARGS` until `pred` holds on its output.
    pub fn wait_for(
        &self,
        args: &[&str],
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.birdc.wait_for(args, within, pred)
    }

    /// BIRD's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("bird.log"))
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
    dir: PathBuf,
    gobgp: ControlTool,
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
        let gobgp = ControlTool {
            name: "gobgp",
            argv: ["ip", "netns", "exec", ns.name(), "gobgp"]
                .into_iter()
                .chain(["-u", "127.0.0.1", "-p", "50051"])
                .map(OsString::from)
                .collect(),
            log: None,
        };
        let g = Gobgp { child, dir, gobgp };
        poll_until(
            Duration::from_secs(15),
            Duration::from_millis(100),
            || Ok(g.gobgp(&["global"])),
            |out| out.contains("AS:"),
            |_| format!("gobgpd did not start: {}", g.log()),
        )?;
        Ok(g)
    }

    /// `gobgp ARGS` against this daemon (stdout and stderr).
    pub fn gobgp(&self, args: &[&str]) -> String {
        self.gobgp.run(args)
    }

    /// Polls `gobgp ARGS` until `pred` holds on its output.
    pub fn wait_for(
        &self,
        args: &[&str],
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.gobgp.wait_for(args, within, pred)
    }

    /// gobgpd's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("gobgpd.log"))
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A daemon's control tool: the command line (`argv`, then a query's arguments) and,
/// for failures, its name and the daemon's log file.
struct ControlTool {
    name: &'static str,
    argv: Vec<OsString>,
    log: Option<PathBuf>,
}

impl ControlTool {
    /// The query's stdout and stderr as one text, or why the tool did not run.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(args)
            .output();
        match out {
            Ok(o) => {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s
            }
            Err(e) => format!("{} failed: {e}", self.name),
        }
    }

    /// Runs the query every 200 ms until `pred` holds on its output; after `within`,
    /// fails with the last output (and the daemon's log).
    fn wait_for(
        &self,
        args: &[&str],
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        poll_until(
            within,
            Duration::from_millis(200),
            || Ok(self.run(args)),
            |out: &String| pred(out),
            |out| {
                let mut why = format!("{} {args:?} never matched; last output:\n{out}", self.name);
                if let Some(log) = &self.log {
                    why += &format!("\nlog:\n{}", read_log(log));
                }
                why
            },
        )
    }
}

/// A daemon's log so far (empty when there is none yet).
fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Runs `attempt` every `every` until `done` holds on its result (an error from
/// `attempt` ends the wait with that error); after `within`, fails with
/// `explain(last result)`.
fn poll_until<T>(
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T>,
    done: impl Fn(&T) -> bool,
    explain: impl Fn(&T) -> String,
) -> Result<T> {
    let t = Instant::now();
    loop {
        let got = attempt()?;
        if done(&got) {
            return Ok(got);
        }
        if t.elapsed() > within {
            bail!("{}", explain(&got));
        }
        std::thread::sleep(every);
    }
}

/// Runs `cmd` and returns its stdout, with context on failure.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
