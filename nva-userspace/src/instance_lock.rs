//! One nva per control socket and per pin path: a second `nva run` refuses before it
//! touches anything.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// An exclusive lock held for the daemon's lifetime (released by the kernel when the
/// process ends, however it ends). A clean exit also removes the file, while still
/// holding the lock, so stopped instances leave nothing behind.
pub struct InstanceLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// Takes the lock at `path` or says who holds it: a second `nva run` on the same control
/// socket or pin path must refuse before it touches anything (kernel routes, XDP, maps).
fn lock_instance(path: &Path, what: &str) -> Result<InstanceLock> {
    use std::{io::Write, os::fd::AsRawFd};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        bail!(
            "another nva is running with this {what} (pid {}; lock {}): refusing to start",
            holder.trim(),
            path.display()
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(InstanceLock {
        path: path.to_path_buf(),
        _file: file,
    })
}

/// The instance locks: one per control socket, one per pin path.
pub fn lock_instances(config: &Config, socket: &Path) -> Result<Vec<InstanceLock>> {
    let mut locks = vec![lock_instance(
        &PathBuf::from(format!("{}.lock", socket.display())),
        "control socket",
    )?];
    if let Some(pin) = &config.dataplane.pin_path {
        let name: String = pin
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        locks.push(lock_instance(
            &PathBuf::from(format!("/run/nva/pin{name}.lock")),
            "pin path",
        )?);
    }
    Ok(locks)
}
