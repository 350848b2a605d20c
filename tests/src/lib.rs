//! Integration-test harness for `nva`: network namespaces, veth topologies, real
//! socket traffic, raw frame injection and control of the router process under test.
//!
//! Everything this crate creates (namespaces, temp files, control sockets) carries a
//! name unique to the running process and is removed on `Drop`, also when a test panics.
//! Tests need root: call [`require_root`] first and return early when it says no.

#![warn(missing_docs)]

pub mod azure;
pub mod bpffs;
pub mod checksum;
pub mod daemons;
pub mod frames;
pub mod netns;
pub mod nva;
pub mod systemd_guest;
pub mod topology;
pub mod traffic;
pub mod vm;
pub mod xdpstub;

#[cfg(test)]
mod harness_tests;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use netns::{Netns, veth};
pub use nva::{Counters, NvaProcess, nva_binary, wait_until};
pub use topology::Hub;
pub use traffic::{
    CapturedFrame, Datagram, FrameCapture, PingResult, TcpEchoServer, UdpSink,
    assert_only_flows_to, inject_frames, paced, ping, send_flows, send_flows_from,
    sequence_numbers, tcp_echo_server, tcp_roundtrip,
};

/// Prefix of every namespace / temp file name this harness creates (then `<pid>-<n>`).
pub const NAME_PREFIX: &str = "nvat";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns `<pid>-<n>`, unique to this process and call (n counts up from 0).
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory under the temp dir named `{prefix}-{pid}-{n}`, removed with everything in it
/// when dropped (also when the test panics).
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// Creates the directory.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// True when running as root; otherwise prints a skip message naming `test` and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        eprintln!("SKIP {test}: needs root (network namespaces, veth, raw sockets)");
        false
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Global lock serialising tests that build topologies (poisoning from a failed test is ignored).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
