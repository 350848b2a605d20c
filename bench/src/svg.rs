//! A minimal SVG line chart (log-scale x, linear y from 0) with min-max whiskers.
use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    /// (x, median, min, max)
    pub points: Vec<(f64, f64, f64, f64)>,
}

const W: f64 = 770.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 250.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

fn nice_max(v: f64) -> f64 {
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn label(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{}M", x / 1e6),
        x if x >= 1e3 => format!("{}k", x / 1e3),
        x => format!("{x}"),
    }
}

pub fn chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut xmax, mut ymax) = (1.0f64, 0.0f64);
    for p in pts {
        xmax = xmax.max(p.0);
        ymax = ymax.max(p.3).max(p.1);
    }
    let decades = xmax.log10().ceil().max(1.0);
    let ymax = nice_max(ymax.max(1e-9));
    let pw = W - L - R;
    let ph = H - T - B;
    let sx = |x: f64| L + pw * x.max(1.0).log10() / decades;
    let sy = |y: f64| T + ph * (1.0 - y / ymax);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        L + pw / 2.0,
        esc(title)
    );
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let py = sy(y);
        let _ = writeln!(
            o,
            r##"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            L + pw
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            py + 4.0,
            (y * 100.0).round() / 100.0
        );
    }
    for d in 0..=decades as i32 {
        let x = 10f64.powi(d);
        let px = sx(x);
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{T}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            T + ph
        );
        let _ = writeln!(
            o,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            T + ph + 16.0,
            label(x)
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        L + pw / 2.0,
        H - 18.0,
        esc(xlabel)
    );
    let _ = writeln!(
        o,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        T + ph / 2.0,
        T + ph / 2.0,
        esc(ylabel)
    );
    for (i, s) in series.iter().enumerate() {
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            s.color
        );
        for p in &s.points {
            let (px, lo, hi) = (sx(p.0), sy(p.2), sy(p.3));
            let _ = writeln!(
                o,
                r#"<line x1="{px:.1}" y1="{lo:.1}" x2="{px:.1}" y2="{hi:.1}" stroke="{}"/>"#,
                s.color
            );
            let _ = writeln!(
                o,
                r#"<circle cx="{px:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                sy(p.1),
                s.color
            );
        }
        let ly = T + 14.0 + 20.0 * i as f64;
        let lx = L + pw + 14.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 24.0,
            s.color
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}
