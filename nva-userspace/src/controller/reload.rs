//! Applying a config: the separation (at start and on every reload), and a reload as
//! a pure diff of the running config against the new one ([`ReloadPlan`], computed
//! and checked before anything is touched) carried out in a safe order.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::{Context, Result};
use ipnet::IpNet;
use nva_common::{MAX_SEGMENTS, Settings};
use tracing::info;

use super::{
    Controller, Device, Iface, Machine, Output, free_slot,
    settings::{load_options, settings_of},
    statics::{self, PlannedRoute},
};
use crate::{
    bgp::{PeerConfig, PeerId},
    config::{Config, SegmentAction, XdpMode},
    dataplane::LoadOptions,
    fib::{DEFAULT_EAST_WEST, Source},
    routing::{BgpFeed, Reconfigured},
};

/// What a new config changes, against the running one and the machine.
#[derive(Debug)]
pub struct ReloadPlan {
    /// Interfaces to attach (configured now, not before).
    pub attach: Vec<Iface>,
    /// Interfaces to detach (no longer configured), after the routes left them.
    pub detach: Vec<Iface>,
    /// Interfaces that stay with another class override: (ifindex, new `PORT_*` flags).
    pub reflag: Vec<(u32, u32)>,
    /// The data plane's settings under the new config (the hash seed kept unless set).
    pub settings: Settings,
    /// The XDP mode changed: every interface is attached again in the new one.
    pub reattach: bool,
    /// BGP peers, policies or what is announced changed.
    pub bgp: bool,
    /// Changes that take effect only at the next start.
    pub deferred: Vec<&'static str>,
    /// What changed, in a line.
    pub summary: String,
    config: Config,
    planned: Vec<PlannedRoute>,
}

impl ReloadPlan {
    /// The diff of `running` (with its interfaces, settings and load options) and
    /// `config`, whose interfaces and static routes were checked against the machine.
    fn new(
        running: &Config,
        ifaces: &[Iface],
        settings: Settings,
        loaded: &LoadOptions,
        config: Config,
        (new_ifaces, planned): (Vec<Iface>, Vec<PlannedRoute>),
    ) -> Self {
        let mut deferred = Vec::new();
        if config.control != running.control {
            deferred.push("control");
        }
        if config.bgp.as_ref().map(|b| b.listen) != running.bgp.as_ref().map(|b| b.listen) {
            deferred.push("bgp.listen");
        }
        if load_options(&config) != *loaded {
            deferred.push("dataplane.ipv4_fib_* / ipv6_fib_* / pin_path");
        }
        let bgp = config.bgp != running.bgp
            || config.policies != running.policies
            || config.prefix_lists != running.prefix_lists
            || (config.routes != running.routes
                && config.bgp.as_ref().is_some_and(|b| b.announce_static));
        let attach = new_ifaces
            .iter()
            .filter(|n| !ifaces.iter().any(|f| f.ifindex == n.ifindex))
            .cloned()
            .collect();
        let detach = ifaces
            .iter()
            .filter(|f| !new_ifaces.iter().any(|n| n.ifindex == f.ifindex))
            .cloned()
            .collect();
        let reflag = new_ifaces
            .iter()
            .filter(|n| {
                ifaces
                    .iter()
                    .any(|f| f.ifindex == n.ifindex && f.flags != n.flags)
            })
            .map(|n| (n.ifindex, n.flags))
            .collect();
        let settings = Settings {
            hash_seed: config.dataplane.hash_seed.unwrap_or(settings.hash_seed),
            flags: settings_of(&config).flags,
        };
        ReloadPlan {
            attach,
            detach,
            reflag,
            settings,
            reattach: config.dataplane.xdp_mode != running.dataplane.xdp_mode,
            bgp,
            deferred,
            summary: summary(running, &config),
            config,
            planned,
        }
    }
}

/// The segments as the data plane has them (what the last separation wrote, which a
/// failed reload may have left different from the running config's).
#[derive(Debug, Default)]
pub(super) struct AppliedSegments {
    /// The prefixes given a segment.
    prefixes: Vec<IpNet>,
    /// Segment ids by name.
    ids: HashMap<String, u32>,
    /// Denied pairs by name.
    denies: Vec<(String, String)>,
}

/// What a carried-out reload asks of the daemon.
pub struct Reloaded {
    /// Sessions to stop, then sessions to start.
    pub remove: Vec<PeerId>,
    pub add: Vec<PeerConfig>,
    /// After the sessions changed: the announcements. (The daemon turns ICMP
    /// redirects off on every interface after any reload, applied or not.)
    pub output: Output,
    pub summary: String,
}

impl<D: Device> Controller<D> {
    /// Checks a new config against the machine and diffs it with the running one;
    /// changes nothing.
    pub fn plan_reload(&self, config: Config, machine: &Machine) -> Result<ReloadPlan> {
        let planned = statics::plan(&config, machine)?;
        Ok(ReloadPlan::new(
            &self.config,
            &self.ifaces,
            self.settings,
            self.fib.dataplane().options(),
            config,
            planned,
        ))
    }

    /// Carries out a reload: new interfaces first (routes may use them), settings,
    /// separation, static routes, probes, removed interfaces last, then BGP. Only
    /// differences touch the data plane; unchanged routes keep forwarding throughout.
    /// On error the running state stays as it was as far as it got, the old config
    /// stays recorded (so the same file sent again is applied again), and the error
    /// names what failed. The kernel's share comes with [`Controller::settle`].
    pub fn reload(&mut self, plan: ReloadPlan) -> Result<Reloaded> {
        let old_config = self.config.clone();
        let old_planned = self.planned.clone();
        let result = self.apply_plan(plan);
        self.refresh_kernel_links();
        if result.is_err() {
            self.config = old_config;
            self.planned = old_planned;
        }
        result
    }

    /// After a reload, applied or not: static and BGP routes follow what their next
    /// hops resolve through now.
    pub fn settle(&mut self) -> Output {
        let commands = self.follow_resolution();
        self.output(commands)
    }

    fn apply_plan(&mut self, plan: ReloadPlan) -> Result<Reloaded> {
        for what in &plan.deferred {
            tracing::warn!("{what} changes take effect at the next start");
        }
        let ReloadPlan {
            attach,
            detach,
            reflag,
            settings,
            reattach,
            bgp,
            summary,
            config,
            planned,
            ..
        } = plan;
        let generic = config.dataplane.xdp_mode == XdpMode::Generic;
        let mut output = Output::default();
        for mut iface in attach {
            iface.slot = free_slot(&self.ifaces)?;
            let dp = self.fib.dataplane_mut();
            dp.add_port(iface.ifindex, iface.slot, iface.flags, iface.port.mac)?;
            dp.attach(iface.ifindex, &iface.name, generic)?;
            info!(interface = %iface.name, "XDP attached (reload)");
            self.ifaces.push(iface);
        }
        self.fib.dataplane_mut().set_settings(settings)?;
        self.settings = settings;
        for (ifindex, flags) in reflag {
            if let Some(cur) = self.ifaces.iter_mut().find(|f| f.ifindex == ifindex) {
                cur.flags = flags;
                let (slot, mac) = (cur.slot, cur.port.mac);
                self.fib
                    .dataplane_mut()
                    .add_port(ifindex, slot, flags, mac)?;
            }
        }
        self.fib
            .set_keep_dead_routes(config.health.keep_dead_routes);
        self.apply_separation(&config)?;
        // Resolution reads the new config's settings and static routes.
        self.config = config.clone();
        self.planned = planned.clone();
        self.apply_static_routes(&planned)
            .context("static routes")?;
        let specs = self.wanted_probes();
        self.prober.set(specs);
        // Removed interfaces leave the controller first: BGP's routes re-resolve
        // without them and neighbours' host routes over them go, so no route uses
        // them when the data plane lets them go.
        if !detach.is_empty() {
            self.ifaces
                .retain(|f| !detach.iter().any(|d| d.ifindex == f.ifindex));
            output.bgp.extend(self.follow_resolution());
            let hosts: Vec<IpAddr> = self
                .known_macs
                .keys()
                .filter(|(ifindex, _)| detach.iter().any(|d| d.ifindex == *ifindex))
                .map(|(_, ip)| *ip)
                .collect();
            for ip in hosts {
                self.fib.remove_route(IpNet::from(ip), Source::Neighbour)?;
            }
        }
        for iface in detach {
            let dp = self.fib.dataplane_mut();
            dp.detach(iface.ifindex, &iface.name)?;
            dp.remove_port(iface.ifindex)?;
            info!(interface = %iface.name, "XDP detached (reload)");
        }
        if reattach {
            for iface in &self.ifaces {
                let dp = self.fib.dataplane_mut();
                dp.detach(iface.ifindex, &iface.name)?;
                dp.attach(iface.ifindex, &iface.name, generic)?;
            }
            info!(mode = ?config.dataplane.xdp_mode, "XDP re-attached in the new mode");
        }
        let reconfigured = if bgp {
            self.reconfigure_bgp(&config).context("BGP")?
        } else {
            None
        };
        self.config = config;
        let (remove, add) = match reconfigured {
            Some(r) => {
                output.bgp = r.commands;
                (r.remove, r.add)
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Reloaded {
            remove,
            add,
            output,
            summary,
        })
    }

    /// Programs the east-west prefix set and the segments with their policy.
    pub(super) fn apply_separation(&mut self, config: &Config) -> Result<()> {
        let mut east_west: Vec<IpNet> = Vec::new();
        if config.separation.default_east_west {
            east_west.extend(
                DEFAULT_EAST_WEST
                    .iter()
                    .map(|p| p.parse::<IpNet>().expect("valid")),
            );
        }
        east_west.extend(config.separation.east_west.iter().copied());
        self.fib.set_east_west(&east_west)?;

        // A reload never opens a window in which a denied pair is allowed. Segment ids
        // are positions in the config, so they move when segments are added or removed
        // before others, and prefixes change their ids one by one: first every pair a
        // denied pair of names (old or new) can be seen as during the change is
        // denied, then the prefixes take their new ids, then each cell gets its final
        // value (allowed cells are opened last).
        let new_ids: HashMap<&str, u32> = config
            .segments
            .iter()
            .map(|s| (s.name.as_str(), s.id))
            .collect();
        let new_denies: Vec<(String, String)> = config
            .segment_rules
            .iter()
            .filter(|r| r.action == SegmentAction::Deny)
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect();
        let applied = &self.segments;
        let ids_of = |name: &str| -> Vec<u32> {
            let mut ids: Vec<u32> = [applied.ids.get(name), new_ids.get(name)]
                .into_iter()
                .flatten()
                .copied()
                .collect();
            ids.dedup();
            ids
        };
        let mut during: HashSet<(u32, u32)> = HashSet::new();
        for (from, to) in applied.denies.iter().chain(&new_denies) {
            for f in ids_of(from) {
                for t in ids_of(to) {
                    during.insert((f, t));
                }
            }
        }
        let denied: HashSet<(u32, u32)> = config
            .segment_rules
            .iter()
            .filter(|r| r.action == SegmentAction::Deny)
            .map(|r| r.ids)
            .collect();
        let dp = self.fib.dataplane_mut();
        for &(from, to) in &during {
            dp.set_segment_policy(from, to, true)?;
        }
        let mut programmed = Vec::new();
        for seg in &config.segments {
            for p in &seg.prefixes {
                dp.set_segment_prefix(p, Some(seg.id))?;
                programmed.push(*p);
            }
        }
        for p in &self.segments.prefixes {
            if !programmed.contains(p) {
                dp.set_segment_prefix(p, None)?;
            }
        }
        for from in 0..MAX_SEGMENTS {
            for to in 0..MAX_SEGMENTS {
                dp.set_segment_policy(from, to, denied.contains(&(from, to)))?;
            }
        }
        self.segments = AppliedSegments {
            prefixes: programmed,
            ids: new_ids
                .into_iter()
                .map(|(n, id)| (n.to_string(), id))
                .collect(),
            denies: new_denies,
        };
        Ok(())
    }

    /// BGP peers, policies or announcements changed: the feed adapts, and the daemon
    /// starts/stops sessions as returned.
    fn reconfigure_bgp(&mut self, config: &Config) -> Result<Option<Reconfigured>> {
        let out = match self.bgp.as_mut().map(|feed| feed.reconfigure(config)) {
            Some(result) => {
                let out = result?;
                self.install_bgp(&out.changes)?;
                Some(out)
            }
            None => BgpFeed::new(config).map(|mut feed| {
                let add = feed.session_configs();
                let commands = feed.export_all();
                self.bgp = Some(feed);
                Reconfigured {
                    add,
                    remove: Vec::new(),
                    commands,
                    changes: Vec::new(),
                }
            }),
        };
        if config.bgp.is_none() {
            self.bgp = None;
        }
        Ok(out)
    }
}

/// What a reload changes, in a line.
fn summary(old: &Config, new: &Config) -> String {
    fn diff<T: PartialEq>(old: &[T], new: &[T]) -> (usize, usize) {
        (
            new.iter().filter(|x| !old.contains(x)).count(),
            old.iter().filter(|x| !new.contains(x)).count(),
        )
    }
    let mut parts = Vec::new();
    let (added, removed) = diff(&old.routes, &new.routes);
    if added + removed > 0 {
        parts.push(format!("static routes +{added} -{removed}"));
    }
    let (added, removed) = diff(&old.interfaces, &new.interfaces);
    if added + removed > 0 {
        parts.push(format!("interfaces +{added} -{removed}"));
    }
    let peers = |c: &Config| c.bgp.as_ref().map(|b| b.peers.clone()).unwrap_or_default();
    let (added, removed) = diff(&peers(old), &peers(new));
    if added + removed > 0 {
        parts.push(format!("BGP peers +{added} -{removed}"));
    }
    if old.policies != new.policies || old.prefix_lists != new.prefix_lists {
        parts.push("policies".into());
    }
    if old.segments != new.segments || old.segment_rules != new.segment_rules {
        parts.push("segments".into());
    }
    if old.separation != new.separation {
        parts.push("separation".into());
    }
    if old.health != new.health {
        parts.push("health".into());
    }
    if parts.is_empty() && old != new {
        parts.push("settings".into());
    }
    if parts.is_empty() {
        "reloaded: nothing changed".into()
    } else {
        format!("reloaded: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{AddrInfo, LinkInfo};

    /// eth0..eth2 (ifindex 1..3), each with 10.0.N.1/24.
    fn machine() -> Machine {
        Machine {
            links: (0..3)
                .map(|i| LinkInfo {
                    name: format!("eth{i}"),
                    ifindex: i + 1,
                    mac: [2, 0, 0, 0, 0, i as u8],
                    mtu: 1500,
                    up: true,
                })
                .collect(),
            addrs: (0..3)
                .map(|i| AddrInfo {
                    ifindex: i + 1,
                    addr: format!("10.0.{i}.1").parse().unwrap(),
                    prefix_len: 24,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    const BASE: &str = r#"
        [[interfaces]]
        name = "eth0"
        [[interfaces]]
        name = "eth1"
        [dataplane]
        hash_seed = 7
        [bgp]
        local_as = 65010
        router_id = "10.0.0.1"
        announce_static = true
        [[bgp.peers]]
        name = "rs"
        address = "10.0.0.4"
        remote_as = 65515
        [[routes]]
        prefix = "10.100.0.0/16"
        nexthops = [{ via = "10.0.0.2" }]
    "#;

    /// The plan from `old` (running, its interfaces as planned) to `new`.
    fn diff(old: &str, new: &str) -> ReloadPlan {
        let (old, new) = (config(old), config(new));
        let m = machine();
        let (ifaces, _) = statics::plan(&old, &m).unwrap();
        let settings = settings_of(&old);
        let planned = statics::plan(&new, &m).unwrap();
        ReloadPlan::new(&old, &ifaces, settings, &load_options(&old), new, planned)
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let p = diff(BASE, BASE);
        assert!(p.attach.is_empty() && p.detach.is_empty() && p.reflag.is_empty());
        assert!(!p.bgp && !p.reattach && p.deferred.is_empty());
        assert_eq!(p.settings.hash_seed, 7);
        assert_eq!(p.summary, "reloaded: nothing changed");
    }

    #[test]
    fn interfaces_added_removed_and_reclassed_are_told_apart() {
        let new = BASE
            .replace(
                "name = \"eth0\"",
                "name = \"eth0\"\n        class = \"north-south\"",
            )
            .replace("name = \"eth1\"", "name = \"eth2\"");
        let p = diff(BASE, &new);
        let names = |v: &[Iface]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p.attach), ["eth2"]);
        assert_eq!(names(&p.detach), ["eth1"]);
        assert_eq!(p.reflag, [(1, nva_common::PORT_FORCE_NORTH_SOUTH)]);
        assert_eq!(p.summary, "reloaded: interfaces +2 -2");
    }

    #[test]
    fn bgp_follows_peers_policies_and_announced_statics() {
        let route = "prefix = \"10.100.0.0/16\"";
        let moved = BASE.replace(route, "prefix = \"10.101.0.0/16\"");
        let p = diff(BASE, &moved);
        assert!(p.bgp, "announce_static: a static route is an announcement");
        assert_eq!(p.summary, "reloaded: static routes +1 -1");
        let quiet = |c: &str| c.replace("announce_static = true", "announce_static = false");
        assert!(!diff(&quiet(BASE), &quiet(&moved)).bgp);
        let peer = BASE.replace("remote_as = 65515", "remote_as = 65520");
        let p = diff(BASE, &peer);
        assert!(p.bgp);
        assert_eq!(p.summary, "reloaded: BGP peers +1 -1");
    }

    #[test]
    fn what_waits_for_a_restart_is_named_and_the_seed_is_kept() {
        let new = BASE.replace(
            "hash_seed = 7",
            "ipv4_fib_east_west = \"dxr\"\n        xdp_mode = \"generic\"",
        ) + "\n        [control]\n        socket = \"/run/other.sock\"\n";
        let p = diff(BASE, &new);
        assert_eq!(
            p.deferred,
            ["control", "dataplane.ipv4_fib_* / ipv6_fib_* / pin_path"]
        );
        assert!(p.reattach, "xdp_mode is applied at once");
        assert_eq!(p.settings.hash_seed, 7, "the running seed stays unless set");
        assert_eq!(p.summary, "reloaded: settings");
    }
}
