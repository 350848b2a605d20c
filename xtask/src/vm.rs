//! What the VM tests (`tests/tests/vm.rs`) need: QEMU, virtme-ng (pinned, in a venv of
//! its own) and stock Debian kernels with their modules, unpacked into a cache directory.
//!
//! Nothing here touches the host's /boot, /lib/modules or apt sources: the kernels are
//! fetched with `apt-get download` through a private sources list and private apt state
//! (the mirror is taken from the host's own sources), unpacked with `dpkg-deb -x` and
//! indexed with `depmod -b`. Every step is skipped when its result is already there.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{output, run};

/// Debian packages the VM tests use (python3-venv: virtme-ng's own environment).
pub const DEBIAN_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "kmod", "python3-venv"];

/// The virtme-ng release the tests run (PyPI).
const VIRTME_NG_VERSION: &str = "1.42";

/// The guest kernels: (name in the cache, apt suite). Each is the suite's
/// `linux-image-amd64`: bookworm 6.1, bookworm-backports 6.12, and bullseye 5.10, the
/// oldest kernel nva is tested on (the oldest 5.x a Debian mirror still has).
pub const KERNELS: &[(&str, &str)] = &[
    ("debian-12", "bookworm"),
    ("debian-12-backports", "bookworm-backports"),
    ("debian-11", "bullseye"),
];

/// The cache: `$NVA_VM_DIR`, or /var/lib/nva-vm (outside target/, so `cargo clean`
/// does not throw the kernels away; not under /var/cache, which virtme-ng hides behind a
/// tmpfs in the guest, where the modules have to be read).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NVA_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nva-vm"))
}

/// The kernels to fetch: `$NVA_VM_KERNELS` (comma-separated names) or [`KERNELS`].
fn wanted_kernels() -> Result<Vec<(&'static str, &'static str)>> {
    let Some(list) = std::env::var_os("NVA_VM_KERNELS") else {
        return Ok(KERNELS.to_vec());
    };
    let list = list.to_string_lossy().into_owned();
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            KERNELS
                .iter()
                .find(|(name, _)| *name == n)
                .copied()
                .with_context(|| format!("unknown kernel {n:?} in NVA_VM_KERNELS"))
        })
        .collect()
}

/// Installs virtme-ng and the guest kernels into the cache (the Debian packages are
/// installed with the others by the caller).
pub fn setup() -> Result<()> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    setup_virtme_ng(&dir)?;
    for (name, suite) in wanted_kernels()? {
        setup_kernel(&dir, name, suite)?;
    }
    Ok(())
}

/// The `vng` of the cache's venv.
pub fn vng(dir: &Path) -> PathBuf {
    dir.join("venv/bin/vng")
}

fn setup_virtme_ng(dir: &Path) -> Result<()> {
    let vng = vng(dir);
    if output(Command::new(&vng).arg("--version"))
        .is_some_and(|v| v.split_whitespace().any(|w| w == VIRTME_NG_VERSION))
    {
        return Ok(());
    }
    eprintln!(
        "xtask: installing virtme-ng {VIRTME_NG_VERSION} into {}/venv",
        dir.display()
    );
    let venv = dir.join("venv");
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    // Debian's python (python3-venv), not whatever python is first on PATH.
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("virtme-ng=={VIRTME_NG_VERSION}"),
    ]))
}

/// The mirror of Debian's main archive named in the host's apt sources (deb822 `URIs:`
/// or one-line `deb URI`), else deb.debian.org.
pub(crate) fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let uris = if let Some(rest) = line.strip_prefix("URIs:") {
                rest
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest
            } else {
                continue;
            };
            for uri in uris.split_whitespace() {
                if uri.starts_with("http") && uri.trim_end_matches('/').ends_with("/debian") {
                    return uri.trim_end_matches('/').to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// apt-get / apt-cache with a private sources list and private state under `apt`.
fn apt(tool: &str, apt: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.arg("-o")
        .arg(format!(
            "Dir::Etc::sourcelist={}",
            apt.join("sources.list").display()
        ))
        .args(["-o", "Dir::Etc::sourceparts=-"])
        .arg("-o")
        .arg(format!("Dir::State={}", apt.join("state").display()))
        .arg("-o")
        .arg(format!("Dir::Cache={}", apt.join("cache").display()))
        .args(["-o", "Dir::State::status=/var/lib/dpkg/status"])
        .args(["-o", "Acquire::Check-Valid-Until=false"])
        // The downloads land in root-owned cache directories.
        .args(["-o", "APT::Sandbox::User=root"]);
    cmd
}

/// Fetches `suite`'s linux-image-amd64 into `dir/kernels/name` (boot/vmlinuz-VERSION,
/// lib/modules/VERSION with depmod run) unless a finished copy is there.
fn setup_kernel(dir: &Path, name: &str, suite: &str) -> Result<()> {
    let root = dir.join("kernels").join(name);
    let done = root.join(".complete");
    if done.is_file() {
        return Ok(());
    }
    let apt_dir = dir.join("apt").join(name);
    for sub in ["state/lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt_dir.join(sub))?;
    }
    let mirror = debian_mirror();
    let mut fetched = None;
    // Releases out of support move from the mirrors to archive.debian.org.
    for mirror in [mirror.as_str(), "http://archive.debian.org/debian"] {
        std::fs::write(
            apt_dir.join("sources.list"),
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} \
                 {suite} main\n"
            ),
        )?;
        eprintln!("xtask: fetching the {suite} kernel index from {mirror}");
        if run(apt("apt-get", &apt_dir).args(["update", "-qq"])).is_err() {
            continue;
        }
        // The meta package depends on the versioned image (old ABIs leave the archive,
        // so the name is resolved, never hard-coded).
        let deps = output(apt("apt-cache", &apt_dir).args(["depends", "linux-image-amd64"]))
            .unwrap_or_default();
        if let Some(image) = deps.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-"))
                .map(str::to_string)
        }) {
            fetched = Some(image);
            break;
        }
    }
    let image = fetched.with_context(|| format!("no linux-image-amd64 found for {suite}"))?;
    let debs = apt_dir.join("debs");
    if debs.exists() {
        std::fs::remove_dir_all(&debs)?;
    }
    std::fs::create_dir_all(&debs)?;
    eprintln!("xtask: downloading {image} ({suite})");
    run(apt("apt-get", &apt_dir)
        .current_dir(&debs)
        .args(["download", "-qq", &image]))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", debs.display()))?;
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let version = std::fs::read_dir(root.join("lib/modules"))
        .with_context(|| format!("{} holds no lib/modules", deb.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("no module directory in the kernel package")?;
    if !root.join(format!("boot/vmlinuz-{version}")).is_file() {
        bail!("{} holds no boot/vmlinuz-{version}", deb.display());
    }
    run(Command::new("depmod").arg("-b").arg(&root).arg(&version))?;
    std::fs::remove_dir_all(&debs)?;
    std::fs::write(&done, format!("{image} {version}\n"))?;
    eprintln!("xtask: kernel {version} ready in {}", root.display());
    Ok(())
}
