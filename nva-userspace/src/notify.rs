//! systemd's service notifications (sd_notify(3)) without libsystemd, for `Type=notify`:
//! READY once the FIB is programmed and the control socket, metrics and BGP are up,
//! WATCHDOG=1 from the main loop when the unit sets `WatchdogSec=`, STOPPING at
//! shutdown. Nothing happens when `NOTIFY_SOCKET` is unset (not started by systemd).
use std::{
    os::unix::{ffi::OsStrExt, net::UnixDatagram},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

/// Sends one notification (newline-separated `KEY=VALUE` lines).
fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        // A name starting with '@' is in the abstract namespace.
        match path.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr)
            }
            None => sock.send_to(message.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        // Once: the watchdog would repeat it every second.
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(socket = ?path, "systemd notification failed: {e}");
        }
    }
}

/// The service is up: the FIB is programmed and the control socket answers.
pub fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// The service is stopping (withdrawing, draining, detaching).
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

/// Whether systemd expects watchdog keep-alives: `WATCHDOG_USEC` is set and
/// `WATCHDOG_PID`, when set, is this process.
fn watchdog_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0);
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        usec && ours
    })
}

/// A keep-alive from the main loop (called every second; systemd's `WatchdogSec=` must
/// be longer than that, the shipped unit uses 60 s).
pub fn watchdog() {
    if watchdog_enabled() {
        send("WATCHDOG=1");
    }
}
