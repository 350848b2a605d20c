//! Health: which probes the config asks for, nva's own health (the self check) and
//! what BGP announces while it fails, and the packet rates.
use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{Controller, Device};
use crate::{
    bgp::{Command as BgpCommand, PeerId},
    config::{ProbeSetting, XdpMode},
    health::{ProbeKind, ProbeSpec},
};

impl<D: Device> Controller<D> {
    /// The probes the configuration asks for: every next hop of the static routes with
    /// its own `probe` or `health.probe`, plus `health.track` targets.
    pub(super) fn wanted_probes(&self) -> Vec<ProbeSpec> {
        let h = &self.config.health;
        let default = h.probe;
        let mut specs = Vec::new();
        let mut add = |target: IpAddr, dev: Option<&str>, setting: ProbeSetting| {
            let kind = match setting {
                ProbeSetting::None => return,
                ProbeSetting::Icmp => ProbeKind::Icmp,
                ProbeSetting::Tcp(port) => ProbeKind::Tcp { port },
                ProbeSetting::UdpEcho(port) => ProbeKind::UdpEcho { port },
            };
            let spec = ProbeSpec {
                target,
                interface: dev.map(str::to_string),
                kind,
                interval: Duration::from_millis(h.interval_ms),
                multiplier: h.multiplier,
                hold_down: Duration::from_millis(h.hold_down_ms),
            };
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        };
        for route in &self.config.routes {
            for nh in route.nexthops.iter().chain(&route.backup_nexthops) {
                let setting = nh.probe.unwrap_or(default);
                let dev = nh.dev.as_deref().or_else(|| {
                    self.fib
                        .nexthop_views()
                        .into_iter()
                        .find(|v| v.via == nh.via)
                        .and_then(|v| self.ifaces.iter().find(|f| f.ifindex == v.ifindex))
                        .map(|f| f.name.as_str())
                });
                add(nh.via, dev, setting);
            }
        }
        for t in &h.track {
            add(t.target, None, t.probe);
        }
        specs
    }

    /// Withdraws (or prepends) the BGP announcements while the self check fails, and
    /// announces normally again after the hold-down of good health.
    pub(super) fn follow_self_health(&mut self) -> Vec<(PeerId, BgpCommand)> {
        let problems = self.self_check();
        let now = Instant::now();
        if !problems.is_empty() {
            self.healthy_since = None;
        } else if self.healthy_since.is_none() {
            self.healthy_since = Some(now);
        }
        let when_sick = self.config.health.when_sick;
        let hold_down = Duration::from_millis(self.config.health.hold_down_ms);
        let Some(feed) = self.bgp.as_mut() else {
            return Vec::new();
        };
        match (feed.degraded(), problems.is_empty()) {
            (None, false) => {
                warn!(
                    ?problems,
                    ?when_sick,
                    "nva is unhealthy: degrading its announcements"
                );
                feed.set_degraded(Some(when_sick))
            }
            (Some(_), true)
                if self
                    .healthy_since
                    .is_some_and(|t| now.duration_since(t) >= hold_down) =>
            {
                info!("nva is healthy again: announcing normally");
                feed.set_degraded(None)
            }
            _ => Vec::new(),
        }
    }

    /// Asks the kernel which interfaces run nva's program (a blocking rtnetlink dump:
    /// once a tick and after attaching or detaching, not per question).
    pub(super) fn refresh_kernel_links(&mut self) {
        self.kernel_links = self.fib.dataplane().kernel_links();
    }

    /// Self health: XDP attached to every interface, maps answering, every interface
    /// up, every tracked target answering. Returns the problems (empty = healthy).
    pub fn self_check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let dp = self.fib.dataplane();
        for f in &self.ifaces {
            if !dp.is_attached(f.ifindex) {
                problems.push(format!("XDP not attached to {}", f.name));
            }
            if !f.port.up {
                problems.push(format!("interface {} is down", f.name));
            }
        }
        if dp.counters(0).is_err() {
            problems.push("data-plane maps do not answer".into());
        }
        if let Some(links) = self.kernel_links
            && links < self.ifaces.len()
            && self.config.dataplane.xdp_mode == XdpMode::Native
        {
            problems.push(format!(
                "the kernel has {links} XDP links of nva's program for {} interfaces",
                self.ifaces.len()
            ));
        }
        let tracked: Vec<IpAddr> = self.config.health.track.iter().map(|t| t.target).collect();
        for st in self.prober.status() {
            if tracked.contains(&st.spec.target) && !st.healthy {
                problems.push(format!("tracked target {} does not answer", st.spec.target));
            }
        }
        problems
    }

    /// Samples the counters and updates `rates` (called once a second).
    pub(super) fn sample_rates(&mut self) {
        let now = Instant::now();
        let mut sample = HashMap::new();
        for iface in &self.ifaces {
            if let Ok(cells) = self.fib.dataplane().counters(iface.slot) {
                for (reason, c) in cells.iter().enumerate() {
                    sample.insert((iface.slot, reason as u32), c.packets);
                }
            }
        }
        if let Some((then, prev)) = &self.last_sample {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            self.rates = sample
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        v.saturating_sub(*prev.get(k).unwrap_or(v)) as f64 / secs,
                    )
                })
                .collect();
        }
        self.last_sample = Some((now, sample));
    }
}
