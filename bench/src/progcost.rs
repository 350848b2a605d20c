//! Program-only cost: ns per packet of nva's XDP program run by BPF_PROG_TEST_RUN with
//! repeat, against table size, plus the route install rate through `Fib::set_route`.
//!
//! BPF_PROG_TEST_RUN repeats one frame and does not restore it between repetitions, so
//! nva's TTL decrement accumulates: frames start with TTL (hop limit) 255 and each call
//! repeats at most 250 times, so every repetition takes the full forwarding path (the
//! forwarded counter is checked). Several frames (random destinations across the table)
//! are run and averaged; each is cache-hot while it repeats, so this is the program's
//! best case per destination, not a cache-cold figure.
use std::net::IpAddr;

use anyhow::{Result, ensure};
use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use nva_common::reason;

use crate::{
    frames::{self, Udp},
    nva_dut::{Install, NvaDut},
    routes,
    topology::{DUT_MAC, Dut, GEN_MAC, GEN_V4, GEN_V6},
};

/// Repetitions per call (TTL 255 leaves 254 forwarding passes).
const REPEAT: u32 = 250;

pub struct Params {
    pub frames: usize,
    pub calls: usize,
    pub rounds: usize,
}

pub struct ProgCost {
    pub ipv6: bool,
    pub routes: usize,
    pub install: Install,
    /// Mean ns per packet over all frames, one value per round.
    pub ns: Vec<f64>,
    /// Share of runs counted as forwarded (should be 1.0).
    pub forwarded: f64,
}

/// Builds a fresh nva data plane in `dut` with `table`, then times the program.
pub fn measure(dut: &Dut, table: &[IpNet], p: &Params, seed: u64) -> Result<ProgCost> {
    let ipv6 = table[0].addr().is_ipv6();
    let mut nva = NvaDut::load(dut)?;
    let install = nva.install(table)?;
    let (dsts, _) = routes::destinations(table, p.frames, seed);
    let mut rng = crate::rng::Rng::new(seed ^ 0xf00d);
    let frames: Vec<Vec<u8>> = dsts
        .iter()
        .map(|d| {
            let u = Udp {
                dmac: DUT_MAC,
                smac: GEN_MAC,
                src: if ipv6 {
                    IpAddr::V6(GEN_V6)
                } else {
                    IpAddr::V4(GEN_V4)
                },
                dst: *d,
                sport: 1024 + rng.below(30000) as u16,
                dport: 9,
                ttl: 255,
            };
            frames::udp(&u, 64)
        })
        .collect();
    let dp = nva.fib.dataplane();
    let before = dp.counters(1)?[reason::FORWARDED as usize].packets;
    let prog = dp.program()?;
    let ns = dut.ns.run(|| -> Result<Vec<f64>> {
        let mut rounds = Vec::new();
        for _ in 0..p.rounds {
            let mut total = 0.0;
            for f in &frames {
                let mut ctx = Vec::new();
                for v in [0u32, f.len() as u32, 0, dut.ingress, 0, 0] {
                    ctx.extend_from_slice(&v.to_ne_bytes());
                }
                let mut sum = 0u64;
                for _ in 0..p.calls {
                    let mut opts = TestRunOptions::default();
                    opts.data_in = Some(f);
                    opts.ctx_in = Some(&ctx);
                    opts.repeat = REPEAT;
                    let r = prog.test_run(opts)?;
                    ensure!(
                        r.return_value == 4,
                        "XDP action {} (expected redirect)",
                        r.return_value
                    );
                    sum += r.duration.as_nanos() as u64;
                }
                total += sum as f64 / p.calls as f64;
            }
            rounds.push(total / frames.len() as f64);
        }
        Ok(rounds)
    })?;
    let after = dp.counters(1)?[reason::FORWARDED as usize].packets;
    let runs = (p.rounds * frames.len() * p.calls) as f64 * REPEAT as f64;
    Ok(ProgCost {
        ipv6,
        routes: table.len(),
        install,
        ns,
        forwarded: (after - before) as f64 / runs,
    })
}
