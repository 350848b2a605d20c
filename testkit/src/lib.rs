//! The test kit of nva: what the integration tests (`tests`), the userspace tests
//! (`nva-userspace`'s unit and interop tests) and the bench share.
//!
//! - [`netns`]: network namespaces ([`Netns`]) and veth pairs ([`veth`]), named
//!   [`NAME_PREFIX`] + the process id, deleted on drop (also when a test panics) and by a
//!   later run if this process was killed first.
//! - [`daemons`]: BIRD 2 and GoBGP running in a namespace, killed on drop.
//! - [`checksum`]: Internet checksums (RFC 1071) for hand-built headers.
//! - [`rng`]: a small seeded RNG for reproducible tables and traffic.
//!
//! It depends on nothing of nva, so nva's own tests can use it.

#![warn(missing_docs)]

pub mod checksum;
pub mod daemons;
pub mod netns;
pub mod rng;

use std::sync::atomic::{AtomicU32, Ordering};

pub use daemons::{Bird, Gobgp};
pub use netns::{Netns, veth};
pub use rng::Rng;

/// Prefix of every namespace the kit creates (then `<pid>-<n>-<tag>`).
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

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when running as root; otherwise prints a skip message naming `test` and returns false.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        eprintln!("SKIP {test}: needs root (network namespaces, veth, raw sockets)");
        false
    }
}

/// True when every one of `tools` is found in `PATH`; otherwise prints which is missing.
pub fn have_tools(tools: &[&str]) -> bool {
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).exists()));
        if !found {
            eprintln!("skipped: {t} not installed");
            return false;
        }
    }
    true
}
