//! Integration-test harness for `nva`: network namespaces, veth topologies, real
//! socket traffic, raw frame injection and control of the router process under test.
//!
//! Everything this crate creates (namespaces, temp files, control sockets) carries a
//! name unique to the running process and is removed on `Drop`, also when a test panics.
//! Tests need root: call [`require_root`] first and return early when it says no.

#![warn(missing_docs)]

pub mod azure;
pub mod bpffs;
pub mod frames;
pub mod nva;
pub mod systemd_guest;
pub mod topology;
pub mod traffic;
pub mod vm;
pub mod xdpstub;

#[cfg(test)]
mod harness_tests;

use std::sync::{Mutex, MutexGuard};

// Namespaces, veths, BIRD and GoBGP, checksums: the test kit shared with nva's own tests
// and the bench.
pub use nva_testkit::{NAME_PREFIX, checksum, daemons, netns, require_root, unique_suffix};

pub use netns::{Netns, veth};
pub use nva::{Counters, NvaProcess, nva_binary, nva_deb, wait_until};
pub use topology::Hub;
pub use traffic::{
    CapturedFrame, Datagram, FrameCapture, PingResult, TcpEchoServer, UdpSink,
    assert_only_flows_to, inject_frames, paced, ping, send_flows, send_flows_from,
    sequence_numbers, tcp_echo_server, tcp_roundtrip,
};

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

static SERIAL: Mutex<()> = Mutex::new(());

/// Global lock serialising tests that build topologies (poisoning from a failed test is ignored).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
