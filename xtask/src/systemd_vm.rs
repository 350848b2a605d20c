//! The guest of the systemd VM test (`tests/tests/systemd_vm.rs`): a small Debian 12
//! system with systemd as PID 1, where the test installs the `.deb` as the README says
//! and runs nva as the shipped unit, under systemd's real sandbox.
//!
//! Built once by `mmdebstrap` (minbase, systemd, udev, Debian's kernel and an initramfs
//! that only loads virtio-blk and ext4) into a raw ext4 image (`mke2fs -d`, no loop
//! device or mount needed), with the kernel and initramfs copied beside it, under
//! `<cache>/systemd-guest` (`$NVA_VM_DIR`, default /var/lib/nva-vm). The test boots it
//! with QEMU's `snapshot=on`, so the image never changes. A test agent
//! (`nva-vm-agent.service`) mounts a directory shared with the host (9p) and runs the
//! shell scripts the test drops there. The recipe is stamped into the cache: a change
//! here rebuilds the image; otherwise set-up does nothing. The host's apt sources, /boot
//! and network are not touched (mmdebstrap fetches with its own apt state).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::run;

/// Debian packages building the image needs (and booting it: qemu-system-x86, which the
/// other VM tests install too).
pub const DEBIAN_PACKAGES: &[&str] = &["mmdebstrap", "e2fsprogs", "qemu-system-x86"];

/// What goes into the guest besides minbase (Essential + apt): systemd as init, udev
/// (loads the NICs' and 9p's drivers), kmod, iproute2 and procps (the test sets the
/// guest's addresses and `sysctl`s as the README says), adduser (nva's own dependency: a new machine has it), the kernel.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "procps",
    "adduser",
    "linux-image-amd64",
];

/// The Debian release of the guest (the README's "fresh Debian 12 machine").
const SUITE: &str = "bookworm";

/// Written before the packages are installed, so the kernel's postinst builds a small
/// initramfs: only what mounting the root needs (virtio-blk and ext4), not every driver.
const SETUP_HOOK: &str = r#"#!/bin/sh
set -e
mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$1/etc/initramfs-tools/conf.d/nva-vm.conf"
cat > "$1/etc/initramfs-tools/hooks/nva-vm" <<'HOOK'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk ext4
HOOK
chmod 755 "$1/etc/initramfs-tools/hooks/nva-vm"
"#;

/// The test agent: mounts the share (9p tag `nvashare`) on /run/nva-share, writes
/// `ready`, then runs each `cmd-N.sh` that appears (output in `out-N`, exit code in
/// `rc-N`); `stop` powers the guest off. The round over the `cmd-N.sh` files is the one
/// the tests' own guests run (tests/src/vm_agent_round.sh, the guest's side of the
/// tests' `Agent`): a change there changes the recipe too, and set-up rebuilds the image.
const AGENT: &str = concat!(
    r#"#!/bin/sh
d=/run/nva-share
mkdir -p "$d"
modprobe 9pnet_virtio
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 nvashare "$d" || exit 1
echo ready > "$d/ready"
while :; do
"#,
    include_str!("../../tests/src/vm_agent_round.sh"),
    r#"  if [ -e "$d/stop" ]; then systemctl --no-block poweroff; exit 0; fi
  sleep 0.1
done
"#
);

const AGENT_UNIT: &str = "[Unit]
Description=nva VM test agent (runs the test's scripts from the 9p share)
After=local-fs.target

[Service]
ExecStart=/usr/local/sbin/nva-vm-agent

[Install]
WantedBy=multi-user.target
";

/// Guest files: (path, mode, content).
const FILES: &[(&str, u32, &str)] = &[
    ("etc/fstab", 0o644, "/dev/vda / ext4 rw,noatime 0 0\n"),
    ("etc/hostname", 0o644, "nva-guest\n"),
    ("usr/local/sbin/nva-vm-agent", 0o755, AGENT),
    ("etc/systemd/system/nva-vm-agent.service", 0o644, AGENT_UNIT),
];

/// Timers that would run apt or disk jobs during a test (apt-daily holds the dpkg lock).
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
];

/// Size of the image file (sparse; about 700 MB used).
const IMAGE_SIZE: &str = "1500M";

/// `<cache>/systemd-guest`.
pub fn guest_dir(cache: &Path) -> PathBuf {
    cache.join("systemd-guest")
}

/// The recipe in words: the stamp. Any change to what goes into the image changes it.
fn recipe(mirror: &str) -> String {
    let mut s =
        format!("suite {SUITE}\nmirror {mirror}\npackages {PACKAGES:?}\nmasked {MASKED:?}\n");
    s += SETUP_HOOK;
    for (path, mode, content) in FILES {
        s += &format!("{path} {mode:o}\n{content}");
    }
    s += IMAGE_SIZE;
    s
}

/// Builds the image unless the stamp says it is there and built from this recipe.
pub fn setup(cache: &Path, mirror: &str) -> Result<()> {
    let dir = guest_dir(cache);
    let stamp = dir.join(".complete");
    let recipe = recipe(mirror);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == recipe)
        && ["root.img", "vmlinuz", "initrd.img"]
            .iter()
            .all(|f| dir.join(f).is_file())
    {
        return Ok(());
    }
    eprintln!(
        "xtask: building the systemd guest image in {}",
        dir.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let rootfs = dir.join("rootfs");
    let hook = dir.join("setup-hook.sh");
    std::fs::write(&hook, SETUP_HOOK)?;
    set_mode(&hook, 0o755)?;
    run(Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--mode=root",
            "--quiet",
            "--aptopt=APT::Install-Recommends \"false\"",
        ])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--setup-hook={}", hook.display()))
        .arg(SUITE)
        .arg(&rootfs)
        .arg(mirror))?;
    for (path, mode, content) in FILES {
        let file = rootfs.join(path);
        std::fs::create_dir_all(file.parent().expect("a parent"))?;
        std::fs::write(&file, content)?;
        set_mode(&file, *mode)?;
    }
    run(Command::new("systemctl")
        .arg(format!("--root={}", rootfs.display()))
        .args(["enable", "nva-vm-agent.service"]))?;
    run(Command::new("systemctl")
        .arg(format!("--root={}", rootfs.display()))
        .arg("mask")
        .args(MASKED))?;
    // The kernel and initramfs the image's own packages installed.
    let boot = rootfs.join("boot");
    for (prefix, name) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
        let found = std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .with_context(|| format!("no {prefix}* in {}", boot.display()))?;
        std::fs::copy(&found, dir.join(name))?;
    }
    let image = dir.join("root.img");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "nvaroot", "-d"])
        .arg(&rootfs)
        .arg(&image)
        .arg(IMAGE_SIZE))?;
    std::fs::remove_dir_all(&rootfs)?;
    std::fs::remove_file(&hook)?;
    if !image.is_file() {
        bail!("mke2fs left no {}", image.display());
    }
    std::fs::write(&stamp, recipe)?;
    eprintln!("xtask: systemd guest image ready in {}", dir.display());
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
