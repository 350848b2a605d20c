//! Loss during route churn: the routes the generator's destinations fall in are
//! rewritten through `Fib::set_route` from another thread while traffic runs.
use std::{sync::atomic::Ordering, time::Instant};

use anyhow::Result;
use ipnet::IpNet;
use nva::fib::{Source, Target};

use super::{Churn, Kind, Live, Mode, Params, Sample, Traffic, measure};
use crate::generator;

impl Live<'_> {
    /// Loss while the routes the generator hits are rewritten as fast as the controller
    /// can (each flips between an ECMP group of all next hops and one without the last),
    /// against loss without churn, through nva with the full table (`kind`: with the LPM
    /// trie, or with the fast FIBs).
    pub fn churn(&mut self, p: &Params, ipv6: bool, size: usize, kind: Kind) -> Result<Churn> {
        let k = 1;
        let fam = ipv6 as usize;
        let mut routes: Vec<IpNet> = self.dst_routes[k][fam][..p.dsts].to_vec();
        routes.sort();
        routes.dedup();
        let dsts = &self.dsts[k][fam][..p.dsts];
        let frame = generator::configure(&mut self.obj, ipv6, size, p.flows, dsts)?;
        let frame = Traffic::Frame(&frame);
        self.attach(Mode {
            kind,
            full: true,
            hot: false,
        })?;
        let (obj, topo, sink_idx) = (&self.obj, self.topo, &self.sink_idx[k]);
        let base = measure(obj, topo, sink_idx, p, k, &frame, |_| Ok(()));
        let nva = match kind {
            Kind::NvaFast => self
                .fast
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("no fast-FIB DUT"))?,
            _ => &mut self.nva[k],
        };
        let nh = if ipv6 {
            nva.nh_v6.clone()
        } else {
            nva.nh_v4.clone()
        };
        let churned = measure(
            obj,
            topo,
            sink_idx,
            p,
            k,
            &frame,
            |stop| -> Result<(u64, f64)> {
                let start = Instant::now();
                let mut n = 0u64;
                'outer: for round in 0.. {
                    let target = Target::Forward(if round % 2 == 0 {
                        nh[..nh.len().max(2) - 1].into()
                    } else {
                        nh.as_slice().into()
                    });
                    for r in &routes {
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                        nva.fib.set_route(*r, Source::Static, target.clone())?;
                        n += 1;
                    }
                }
                Ok((n, start.elapsed().as_secs_f64()))
            },
        );
        nva.detach();
        let (base, _) = base?;
        let (s, (n, secs)) = churned?;
        let loss = |s: &Sample| 1.0 - s.pps / s.gen_pps;
        Ok(Churn {
            kind,
            base_pps: base.pps,
            base_loss: loss(&base),
            churn_loss: loss(&s),
            updates_per_sec: n as f64 / secs,
            pps: s.pps,
            routes: routes.len(),
        })
    }
}
