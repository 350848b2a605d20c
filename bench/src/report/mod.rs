//! The results: a Markdown report (printed, and written to the results folder) and SVG
//! plots of ns/packet and pps against table size.
use std::fmt::Write;

mod plots;

use crate::{
    live::{Cell, Churn, Generator, Installs, Kind, Mode},
    machine::Machine,
    progcost::ProgCost,
};

pub struct Report<'a> {
    pub machine: &'a Machine,
    pub command: String,
    pub load_before: String,
    pub load_after: String,
    pub cpu: usize,
    pub secs: f64,
    pub runs: usize,
    pub flows: u32,
    pub nexthops: usize,
    pub dsts: usize,
    pub hot_dsts: usize,
    pub full_v4: usize,
    pub full_v6: usize,
    /// Prefix-length mix of the full tables, as text.
    pub mix: Vec<String>,
    pub prog: &'a [ProgCost],
    pub installs: Option<&'a Installs>,
    pub cells: &'a [Cell],
    pub churn: Option<&'a [Churn]>,
    /// The live part's generator.
    pub generator: Generator,
}

/// (min, median, max)
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (s[0], med, s[n - 1])
}

fn fam(ipv6: bool) -> &'static str {
    if ipv6 { "IPv6" } else { "IPv4" }
}

pub fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn mmm(v: &[f64], digits: usize) -> String {
    let (a, b, c) = stats(v);
    format!("{a:.digits$} / **{b:.digits$}** / {c:.digits$}")
}

const DROP: Mode = Mode {
    kind: Kind::Drop,
    full: false,
    hot: false,
};

impl Report<'_> {
    fn routes(&self, mode: Mode, ipv6: bool) -> usize {
        match (mode.full, ipv6) {
            (false, _) => 1,
            (true, false) => self.full_v4,
            (true, true) => self.full_v6,
        }
    }

    fn dsts(&self, mode: Mode) -> usize {
        if mode.hot { self.hot_dsts } else { self.dsts }
    }

    fn cell(&self, ipv6: bool, size: usize, mode: Mode) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.ipv6 == ipv6 && c.size == size && c.mode == mode)
    }

    fn median_pps(&self, ipv6: bool, size: usize, mode: Mode) -> Option<f64> {
        let c = self.cell(ipv6, size, mode)?;
        Some(stats(&c.samples.iter().map(|s| s.pps).collect::<Vec<_>>()).1)
    }

    /// ns per packet attributable to the DUT: this mode's time per packet minus that of
    /// dropping at the DUT's ingress (the generator's and the veth's own share).
    fn dut_ns(&self, c: &Cell) -> Option<f64> {
        if c.mode.kind == Kind::Drop {
            return None;
        }
        let own = self.median_pps(c.ipv6, c.size, c.mode)?;
        let drop = self.median_pps(c.ipv6, c.size, DROP)?;
        Some(1e9 / own - 1e9 / drop)
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        self.header(&mut o);
        if !self.prog.is_empty() {
            self.prog_table(&mut o);
        }
        if !self.cells.is_empty() {
            self.live_table(&mut o);
            self.targets(&mut o);
            self.ratios(&mut o);
        }
        if let Some(i) = self.installs {
            let _ = writeln!(o, "### Route install rate, full tables\n");
            let _ = writeln!(
                o,
                "| family | routes | nva (Fib::set_route, one at a time) | Linux (`ip -batch`, nexthop-group routes) |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|");
            for ((v6, n), (_, l)) in i.nva.iter().zip(&i.linux) {
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.0} routes/s ({:.1} s) | {:.0} routes/s ({:.1} s) |",
                    fam(*v6),
                    count(n.routes),
                    n.rate(),
                    n.secs,
                    l.rate(),
                    l.secs
                );
            }
            for (v6, n) in &i.nva_fast {
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.0} routes/s ({:.1} s) | - |",
                    if *v6 {
                        "IPv6, multibit FIB"
                    } else {
                        "IPv4, DIR-24-8 FIB"
                    },
                    count(n.routes),
                    n.rate(),
                    n.secs
                );
            }
            o.push('\n');
        }
        for c in self.churn.into_iter().flatten() {
            let _ = writeln!(
                o,
                "### Loss during route churn (nva with {}, full IPv4 table, 64 B, {} destinations)\n",
                if c.kind == Kind::NvaFast {
                    "DIR-24-8"
                } else {
                    "the LPM trie"
                },
                self.dsts
            );
            let _ = writeln!(
                o,
                "| | received Mpps | loss (1 - received / generated; about ±0.02% is frames in flight at the window edges) |"
            );
            let _ = writeln!(o, "|---|---:|---:|");
            let _ = writeln!(
                o,
                "| no churn | {:.2} | {:.4}% |",
                c.base_pps / 1e6,
                100.0 * c.base_loss
            );
            let _ = writeln!(
                o,
                "| the {} routes in use rewritten at {:.0} updates/s (Fib::set_route, ECMP group flips) | {:.2} | {:.4}% |\n",
                c.routes,
                c.updates_per_sec,
                c.pps / 1e6,
                100.0 * c.churn_loss,
            );
        }
        o
    }

    fn header(&self, o: &mut String) {
        let m = self.machine;
        let _ = writeln!(o, "### Machine and run\n");
        let _ = writeln!(o, "- CPU: {} x {}, kernel {}", m.cores, m.cpu, m.kernel);
        let _ = writeln!(
            o,
            "- load average (1/5/15 min) before: {}, after: {}",
            self.load_before, self.load_after
        );
        let _ = writeln!(o, "- command: `{}`", self.command);
        let generator = match self.generator {
            Generator::LiveFrames => format!(
                "XDP live frames (BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES), pinned to CPU {}; kernel pktgen: {}",
                self.cpu,
                if m.pktgen {
                    "present (/proc/net/pktgen) but not used by this run"
                } else {
                    "not available (no /proc/net/pktgen, no loadable modules)"
                }
            ),
            Generator::Pktgen => format!(
                "kernel pktgen (`--generator pktgen`), one thread on CPU {}, destinations a range of the 1-route table's prefix (the full-table modes and the churn need the live-frames generator's table of destinations)",
                self.cpu
            ),
        };
        let _ = writeln!(
            o,
            "- generator: {generator}; xdp-forward: {}",
            if m.xdp_forward {
                "installed but not benchmarked"
            } else {
                "not available (Debian 12 does not ship it)"
            }
        );
        if m.live_frames == Some(false) {
            let _ = writeln!(
                o,
                "- live forwarding not measured: this kernel refuses live-frames test runs (EPERM){}",
                if m.pktgen {
                    " (it has pktgen: --generator pktgen)"
                } else {
                    " and has no pktgen"
                }
            );
        }
        let _ = writeln!(
            o,
            "- {} run(s) of {} s per cell, modes interleaved; {} flows (UDP source ports); ECMP over {} next hops (one egress veth each)",
            self.runs, self.secs, self.flows, self.nexthops
        );
        let loads: Vec<f64> = self
            .cells
            .iter()
            .flat_map(|c| c.samples.iter().map(|s| s.load))
            .collect();
        if !loads.is_empty() {
            let (a, b, c) = stats(&loads);
            let _ = writeln!(
                o,
                "- 1-minute load average at the end of each live sample (this benchmark adds about 1.0): min {a:.2}, median {b:.2}, max {c:.2}"
            );
        }
        for line in &self.mix {
            let _ = writeln!(o, "- {line}");
        }
        o.push('\n');
    }

    fn prog_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "### Program-only cost (BPF_PROG_TEST_RUN, 64 B frames)\n"
        );
        let _ = writeln!(
            o,
            "| family | routes | ns/packet, same frame repeated (min / median / max) | ns/packet, cycling destinations | forwarded | nva install (Fib::set_route) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for p in self.prog {
            if p.reference {
                let _ = writeln!(
                    o,
                    "| {}, minimal XDP forwarder (reference, no lookup) | - | {} | {} | - | - |",
                    fam(p.ipv6),
                    mmm(&p.ns, 1),
                    mmm(&p.cycling_ns, 1),
                );
                continue;
            }
            let _ = writeln!(
                o,
                "| {}, {} | {} | {} | {} | {:.1}% | {:.0} routes/s |",
                fam(p.ipv6),
                p.fib.name(p.ipv6),
                count(p.routes),
                mmm(&p.ns, 1),
                mmm(&p.cycling_ns, 1),
                100.0 * p.forwarded,
                p.install.rate()
            );
        }
        o.push('\n');
    }

    fn live_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "### Live forwarding (generator + DUT + sink on one CPU)\n"
        );
        let _ = writeln!(
            o,
            "| family | frame | DUT | routes | destinations | Mpps min / median / max | generated Mpps | DUT ns/packet | ECMP spread | nva: in XDP |"
        );
        let _ = writeln!(o, "|---|---:|---|---:|---:|---:|---:|---:|---|---:|");
        for c in self.cells {
            let pps: Vec<f64> = c.samples.iter().map(|s| s.pps / 1e6).collect();
            let generated: Vec<f64> = c.samples.iter().map(|s| s.gen_pps / 1e6).collect();
            let dut = match c.mode.kind {
                Kind::Drop => "XDP_DROP at DUT ingress",
                Kind::Minimal => "minimal XDP forwarder (no lookup)",
                Kind::Nva => "nva (XDP, LPM trie)",
                Kind::NvaFast if c.ipv6 => "nva (XDP, multibit)",
                Kind::NvaFast => "nva (XDP, DIR-24-8)",
                Kind::NvaDxr => "nva (XDP, DXR)",
                Kind::Linux => "Linux forwarding",
            };
            let spread = match (c.mode.kind, c.samples.last()) {
                (Kind::Drop, _) | (_, None) => "-".to_string(),
                (_, Some(s)) => {
                    let v: Vec<String> = s
                        .spread
                        .iter()
                        .map(|x| format!("{:.0}", 100.0 * x))
                        .collect();
                    v.join("/") + " %"
                }
            };
            let xdp = c
                .samples
                .iter()
                .filter_map(|s| s.xdp)
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(f, other)| {
                    if f > 0.9995 {
                        format!("{:.1}%", 100.0 * f)
                    } else {
                        format!("{:.1}% (else {other})", 100.0 * f)
                    }
                })
                .unwrap_or("-".into());
            let routes = if c.mode.kind == Kind::Drop {
                "-".into()
            } else {
                count(self.routes(c.mode, c.ipv6))
            };
            let _ = writeln!(
                o,
                "| {} | {} B | {dut} | {routes} | {} | {} | {:.2} | {} | {spread} | {xdp} |",
                fam(c.ipv6),
                c.size,
                self.dsts(c.mode),
                mmm(&pps, 2),
                stats(&generated).1,
                self.dut_ns(c)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or("-".into()),
            );
        }
        o.push('\n');
    }

    /// The forwarding targets of issue 13, as ratios of medians of this run. nva runs
    /// with all its per-packet features on (classes, segments with denied pairs, ECMP
    /// over all ports); the full table is the enterprise-like mix (3% longer than /24).
    fn targets(&self, o: &mut String) {
        let _ = writeln!(o, "### Targets (ratios of medians, same run)\n");
        let _ = writeln!(o, "| family | frame | ratio | figure | target | met |");
        let _ = writeln!(o, "|---|---:|---|---:|---:|---|");
        let mode = |kind, full| Mode {
            kind,
            full,
            hot: false,
        };
        let mut keys: Vec<(bool, usize)> = self.cells.iter().map(|c| (c.ipv6, c.size)).collect();
        keys.dedup();
        for (ipv6, size) in keys {
            let fast = if ipv6 { "multibit" } else { "DIR-24-8" };
            let rows = [
                (
                    "nva, 1 route, all features / minimal XDP forwarder".to_string(),
                    mode(Kind::Nva, false),
                    mode(Kind::Minimal, false),
                    0.85,
                ),
                (
                    "nva / Linux, 1 route".to_string(),
                    mode(Kind::Nva, false),
                    mode(Kind::Linux, false),
                    4.0,
                ),
                (
                    format!("nva ({fast}) / Linux, full table"),
                    mode(Kind::NvaFast, true),
                    mode(Kind::Linux, true),
                    4.0,
                ),
                (
                    format!("nva ({fast}), full table / nva, 1 route"),
                    mode(Kind::NvaFast, true),
                    mode(Kind::Nva, false),
                    0.85,
                ),
            ];
            for (what, a, b, target) in rows {
                let (Some(x), Some(y)) = (
                    self.median_pps(ipv6, size, a),
                    self.median_pps(ipv6, size, b),
                ) else {
                    continue;
                };
                let r = x / y;
                let _ = writeln!(
                    o,
                    "| {} | {size} B | {what} | **{r:.2}** | >= {target} | {} |",
                    fam(ipv6),
                    if r >= target { "yes" } else { "no" }
                );
            }
        }
        o.push('\n');
    }

    fn ratios(&self, o: &mut String) {
        let _ = writeln!(o, "### nva / Linux (medians, same run)\n");
        let _ = writeln!(
            o,
            "| family | frame | routes | destinations | nva FIB | nva Mpps | Linux Mpps | pps ratio | DUT-only ratio (Linux ns / nva ns) | target | met (pps / DUT-only) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|");
        let mut keys: Vec<(bool, usize)> = self.cells.iter().map(|c| (c.ipv6, c.size)).collect();
        keys.dedup();
        for (ipv6, size) in keys {
            let rows = [
                (Kind::Nva, false, false),
                (Kind::Nva, true, false),
                (Kind::Nva, true, true),
                (Kind::NvaFast, true, false),
                (Kind::NvaFast, true, true),
            ];
            for (kind, full, hot) in rows {
                let nm = Mode { kind, full, hot };
                let lm = Mode {
                    kind: Kind::Linux,
                    full,
                    hot,
                };
                let (Some(n), Some(l)) = (self.cell(ipv6, size, nm), self.cell(ipv6, size, lm))
                else {
                    continue;
                };
                let np = self.median_pps(ipv6, size, nm).unwrap_or(f64::NAN);
                let lp = self.median_pps(ipv6, size, lm).unwrap_or(f64::NAN);
                let cost = match (self.dut_ns(n), self.dut_ns(l)) {
                    (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                    _ => None,
                };
                let target = 4.0;
                let yes = |v: f64| if v >= target { "yes" } else { "no" };
                let _ = writeln!(
                    o,
                    "| {} | {size} B | {} | {} | {} | {:.2} | {:.2} | **{:.2}x** | {} | >= {target}x | {} / {} |",
                    fam(ipv6),
                    count(self.routes(nm, ipv6)),
                    self.dsts(nm),
                    if kind == Kind::NvaFast && ipv6 {
                        "multibit"
                    } else if kind == Kind::NvaFast {
                        "DIR-24-8"
                    } else {
                        "LPM trie"
                    },
                    np / 1e6,
                    lp / 1e6,
                    np / lp,
                    cost.map(|c| format!("{c:.2}x")).unwrap_or("-".into()),
                    yes(np / lp),
                    cost.map(yes).unwrap_or("-"),
                );
            }
        }
        o.push('\n');
    }
}
