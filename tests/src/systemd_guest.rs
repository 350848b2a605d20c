//! A Debian 12 guest with systemd as PID 1, for the test that installs the `.deb` and
//! runs nva as the shipped unit (`tests/tests/systemd_vm.rs`). `cargo xtask setup`
//! builds its image (xtask/src/systemd_vm.rs): `<cache>/systemd-guest/{root.img,
//! vmlinuz,initrd.img}`.
//!
//! QEMU (software emulation) boots the image with `snapshot=on` (every run starts from
//! the pristine image; writes go to a temporary file QEMU deletes), NICs on taps of a
//! [`Lab`] namespace, and a directory shared over 9p (tag `nvashare`, mounted at
//! [`SHARE`] in the guest), where the guest's agent service runs the scripts the test
//! drops. Powered off (then killed) on drop, also when the test panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::vm::{Agent, Lab, Nic, vm_dir};
use crate::{ScratchDir, wait_until};

/// Where the guest mounts the shared directory.
pub const SHARE: &str = "/run/nva-share";

/// The image the set-up built.
#[derive(Debug, Clone)]
pub struct Image {
    /// The root file system (raw ext4, on virtio-blk as /dev/vda).
    pub root: PathBuf,
    /// Debian's kernel from the image.
    pub vmlinuz: PathBuf,
    /// Its initramfs (virtio-blk and ext4 only).
    pub initrd: PathBuf,
}

impl Image {
    /// The image of the cache. Err when it is missing and `cargo xtask test` runs the
    /// tests (it sets `NVA_VM_DIR` after building it), Ok(None) (skip) when a plain
    /// `cargo test` finds none.
    pub fn find() -> Result<Option<Image>> {
        let dir = vm_dir().join("systemd-guest");
        let image = Image {
            root: dir.join("root.img"),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
        };
        if !dir.join(".complete").is_file()
            || ![&image.root, &image.vmlinuz, &image.initrd]
                .iter()
                .all(|p| p.is_file())
        {
            if std::env::var_os("NVA_VM_DIR").is_some() {
                bail!(
                    "no systemd guest image under {} (cargo xtask setup builds it)",
                    dir.display()
                );
            }
            eprintln!(
                "SKIP: no systemd guest image under {} (run `cargo xtask setup`)",
                dir.display()
            );
            return Ok(None);
        }
        Ok(Some(image))
    }
}

/// One running guest; see the module documentation.
pub struct SystemdGuest {
    child: Option<Child>,
    scratch: ScratchDir,
    agent: Agent,
}

impl SystemdGuest {
    /// Boots `image` with `cpus` vCPUs, `mem_mib` of memory and `nics` (eth0, eth1, ...
    /// in this order: the kernel is told `net.ifnames=0`), QEMU running in `lab`.
    /// [`SystemdGuest::wait_ready`] waits for the agent.
    pub fn start(
        lab: &Lab,
        image: &Image,
        cpus: u32,
        mem_mib: u32,
        nics: &[Nic],
    ) -> Result<SystemdGuest> {
        let scratch = ScratchDir::new("nvat-sysvm")?;
        let share = scratch.path().join("share");
        std::fs::create_dir_all(&share)?;
        let log = scratch.path().join("console.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", lab.ns.name(), "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-cpu", "max", "-nodefaults", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-smp")
            .arg(cpus.to_string())
            .arg("-m")
            .arg(mem_mib.to_string())
            .arg("-kernel")
            .arg(&image.vmlinuz)
            .arg("-initrd")
            .arg(&image.initrd)
            // no_timer_check: under emulation on a busy host the kernel's check of the
            // IO-APIC timer can fail ("IO-APIC + timer doesn't work!", a panic at boot).
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 no_timer_check \
                 systemd.show_status=0",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                image.root.display()
            ))
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=nvashare,security_model=none,id=share",
                share.display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", log.display()));
        for (i, nic) in nics.iter().enumerate() {
            cmd.arg("-netdev").arg(format!(
                "tap,id=n{i},ifname={},script=no,downscript=no,vhost=off,queues={}",
                nic.tap, nic.queues
            ));
            let mut dev = format!(
                "virtio-net-pci,netdev=n{i},mac={},mq=on,vectors={}",
                nic.mac,
                2 * nic.queues + 2
            );
            if !nic.extra.is_empty() {
                dev.push(',');
                dev.push_str(&nic.extra);
            }
            cmd.arg("-device").arg(dev);
        }
        let out = std::fs::File::create(scratch.path().join("qemu.log"))?;
        let child = cmd
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        Ok(SystemdGuest {
            child: Some(child),
            scratch,
            agent: Agent::new("guest", share, log),
        })
    }

    /// Waits until the agent runs (systemd started it), up to `timeout`.
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
                    "the guest ended before it was ready ({status}):\n{}\n{}",
                    std::fs::read_to_string(self.scratch.path().join("qemu.log"))
                        .unwrap_or_default(),
                    self.console_tail(40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "the guest was not ready within {timeout:?}:\n{}",
                    self.console_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The directory shared with the guest (the host's side; [`SHARE`] in the guest).
    pub fn share(&self) -> &Path {
        &self.agent.share
    }

    /// Runs `script` with `sh` in the guest (as root, from the agent service); returns
    /// its exit code and output (stdout and stderr), or an error after `timeout`.
    pub fn sh_status(&self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        self.agent.sh_status(script, timeout)
    }

    /// Like [`SystemdGuest::sh_status`] with a 120 s timeout; a non-zero exit is an error.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.agent.sh(script, Duration::from_secs(120))
    }

    /// The last `lines` lines of the guest's serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        self.agent.console_tail(lines)
    }
}

impl Drop for SystemdGuest {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The agent asks systemd to power off; QEMU is killed if that takes too long.
        let _ = std::fs::write(self.agent.share.join("stop"), "");
        let _ = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            Ok(child.try_wait()?.is_some())
        });
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the process group this guest's QEMU leads (spawned with
            // process_group(0)); nothing else is in it.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}
