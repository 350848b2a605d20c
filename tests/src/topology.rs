//! The standard test topology: one client, the router (`nva`) and N servers, each in its
//! own namespace, linked by veth pairs.
//!
//! ```text
//!  client eth0 ---- c0  nva  s1 ---- eth0 srv1
//!  10.0.0.2/24      10.0.0.1  10.0.1.1 ---- 10.0.1.2/24   (lo: 10.100.0.1, 10.200.1.1)
//!  fd00::2/64       fd00::1   fd00:1::1 --- fd00:1::2/64  (lo: fd00:100::1, fd00:200:1::1)
//!                             sK ---- eth0 srvK (10.0.K.0/24, fd00:K::/64, 10.200.K.1 ...)
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, ensure};

use crate::netns::{Netns, veth};

/// Client address on the client<->nva link.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// nva's address on the client<->nva link (client's IPv4 gateway).
pub const NVA_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Client IPv6 address on the client<->nva link.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// nva's IPv6 address on the client<->nva link (client's IPv6 gateway).
pub const NVA_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// Anycast "service" IPv4 address owned by every server (on lo), for ECMP tests.
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
/// Anycast "service" IPv6 address owned by every server (on lo), for ECMP tests.
pub const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
/// Largest supported server count (keeps `fd00:K::` clear of `fd00:100::`).
pub const MAX_SERVERS: usize = 99;

/// Hex group spelled with K's decimal digits, so `fd00:K::` reads as written in the docs.
fn group(k: usize) -> u16 {
    u16::from_str_radix(&k.to_string(), 16).expect("k <= 99")
}

/// Server K's address on the nva<->srvK link: 10.0.K.2.
pub fn server_v4(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, k as u8, 2)
}
/// nva's address on the nva<->srvK link: 10.0.K.1 (srvK's IPv4 gateway).
pub fn nva_server_v4(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, k as u8, 1)
}
/// Server K's IPv6 address on the nva<->srvK link: fd00:K::2.
pub fn server_v6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, group(k), 0, 0, 0, 0, 0, 2)
}
/// nva's IPv6 address on the nva<->srvK link: fd00:K::1 (srvK's IPv6 gateway).
pub fn nva_server_v6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, group(k), 0, 0, 0, 0, 0, 1)
}
/// Server K's unique IPv4 address on its lo: 10.200.K.1.
pub fn server_unique_v4(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, k as u8, 1)
}
/// Server K's unique IPv6 address on its lo: fd00:200:K::1.
pub fn server_unique_v6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x200, group(k), 0, 0, 0, 0, 1)
}
/// nva's interface name towards server K: `sK`.
pub fn server_port(k: usize) -> String {
    format!("s{k}")
}

/// Interface name of the client-facing port inside the nva namespace.
pub const NVA_CLIENT_PORT: &str = "c0";
/// Interface name of the single link inside client and server namespaces.
pub const HOST_IF: &str = "eth0";

/// client + nva + N servers; every namespace is deleted when the hub is dropped.
#[derive(Debug)]
pub struct Hub {
    /// The traffic source; default routes via nva.
    pub client: Netns,
    /// The router's namespace (kernel forwarding enabled; run nva here).
    pub nva: Netns,
    /// srv1..srvN (index 0 is srv1; see [`Hub::server`]).
    pub servers: Vec<Netns>,
}

/// Disables IPv6 DAD in `ns` so addresses are usable at once.
fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    Ok(())
}

/// Adds `addr` (with prefix) to `ifname` in `ns`, IPv6 with `nodad`.
fn addr_add(ns: &Netns, ifname: &str, addr: &str) -> Result<()> {
    if addr.contains(':') {
        ns.ip_args(&["-6", "addr", "add", addr, "dev", ifname, "nodad"])?;
    } else {
        ns.ip_args(&["addr", "add", addr, "dev", ifname])?;
    }
    Ok(())
}

/// Prepares a host-side veth end (client / server `eth0`) for a peer that runs XDP:
/// - `gro on`: a veth only accepts XDP_REDIRECTed frames (ndo_xdp_xmit) when the receiving
///   end has NAPI, i.e. GRO or an XDP program; otherwise they are dropped silently (seen only
///   as `rx_queue_0_drops` in `ethtool -S` of the *ingress* veth in nva).
/// - `tx off` (checksum offload): with it on, packets from local sockets leave as
///   CHECKSUM_PARTIAL with only the pseudo-header sum in the L4 checksum field; XDP_REDIRECT
///   drops that skb state, so the receiver sees a bad UDP/TCP checksum and discards it
///   (`InCsumErrors`). With `tx off` the stack writes full checksums, as a real NIC would
///   deliver them.
fn prepare_host_if(ns: &Netns, ifname: &str) -> Result<()> {
    ns.exec_ok(&["ethtool", "-K", ifname, "gro", "on", "tx", "off"])
        .with_context(|| format!("ethtool -K {ifname} gro on tx off in {}", ns.name()))?;
    Ok(())
}

impl Hub {
    /// Builds the topology with `n_servers` servers (0..=99), addressed as in the module doc;
    /// client and server `eth0` get GRO on and TX checksum offload off (see the source).
    pub fn build(n_servers: usize) -> Result<Hub> {
        ensure!(n_servers <= MAX_SERVERS, "at most {MAX_SERVERS} servers");
        let client = Netns::new("client")?;
        let nva = Netns::new("nva")?;
        let mut servers = Vec::with_capacity(n_servers);
        for k in 1..=n_servers {
            servers.push(Netns::new(&format!("srv{k}"))?);
        }
        let hub = Hub {
            client,
            nva,
            servers,
        };
        hub.configure().context("building hub topology")?;
        Ok(hub)
    }

    fn configure(&self) -> Result<()> {
        for ns in self.all() {
            no_dad(ns)?;
        }
        self.nva.sysctl("net.ipv4.ip_forward", "1")?;
        self.nva.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        // client <-> nva
        veth(&self.nva, NVA_CLIENT_PORT, &self.client, HOST_IF)?;
        addr_add(&self.nva, NVA_CLIENT_PORT, &format!("{NVA_CLIENT_V4}/24"))?;
        addr_add(&self.nva, NVA_CLIENT_PORT, &format!("{NVA_CLIENT_V6}/64"))?;
        addr_add(&self.client, HOST_IF, &format!("{CLIENT_V4}/24"))?;
        addr_add(&self.client, HOST_IF, &format!("{CLIENT_V6}/64"))?;
        prepare_host_if(&self.client, HOST_IF)?;
        self.client
            .ip_args(&["route", "add", "default", "via", &NVA_CLIENT_V4.to_string()])?;
        self.client.ip_args(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &NVA_CLIENT_V6.to_string(),
        ])?;

        // nva <-> srvK
        for (i, srv) in self.servers.iter().enumerate() {
            let k = i + 1;
            let port = server_port(k);
            veth(&self.nva, &port, srv, HOST_IF)?;
            addr_add(&self.nva, &port, &format!("{}/24", nva_server_v4(k)))?;
            addr_add(&self.nva, &port, &format!("{}/64", nva_server_v6(k)))?;
            addr_add(srv, HOST_IF, &format!("{}/24", server_v4(k)))?;
            addr_add(srv, HOST_IF, &format!("{}/64", server_v6(k)))?;
            addr_add(srv, "lo", &format!("{SERVICE_V4}/32"))?;
            addr_add(srv, "lo", &format!("{SERVICE_V6}/128"))?;
            addr_add(srv, "lo", &format!("{}/32", server_unique_v4(k)))?;
            addr_add(srv, "lo", &format!("{}/128", server_unique_v6(k)))?;
            prepare_host_if(srv, HOST_IF)?;
            srv.ip_args(&[
                "route",
                "add",
                "default",
                "via",
                &nva_server_v4(k).to_string(),
            ])?;
            srv.ip_args(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &nva_server_v6(k).to_string(),
            ])?;
        }
        Ok(())
    }

    /// Every namespace of the hub: client, nva, then the servers.
    pub fn all(&self) -> impl Iterator<Item = &Netns> {
        [&self.client, &self.nva]
            .into_iter()
            .chain(self.servers.iter())
    }

    /// Server K's namespace (1-based, like the addressing). Panics if out of range.
    pub fn server(&self, k: usize) -> &Netns {
        assert!(k >= 1 && k <= self.servers.len(), "no server {k}");
        &self.servers[k - 1]
    }

    /// MAC address of `ifname` in `ns`.
    pub fn mac(&self, ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
        ns.mac(ifname)
    }

    /// Interface index of `ifname` in `ns`.
    pub fn ifindex(&self, ns: &Netns, ifname: &str) -> Result<u32> {
        ns.ifindex(ifname)
    }

    /// Sets `ifname` in `ns` administratively up or down.
    pub fn set_link(&self, ns: &Netns, ifname: &str, up: bool) -> Result<()> {
        ns.set_link(ifname, up)
    }

    /// Adds plain kernel routes in the nva namespace (for tests without XDP): each server's
    /// unique addresses via that server, and the service addresses as an ECMP route over all
    /// servers with L4 multipath hashing (IPv4 policy 1, IPv6 policy 1).
    pub fn add_kernel_routes(&self) -> Result<()> {
        let n = self.servers.len();
        for k in 1..=n {
            self.nva.ip_args(&[
                "route",
                "add",
                &format!("{}/32", server_unique_v4(k)),
                "via",
                &server_v4(k).to_string(),
            ])?;
            self.nva.ip_args(&[
                "-6",
                "route",
                "add",
                &format!("{}/128", server_unique_v6(k)),
                "via",
                &server_v6(k).to_string(),
            ])?;
        }
        if n == 0 {
            return Ok(());
        }
        self.nva.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        self.nva.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        let (mut v4, mut v6) = (
            vec![
                "route".to_string(),
                "add".into(),
                format!("{SERVICE_V4}/32"),
            ],
            vec![
                "-6".to_string(),
                "route".into(),
                "add".into(),
                format!("{SERVICE_V6}/128"),
            ],
        );
        for k in 1..=n {
            v4.extend(["nexthop".into(), "via".into(), server_v4(k).to_string()]);
            v6.extend(["nexthop".into(), "via".into(), server_v6(k).to_string()]);
        }
        for args in [v4, v6] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            self.nva.ip_args(&a)?;
        }
        Ok(())
    }
}

/// An nva config for a hub of `n` servers: all interfaces, and the service prefixes
/// (10.100.0.0/16, fd00:100::/64) over every server as ECMP next hops.
pub fn ecmp_config(n: usize) -> String {
    let mut c = format!("[[interfaces]]\nname = \"{NVA_CLIENT_PORT}\"\n");
    for k in 1..=n {
        c += &format!("[[interfaces]]\nname = \"{}\"\n", server_port(k));
    }
    let v4: Vec<String> = (1..=n)
        .map(|k| format!("{{ via = \"{}\" }}", server_v4(k)))
        .collect();
    let v6: Vec<String> = (1..=n)
        .map(|k| format!("{{ via = \"{}\" }}", server_v6(k)))
        .collect();
    c += &format!(
        "[[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{}]\n",
        v4.join(", ")
    );
    c += &format!(
        "[[routes]]\nprefix = \"fd00:100::/64\"\nnexthops = [{}]\n",
        v6.join(", ")
    );
    c
}
