//! What the figures were measured on.
use std::process::Command;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub pktgen: bool,
    pub xdp_forward: bool,
    /// Whether BPF_PROG_TEST_RUN injects live frames here (None: not probed).
    pub live_frames: Option<bool>,
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0)
}

pub fn probe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let xdp_forward = Command::new("sh")
        .args(["-c", "command -v xdp-forward"])
        .output()
        .is_ok_and(|o| o.status.success());
    Machine {
        cpu,
        cores,
        kernel,
        pktgen: std::path::Path::new("/proc/net/pktgen").exists(),
        xdp_forward,
        live_frames: None,
    }
}
