//! The configuration file (TOML).
//!
//! Parsing rejects unknown fields; validation checks what serde cannot (prefixes are
//! canonical, next hops match the prefix family, names are unique) and names the
//! offending field as a path, e.g. `routes[2].nexthops[0].via`. Nothing is attached
//! or written until the whole file is valid.
use std::{collections::HashSet, net::IpAddr, path::Path};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: Dataplane,
    #[serde(default)]
    pub control: Control,
    /// Interfaces the XDP program is attached to and forwards between.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub metrics: Metrics,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. "127.0.0.1:9450".
    /// Off when absent.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// `native` (driver mode, the default) or `generic` (skb mode, an explicit fallback
    /// for drivers without XDP support; much slower).
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// What to do with packets that have no route: `pass` to the kernel (default) or `drop`.
    #[serde(default)]
    pub no_route: NoRoute,
    /// Give both directions of a flow the same ECMP hash (for stateful next hops).
    #[serde(default)]
    pub symmetric_hash: bool,
    /// ECMP hash seed; random per start when absent.
    #[serde(default)]
    pub hash_seed: Option<u32>,
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            xdp_mode: XdpMode::Native,
            no_route: NoRoute::Pass,
            symmetric_hash: false,
            hash_seed: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NoRoute {
    #[default]
    Pass,
    Drop,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Unix socket the CLI talks to.
    #[serde(default = "default_socket")]
    pub socket: String,
}

pub const DEFAULT_SOCKET: &str = "/run/nva/nva.sock";

fn default_socket() -> String {
    DEFAULT_SOCKET.to_string()
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: default_socket(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub prefix: IpNet,
    /// `forward` (default, needs next hops), `blackhole` (drop) or `kernel` (pass).
    #[serde(default)]
    pub action: RouteAction,
    /// ECMP next hops; traffic is spread over all of them by flow hash.
    #[serde(default)]
    pub nexthops: Vec<NextHopSpec>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    #[default]
    Forward,
    Blackhole,
    Kernel,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct NextHopSpec {
    /// Next-hop address; must be on a connected subnet of one of the interfaces.
    pub via: IpAddr,
    /// Egress interface; found from the connected subnets when absent.
    #[serde(default)]
    pub dev: Option<String>,
    /// 802.1Q VLAN id to tag frames to this next hop with (1-4094); untagged when absent.
    #[serde(default)]
    pub vlan: Option<u16>,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if self.interfaces.is_empty() {
            bail!("interfaces: at least one interface is needed");
        }
        let mut names = HashSet::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            if iface.name.is_empty() || iface.name.len() > 15 {
                bail!(
                    "interfaces[{i}].name: {:?} is not a valid interface name",
                    iface.name
                );
            }
            if !names.insert(iface.name.as_str()) {
                bail!("interfaces[{i}].name: {:?} is listed twice", iface.name);
            }
        }
        if self.control.socket.is_empty() {
            bail!("control.socket: must not be empty");
        }
        let mut prefixes = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            if route.prefix.trunc() != route.prefix {
                bail!(
                    "{field}.prefix: {} has host bits set (did you mean {}?)",
                    route.prefix,
                    route.prefix.trunc()
                );
            }
            if !prefixes.insert(route.prefix) {
                bail!("{field}.prefix: {} is configured twice", route.prefix);
            }
            match route.action {
                RouteAction::Forward if route.nexthops.is_empty() => {
                    bail!("{field}.nexthops: a forward route needs at least one next hop")
                }
                RouteAction::Blackhole | RouteAction::Kernel if !route.nexthops.is_empty() => {
                    bail!(
                        "{field}.nexthops: a {:?} route takes no next hops",
                        route.action
                    )
                }
                _ => {}
            }
            let mut seen = HashSet::new();
            for (j, nh) in route.nexthops.iter().enumerate() {
                let field = format!("{field}.nexthops[{j}]");
                if nh.via.is_ipv4() != route.prefix.addr().is_ipv4() {
                    bail!(
                        "{field}.via: {} is not of the same address family as the prefix {}",
                        nh.via,
                        route.prefix
                    );
                }
                if nh.via.is_unspecified() || nh.via.is_multicast() || nh.via.is_loopback() {
                    bail!("{field}.via: {} cannot be a next hop", nh.via);
                }
                if let Some(dev) = &nh.dev
                    && !names.contains(dev.as_str())
                {
                    bail!("{field}.dev: {dev:?} is not one of the configured interfaces");
                }
                if let Some(vlan) = nh.vlan
                    && !(1..=4094).contains(&vlan)
                {
                    bail!("{field}.vlan: {vlan} is not a VLAN id (1-4094)");
                }
                if !seen.insert(nh) {
                    bail!("{field}: next hop {} is listed twice", nh.via);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [dataplane]
        no_route = "drop"
        symmetric_hash = true

        [[interfaces]]
        name = "eth0"
        [[interfaces]]
        name = "eth1"

        [[routes]]
        prefix = "10.100.0.0/16"
        nexthops = [{ via = "10.0.1.2" }, { via = "10.0.2.2", dev = "eth1" }]

        [[routes]]
        prefix = "fd00:100::/64"
        nexthops = [{ via = "fd00:1::2", vlan = 10 }]

        [[routes]]
        prefix = "192.0.2.0/24"
        action = "blackhole"
    "#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.no_route, NoRoute::Drop);
        assert!(c.dataplane.symmetric_hash);
        assert_eq!(c.dataplane.xdp_mode, XdpMode::Native);
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.routes[0].nexthops.len(), 2);
        assert_eq!(c.routes[1].nexthops[0].vlan, Some(10));
        assert_eq!(c.routes[2].action, RouteAction::Blackhole);
        assert_eq!(c.control.socket, DEFAULT_SOCKET);
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("10.100.0.0/16", "10.100.0.1/16"),
                "routes[0].prefix",
            ),
            (
                GOOD.replace("10.0.1.2", "fd00::1"),
                "routes[0].nexthops[0].via",
            ),
            (
                GOOD.replace("dev = \"eth1\"", "dev = \"eth9\""),
                "routes[0].nexthops[1].dev",
            ),
            (
                GOOD.replace("vlan = 10", "vlan = 4095"),
                "routes[1].nexthops[0].vlan",
            ),
            (
                GOOD.replace("name = \"eth1\"", "name = \"eth0\""),
                "interfaces[1].name",
            ),
            (
                GOOD.replace(
                    "action = \"blackhole\"",
                    "action = \"blackhole\"\nnexthops = [{ via = \"10.0.1.2\" }]",
                ),
                "routes[2].nexthops",
            ),
            (
                GOOD.replace("no_route = \"drop\"", "no_route = \"maybe\""),
                "no_route",
            ),
            (
                GOOD.replace("symmetric_hash", "symetric_hash"),
                "symetric_hash",
            ),
            (
                GOOD.replace("prefix = \"192.0.2.0/24\"", "prefix = \"192.0.2.0/33\""),
                "prefix",
            ),
        ];
        for (text, field) in cases {
            let err = error_of(&text);
            assert!(err.contains(field), "error {err:?} should name {field}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = Config::parse(include_str!("../../dist/nva.toml")).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert!(c.metrics.listen.is_some());
    }

    #[test]
    fn needs_an_interface() {
        assert!(error_of("").contains("interfaces"));
    }
}
