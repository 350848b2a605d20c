//! nva as the DUT: its XDP program (`Dataplane::load`) programmed through the real
//! controller code (`Fib`), in the DUT's namespace (DEVMAP entries and ifindexes
//! resolve there).
use std::time::Instant;

use anyhow::Result;
use ipnet::IpNet;
use nva::{
    dataplane::{Dataplane, LoadOptions},
    fib::{Fib, NhKey, Port, Source, Target},
};
use nva_common::{SET_SEGMENTS, Settings};

use crate::topology::{Dut, nexthop_v4, nexthop_v6};

/// What nva does per packet besides the lookup, as an operator would configure it:
/// east-west prefixes (the classifier runs on every packet), segments with denied pairs
/// (checked for east-west traffic), ECMP over all egress ports.
pub struct Features {
    pub east_west: Vec<IpNet>,
    /// Prefix -> segment id.
    pub segments: Vec<(IpNet, u32)>,
    /// Denied (from, to) segment pairs.
    pub deny: Vec<(u32, u32)>,
}

impl Features {
    /// Nothing but the lookup (for measurements that configure features themselves).
    pub fn none() -> Features {
        Features {
            east_west: Vec::new(),
            segments: Vec::new(),
            deny: Vec::new(),
        }
    }
}

pub struct NvaDut {
    pub fib: Fib,
    pub nh_v4: Vec<u16>,
    pub nh_v6: Vec<u16>,
}

/// How long installing a table took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Install {
    pub routes: usize,
    pub secs: f64,
}

impl Install {
    pub fn rate(&self) -> f64 {
        self.routes as f64 / self.secs
    }
}

/// nva's FIB structures in a DUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibKind {
    /// The BPF LPM tries.
    Trie,
    /// IPv4 as DIR-24-8, IPv6 as the multibit trie.
    Fast,
    /// IPv4 as DXR, IPv6 as the multibit trie.
    Dxr,
}

impl FibKind {
    /// The structure of one family's FIB.
    pub fn name(self, ipv6: bool) -> &'static str {
        match (self, ipv6) {
            (FibKind::Trie, _) => "LPM trie",
            (_, true) => "multibit",
            (FibKind::Fast, false) => "DIR-24-8",
            (FibKind::Dxr, false) => "DXR",
        }
    }
}

impl NvaDut {
    /// Loads the program with the FIB structures `fib`,
    /// registers the DUT's ports (ingress slot 1, egress 2..) and one resolved next hop
    /// per egress port and family, and `features`. No routes yet.
    pub fn load(dut: &Dut, fib: FibKind, features: &Features) -> Result<NvaDut> {
        dut.ns.run(|| {
            let mut dp = Dataplane::load_with(LoadOptions {
                dir24_ipv4: [fib == FibKind::Fast; 2],
                dxr_ipv4: [fib == FibKind::Dxr; 2],
                multibit_ipv6: [fib != FibKind::Trie; 2],
                ..Default::default()
            })?;
            dp.set_settings(Settings {
                hash_seed: 0x5eed_1234,
                flags: if features.segments.is_empty() {
                    0
                } else {
                    SET_SEGMENTS
                },
            })?;
            for (prefix, id) in &features.segments {
                dp.set_segment_prefix(prefix, Some(*id))?;
            }
            for (from, to) in &features.deny {
                dp.set_segment_policy(*from, *to, true)?;
            }
            dp.add_port(dut.ingress, 1, 0, [0; 6])?;
            for (i, e) in dut.egress.iter().enumerate() {
                dp.add_port(e.ifindex, 2 + i as u32, 0, [0; 6])?;
            }
            let mut fib = Fib::new(dp);
            fib.set_east_west(&features.east_west)?;
            let (mut nh_v4, mut nh_v6) = (Vec::new(), Vec::new());
            for (i, e) in dut.egress.iter().enumerate() {
                let port = Port {
                    name: e.name.clone(),
                    mac: e.mac,
                    mtu: 1500,
                    up: true,
                };
                for (via, ids) in [(nexthop_v4(i), &mut nh_v4), (nexthop_v6(i), &mut nh_v6)] {
                    let key = NhKey {
                        ifindex: e.ifindex,
                        via,
                        vlan: 0,
                    };
                    ids.push(fib.nexthop(key, &port)?);
                    fib.update_neighbour(e.ifindex, via, Some(e.sink_mac), false)?;
                }
            }
            Ok(NvaDut { fib, nh_v4, nh_v6 })
        })
    }

    /// Routes every prefix, one `Fib::set_route` at a time, and times it: every other
    /// route over all next hops of its family (one ECMP group), the others over one
    /// next hop each in turn, so that neighbouring prefixes mostly differ (as in a table
    /// learned from several peers; a FIB that merges equal neighbours gains nothing).
    pub fn install(&mut self, table: &[IpNet]) -> Result<Install> {
        let start = Instant::now();
        let targets = |ids: &[u16]| -> Vec<Target> {
            std::iter::once(Target::Forward(ids.into()))
                .chain(
                    ids.iter()
                        .map(|id| Target::Forward([*id].as_slice().into())),
                )
                .collect()
        };
        let (v4, v6) = (targets(&self.nh_v4), targets(&self.nh_v6));
        for (i, p) in table.iter().enumerate() {
            let t = if p.addr().is_ipv4() { &v4 } else { &v6 };
            let target = if i % 2 == 0 {
                &t[0]
            } else {
                &t[1 + (i / 2) % (t.len() - 1)]
            };
            self.fib.set_route(*p, Source::Static, target.clone())?;
        }
        anyhow::ensure!(
            self.fib.failed_count() == 0,
            "{} routes could not be installed",
            self.fib.failed_count()
        );
        Ok(Install {
            routes: table.len(),
            secs: start.elapsed().as_secs_f64(),
        })
    }

    pub fn attach(&mut self, dut: &Dut) -> Result<()> {
        let dp = self.fib.dataplane_mut();
        dut.ns.run(|| dp.attach(dut.ingress, "d0", false))
    }

    pub fn detach(&mut self) {
        self.fib.dataplane_mut().detach_all();
    }
}
