//! The SVG plots and writing the results folder.
use std::path::Path;

use anyhow::Result;

use super::{Report, fam, stats};
use crate::{
    live::{Kind, Mode},
    nva_dut::FibKind,
    svg::{Series, chart},
};

impl Report<'_> {
    /// Writes results.md and the plots into `dir`; returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: &str, text: String| -> Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            written.push(path.display().to_string());
            Ok(())
        };
        put("results.md", self.markdown())?;
        if !self.prog.is_empty() {
            put("ns_per_packet.svg", self.prog_chart())?;
        }
        if !self.cells.is_empty() {
            put("pps_vs_table.svg", self.pps_chart())?;
        }
        Ok(written)
    }

    fn prog_chart(&self) -> String {
        let mut series = Vec::new();
        let kinds = [
            (false, FibKind::Trie, "#1f77b4", "IPv4 trie"),
            (false, FibKind::Fast, "#2ca02c", "IPv4 DIR-24-8"),
            (false, FibKind::Dxr, "#ff7f0e", "IPv4 DXR"),
            (true, FibKind::Trie, "#d62728", "IPv6 trie"),
            (true, FibKind::Fast, "#9467bd", "IPv6 multibit"),
        ];
        for (ipv6, fib, color, label) in kinds {
            for cycling in [false, true] {
                let points: Vec<_> = self
                    .prog
                    .iter()
                    .filter(|p| !p.reference && p.ipv6 == ipv6 && p.fib == fib)
                    .map(|p| {
                        let (a, b, c) = stats(if cycling { &p.cycling_ns } else { &p.ns });
                        (p.routes as f64, b, a, c)
                    })
                    .collect();
                if !points.is_empty() {
                    let how = if cycling {
                        "cycling dsts"
                    } else {
                        "same frame"
                    };
                    series.push(Series {
                        name: format!("{label}, {how}"),
                        color,
                        dashed: cycling,
                        points,
                    });
                }
            }
        }
        chart(
            "nva XDP program cost (BPF_PROG_TEST_RUN)",
            "routes in the table (log scale)",
            "ns per packet",
            &series,
        )
    }

    fn pps_chart(&self) -> String {
        let mut series = Vec::new();
        let size = self.cells.iter().map(|c| c.size).min().unwrap_or(64);
        let colors = [
            (Kind::Nva, false, "#1f77b4"),
            (Kind::NvaFast, false, "#2ca02c"),
            (Kind::Linux, false, "#aec7e8"),
            (Kind::Nva, true, "#d62728"),
            (Kind::NvaFast, true, "#9467bd"),
            (Kind::Linux, true, "#ff9896"),
        ];
        for (kind, ipv6, color) in colors {
            for hot in [false, true] {
                let points: Vec<_> = [false, true]
                    .iter()
                    .filter_map(|&full| {
                        let c = self.cell(
                            ipv6,
                            size,
                            Mode {
                                kind,
                                full,
                                hot: hot && full,
                            },
                        )?;
                        let pps: Vec<f64> = c.samples.iter().map(|s| s.pps / 1e6).collect();
                        let (a, b, d) = stats(&pps);
                        Some((self.routes(c.mode, ipv6) as f64, b, a, d))
                    })
                    .collect();
                if !points.is_empty() {
                    let who = match kind {
                        Kind::Nva => "nva trie",
                        Kind::NvaFast if ipv6 => "nva multibit",
                        Kind::NvaFast => "nva DIR-24-8",
                        _ => "Linux",
                    };
                    let dsts = self.dsts(Mode {
                        kind,
                        full: true,
                        hot,
                    });
                    series.push(Series {
                        name: format!("{who} {} ({dsts} dsts)", fam(ipv6)),
                        color,
                        dashed: hot,
                        points,
                    });
                }
            }
        }
        chart(
            &format!("Forwarded Mpps, {size} B frames, one CPU (generator + DUT + sink)"),
            "routes in the table (log scale)",
            "Mpps",
            &series,
        )
    }
}
