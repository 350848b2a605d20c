//! The results: a Markdown table report (printed, and written to the results folder)
//! and SVG plots of ns/packet and pps against table size.
use std::{fmt::Write, path::Path};

use anyhow::Result;

use crate::{
    live::{Cell, Churn, Installs, Kind, Mode},
    machine::Machine,
    progcost::ProgCost,
    svg::{Series, chart},
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
    pub full_v4: usize,
    pub full_v6: usize,
    pub prog: &'a [ProgCost],
    pub installs: Option<&'a Installs>,
    pub cells: &'a [Cell],
    pub churn: Option<&'a Churn>,
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

impl Report<'_> {
    fn routes(&self, mode: Mode, ipv6: bool) -> usize {
        match (mode.full, ipv6) {
            (false, _) => 1,
            (true, false) => self.full_v4,
            (true, true) => self.full_v6,
        }
    }

    fn cell(&self, ipv6: bool, size: usize, kind: Kind, full: bool) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.ipv6 == ipv6 && c.size == size && c.mode == Mode { kind, full })
    }

    fn median_pps(&self, ipv6: bool, size: usize, kind: Kind, full: bool) -> Option<f64> {
        self.cell(ipv6, size, kind, full)
            .map(|c| stats(&c.samples.iter().map(|s| s.pps).collect::<Vec<_>>()).1)
    }

    /// ns per packet attributable to the DUT: this mode's time per packet minus that of
    /// dropping at the DUT's ingress (the generator's and veth's own share).
    fn dut_ns(&self, c: &Cell) -> Option<f64> {
        if c.mode.kind == Kind::Drop {
            return None;
        }
        let own = self.median_pps(c.ipv6, c.size, c.mode.kind, c.mode.full)?;
        let drop = self.median_pps(c.ipv6, c.size, Kind::Drop, false)?;
        Some(1e9 / own - 1e9 / drop)
    }

    pub fn markdown(&self) -> String {
        let m = self.machine;
        let mut o = String::new();
        let _ = writeln!(o, "### Machine and run\n");
        let _ = writeln!(
            o,
            "- CPU: {} x {} ({} logical CPUs), kernel {}",
            m.cores, m.cpu, m.cores, m.kernel
        );
        let _ = writeln!(
            o,
            "- load average (1/5/15 min) before: {}, after: {}",
            self.load_before, self.load_after
        );
        let _ = writeln!(o, "- command: `{}`", self.command);
        let _ = writeln!(
            o,
            "- generator: XDP live frames (BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES) pinned to CPU {}; kernel pktgen: {}; xdp-forward: {}",
            self.cpu,
            if m.pktgen {
                "present (/proc/net/pktgen) but not used by this run"
            } else {
                "not available (no /proc/net/pktgen, no loadable modules)"
            },
            if m.xdp_forward {
                "installed but not benchmarked"
            } else {
                "not available (not packaged in Debian 12)"
            }
        );
        let _ = writeln!(
            o,
            "- {} run(s) of {} s per cell, modes interleaved; {} flows (UDP source ports), ECMP over {} next hops (one egress veth each)\n",
            self.runs, self.secs, self.flows, self.nexthops
        );
        if !self.prog.is_empty() {
            let _ = writeln!(
                o,
                "### Program-only cost (BPF_PROG_TEST_RUN, 64 B frames)\n"
            );
            let _ = writeln!(
                o,
                "| family | routes | ns/packet min / median / max | forwarded | nva install (Fib::set_route) |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|");
            for p in self.prog {
                let (a, b, c) = stats(&p.ns);
                let _ = writeln!(
                    o,
                    "| {} | {} | {a:.1} / **{b:.1}** / {c:.1} | {:.1}% | {:.0} routes/s |",
                    fam(p.ipv6),
                    count(p.routes),
                    100.0 * p.forwarded,
                    p.install.rate()
                );
            }
            o.push('\n');
        }
        if !self.cells.is_empty() {
            let _ = writeln!(
                o,
                "### Live forwarding (generator + DUT + sink on one CPU)\n"
            );
            let _ = writeln!(
                o,
                "| family | frame | DUT | routes | Mpps min / median / max | generated Mpps | DUT ns/packet | ECMP spread |"
            );
            let _ = writeln!(o, "|---|---:|---|---:|---:|---:|---:|---|");
            for c in self.cells {
                let pps: Vec<f64> = c.samples.iter().map(|s| s.pps / 1e6).collect();
                let generated: Vec<f64> = c.samples.iter().map(|s| s.gen_pps / 1e6).collect();
                let (a, b, d) = stats(&pps);
                let dut = match c.mode.kind {
                    Kind::Drop => "XDP_DROP at DUT ingress",
                    Kind::Nva => "nva (XDP)",
                    Kind::Linux => "Linux forwarding",
                };
                let spread = match (c.mode.kind, c.samples.last()) {
                    (Kind::Drop, _) | (_, None) => "-".to_string(),
                    (_, Some(s)) => {
                        s.spread
                            .iter()
                            .map(|x| format!("{:.0}", 100.0 * x))
                            .collect::<Vec<_>>()
                            .join("/")
                            + " %"
                    }
                };
                let xdp = c
                    .samples
                    .iter()
                    .filter_map(|s| s.xdp)
                    .map(|(f, other)| (f, other))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(f, other)| {
                        if f > 0.9995 { format!("{:.1}%", 100.0 * f) } else { format!("{:.1}% (else {other})", 100.0 * f) }
                    })
                    .unwrap_or("-".into());
                let _ = writeln!(
                    o,
                    "| {} | {} B | {dut} | {} | {a:.2} / **{b:.2}** / {d:.2} | {:.2} | {} | {spread} | {xdp} |",
                    fam(c.ipv6),
                    c.size,
                    if c.mode.kind == Kind::Drop {
                        "-".into()
                    } else {
                        count(self.routes(c.mode, c.ipv6))
                    },
                    stats(&generated).1,
                    self.dut_ns(c)
                        .map(|v| format!("{v:.1}"))
                        .unwrap_or("-".into()),
                );
            }
            o.push('\n');
            o.push_str(&self.ratios());
        }
        if let Some(i) = self.installs {
            let _ = writeln!(o, "### Route install rate, full tables\n");
            let _ = writeln!(
                o,
                "| family | routes | nva (Fib::set_route, one at a time) | Linux (`ip -batch`, nexthop group routes) |"
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
            o.push('\n');
        }
        if let Some(c) = self.churn {
            let _ = writeln!(
                o,
                "### Loss during route churn (nva, full IPv4 table, 64 B)\n"
            );
            let _ = writeln!(o, "| | loss (1 - received / generated) |");
            let _ = writeln!(o, "|---|---:|");
            let _ = writeln!(o, "| no churn | {:.3}% |", 100.0 * c.base_loss);
            let _ = writeln!(
                o,
                "| {} routes rewritten at {:.0} updates/s (Fib::set_route, ECMP group flips) | {:.3}% ({:.2} Mpps received) |\n",
                c.routes,
                c.updates_per_sec,
                100.0 * c.churn_loss,
                c.pps / 1e6
            );
        }
        o
    }

    fn ratios(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "### nva / Linux (medians, same run)\n");
        let _ = writeln!(
            o,
            "| family | frame | routes | nva Mpps | Linux Mpps | pps ratio | DUT-only ratio (Linux ns / nva ns) | target | met (pps / DUT-only) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        let mut keys: Vec<(bool, usize)> = self.cells.iter().map(|c| (c.ipv6, c.size)).collect();
        keys.dedup();
        for (ipv6, size) in keys {
            for full in [false, true] {
                let (Some(n), Some(l)) = (
                    self.cell(ipv6, size, Kind::Nva, full),
                    self.cell(ipv6, size, Kind::Linux, full),
                ) else {
                    continue;
                };
                let np = self
                    .median_pps(ipv6, size, Kind::Nva, full)
                    .unwrap_or(f64::NAN);
                let lp = self
                    .median_pps(ipv6, size, Kind::Linux, full)
                    .unwrap_or(f64::NAN);
                let (nn, ln) = (self.dut_ns(n), self.dut_ns(l));
                let cost = match (nn, ln) {
                    (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                    _ => None,
                };
                let target = if full { 4.0 } else { 3.0 };
                let yes = |v: f64| if v >= target { "yes" } else { "no" };
                let _ = writeln!(
                    o,
                    "| {} | {size} B | {} | {:.2} | {:.2} | **{:.2}x** | {} | >= {target}x | {} / {} |",
                    fam(ipv6),
                    count(self.routes(n.mode, ipv6)),
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
        o
    }

    /// Writes results.md and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let md = dir.join("results.md");
        std::fs::write(&md, self.markdown())?;
        written.push(md.display().to_string());
        if !self.prog.is_empty() {
            let mut series = Vec::new();
            for (ipv6, color) in [(false, "#1f77b4"), (true, "#d62728")] {
                let points: Vec<_> = self
                    .prog
                    .iter()
                    .filter(|p| p.ipv6 == ipv6)
                    .map(|p| {
                        let (a, b, c) = stats(&p.ns);
                        (p.routes as f64, b, a, c)
                    })
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        name: format!("nva {}", fam(ipv6)),
                        color,
                        dashed: false,
                        points,
                    });
                }
            }
            let svg = chart(
                "nva XDP program cost (BPF_PROG_TEST_RUN)",
                "routes in the table (log scale)",
                "ns per packet",
                &series,
            );
            let path = dir.join("ns_per_packet.svg");
            std::fs::write(&path, svg)?;
            written.push(path.display().to_string());
        }
        if !self.cells.is_empty() {
            let mut series = Vec::new();
            let mut sizes: Vec<usize> = self.cells.iter().map(|c| c.size).collect();
            sizes.sort();
            sizes.dedup();
            for ipv6 in [false, true] {
                for (kind, color) in [
                    (Kind::Nva, if ipv6 { "#d62728" } else { "#1f77b4" }),
                    (Kind::Linux, if ipv6 { "#ff9896" } else { "#9edae5" }),
                ] {
                    for &size in &sizes {
                        let points: Vec<_> = [false, true]
                            .iter()
                            .filter_map(|&full| {
                                let c = self.cell(ipv6, size, kind, full)?;
                                let (a, b, d) = stats(
                                    &c.samples.iter().map(|s| s.pps / 1e6).collect::<Vec<_>>(),
                                );
                                Some((self.routes(c.mode, ipv6) as f64, b, a, d))
                            })
                            .collect();
                        if !points.is_empty() {
                            let name = format!(
                                "{} {} {size} B",
                                if kind == Kind::Nva { "nva" } else { "Linux" },
                                fam(ipv6)
                            );
                            series.push(Series {
                                name,
                                color,
                                dashed: size > 64,
                                points,
                            });
                        }
                    }
                }
            }
            let svg = chart(
                "Forwarded Mpps on one CPU (generator + DUT + sink)",
                "routes in the table (log scale)",
                "Mpps",
                &series,
            );
            let path = dir.join("pps_vs_table.svg");
            std::fs::write(&path, svg)?;
            written.push(path.display().to_string());
        }
        Ok(written)
    }
}
