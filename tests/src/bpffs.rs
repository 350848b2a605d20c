//! A bpffs instance for tests that pin BPF objects.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, ensure};

use crate::unique_suffix;

/// A bpffs mounted under the temp directory (outside /sys, which `ip netns exec`
/// remounts, so processes started in test namespaces see it); unmounted on drop.
pub struct BpfFs(pub PathBuf);

impl BpfFs {
    /// Mounts a fresh bpffs at a unique path.
    pub fn mount() -> Result<BpfFs> {
        let dir = std::env::temp_dir().join(format!("nva-bpffs-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()?
            .success();
        ensure!(ok, "mounting bpffs at {}", dir.display());
        Ok(BpfFs(dir))
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
