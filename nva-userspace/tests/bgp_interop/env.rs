//! What the interop tests share: the skip rule, a listening speaker, link-local waits.
//! Namespaces, veths and the daemons come from the test kit.

use std::time::{Duration, Instant};

use nva::bgp::{Event, Speaker};
use nva_testkit::{Netns, veth};

/// True (and a message) when the test cannot run here: not root, or a tool missing.
pub fn skip_unless(tools: &[&str]) -> bool {
    if !nva_testkit::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return true;
    }
    !nva_testkit::have_tools(tools)
}

/// Logs with `RUST_LOG=debug cargo test ... -- --nocapture`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A speaker listening on `listen` (inside the current namespace), with tracing set up
/// and its event queue (`queue` events deep).
pub fn listening_speaker(
    listen: &str,
    queue: usize,
) -> (Speaker, tokio::sync::mpsc::Receiver<Event>) {
    init_tracing();
    let (tx, rx) = tokio::sync::mpsc::channel(queue);
    let mut speaker = Speaker::new(tx);
    speaker
        .listen(listen.parse().expect("listen address"))
        .expect("listen");
    (speaker, rx)
}

/// Namespaces `ours` (veth0) and `theirs` (veth1) joined by a veth, with these addresses
/// (IPv6 ones without duplicate address detection).
pub fn linked(ours_addrs: &[&str], theirs_addrs: &[&str]) -> (Netns, Netns) {
    let ours = Netns::new("ours").unwrap();
    let theirs = Netns::new("theirs").unwrap();
    veth(&ours, "veth0", &theirs, "veth1").unwrap();
    for (ns, dev, addrs) in [
        (&ours, "veth0", ours_addrs),
        (&theirs, "veth1", theirs_addrs),
    ] {
        for a in addrs {
            let nodad = if a.contains(':') { " nodad" } else { "" };
            ns.ip(&format!("addr add {a} dev {dev}{nodad}")).unwrap();
        }
    }
    (ours, theirs)
}

/// Waits until `dev` in `ns` has a usable (not tentative) IPv6 link-local address.
pub fn wait_link_local(ns: &Netns, dev: &str) {
    let t = Instant::now();
    loop {
        let out = ns
            .ip_args(&["-6", "addr", "show", "dev", dev, "scope", "link"])
            .unwrap();
        if out.contains("fe80") && !out.contains("tentative") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no link-local address on {dev}: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
