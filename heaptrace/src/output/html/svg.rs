//! Small SVG charts of our own, not plotters: a chart here is a frame,
//! axes with nice ticks, polylines and marks. Plotters would add a
//! dependency (and, by default, system fonts through font-kit) to draw the
//! same, and its output gives a mark neither a class, nor a `<title>` for
//! hover text, nor `data-*` attributes; here every data point is one
//! element a test (or a reader's browser) can count and hover.

use std::fmt::Write;

/// Escapes text for HTML and SVG, in element content and in quoted
/// attributes: a process is named by whoever started it, and a JS function
/// by whoever wrote it (`<script>` in a comm must stay text).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A linear (or log10) map from data to pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub from: f64,
    pub to: f64,
    pub log: bool,
}

impl Scale {
    pub fn at(&self, v: f64) -> f64 {
        let (lo, hi, v) = if self.log {
            (self.lo.log10(), self.hi.log10(), v.max(self.lo).log10())
        } else {
            (self.lo, self.hi, v)
        };
        let span = if hi > lo { hi - lo } else { 1.0 };
        self.from + (v - lo) / span * (self.to - self.from)
    }
}

pub const WIDTH: f64 = 900.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One chart being drawn: its scales, its elements, and how many data
/// points it holds (its `data-points`).
pub struct Chart {
    pub x: Scale,
    pub y: Scale,
    height: f64,
    body: String,
    points: usize,
    data: Vec<(&'static str, usize)>,
}

impl Chart {
    /// A chart `height` pixels high over `x` (lo, hi) and `y` (lo, hi).
    pub fn new(height: f64, x: (f64, f64), y: (f64, f64), ylog: bool) -> Self {
        let (x0, x1) = if x.1 > x.0 { x } else { (x.0 - 1.0, x.0 + 1.0) };
        let (y0, y1) = if y.1 > y.0 { y } else { (y.0, y.0 + 1.0) };
        Chart {
            x: Scale { lo: x0, hi: x1, from: LEFT, to: WIDTH - RIGHT, log: false },
            y: Scale { lo: y0, hi: y1, from: height - BOTTOM, to: TOP, log: ylog },
            height,
            body: String::new(),
            points: 0,
            data: Vec::new(),
        }
    }

    /// Grid lines and labels: `x` and `y` ticks as (value, label).
    pub fn axes(&mut self, xticks: &[(f64, String)], yticks: &[(f64, String)]) {
        let (l, r, t, b) = (self.x.from, self.x.to, self.y.to, self.y.from);
        let _ = write!(
            self.body,
            r#"<g class="axes"><rect class="frame" x="{l}" y="{t}" width="{:.1}" height="{:.1}"/>"#,
            r - l,
            b - t
        );
        for (v, label) in yticks {
            let y = self.y.at(*v);
            let _ = write!(
                self.body,
                r#"<line class="grid" x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}"/><text class="ytick" x="{:.1}" y="{:.1}">{}</text>"#,
                l - 4.0,
                y + 4.0,
                esc(label)
            );
        }
        for (v, label) in xticks {
            let x = self.x.at(*v);
            let _ = write!(
                self.body,
                r#"<line class="grid" x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}"/><text class="xtick" x="{x:.1}" y="{:.1}">{}</text>"#,
                b + 16.0,
                esc(label)
            );
        }
        self.body.push_str("</g>");
    }

    /// A line through `points` (data coordinates), with its own
    /// `data-points`. Several lines may share the same points (RSS and
    /// committed per snapshot), so the chart's count is [`Chart::add_points`]'s.
    pub fn polyline(&mut self, class: &str, title: &str, points: impl Iterator<Item = (f64, f64)>) -> usize {
        let mut coords = String::new();
        let mut n = 0;
        for (x, y) in points {
            let _ = write!(coords, "{:.1},{:.1} ", self.x.at(x), self.y.at(y));
            n += 1;
        }
        if n > 0 {
            let _ = write!(
                self.body,
                r#"<polyline class="{class}" data-points="{n}" points="{}"><title>{}</title></polyline>"#,
                coords.trim_end(),
                esc(title)
            );
        }
        n
    }

    /// Points drawn by polylines, counted once in the chart's `data-points`.
    pub fn add_points(&mut self, n: usize) {
        self.points += n;
    }

    /// One data point as a circle with hover text.
    pub fn circle(&mut self, class: &str, x: f64, y: f64, r: f64, title: &str) {
        let _ = write!(
            self.body,
            r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="{r}"><title>{}</title></circle>"#,
            self.x.at(x),
            self.y.at(y),
            esc(title)
        );
        self.points += 1;
    }

    /// A line between two data points that is not itself a data point (a
    /// GC's drop, a fitted line, a limit).
    pub fn segment(&mut self, class: &str, from: (f64, f64), to: (f64, f64), title: &str) {
        let _ = write!(
            self.body,
            r#"<line class="{class}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"><title>{}</title></line>"#,
            self.x.at(from.0),
            self.y.at(from.1),
            self.x.at(to.0),
            self.y.at(to.1),
            esc(title)
        );
    }

    /// A bar from `y0` to `y1` between `x0` and `x1` (data coordinates),
    /// counted as one data point, with `data-count`.
    pub fn bar(&mut self, class: &str, (x0, x1): (f64, f64), (y0, y1): (f64, f64), count: u64, title: &str) {
        let (px0, px1) = (self.x.at(x0), self.x.at(x1));
        let (py0, py1) = (self.y.at(y0), self.y.at(y1));
        let _ = write!(
            self.body,
            r#"<rect class="{class}" data-count="{count}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            px0.min(px1),
            py0.min(py1),
            (px1 - px0).abs(),
            (py1 - py0).abs(),
            esc(title)
        );
        self.points += 1;
    }

    /// Text at a data point.
    pub fn label(&mut self, class: &str, x: f64, y: f64, text: &str) {
        let _ = write!(
            self.body,
            r#"<text class="{class}" x="{:.1}" y="{:.1}">{}</text>"#,
            self.x.at(x),
            self.y.at(y),
            esc(text)
        );
    }

    /// A `data-NAME="N"` attribute on the chart: how many points of one kind.
    pub fn count(&mut self, name: &'static str, n: usize) {
        self.data.push((name, n));
    }

    /// The chart's `<svg>`, with `data-points` (every point drawn) and a
    /// title for screen readers and hover.
    pub fn finish(self, class: &str, title: &str) -> String {
        let mut data = String::new();
        for (name, n) in &self.data {
            let _ = write!(data, r#" data-{name}="{n}""#);
        }
        format!(
            r#"<svg class="chart {class}" viewBox="0 0 {WIDTH} {h}" width="{WIDTH}" height="{h}" data-points="{}"{data} role="img" xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}</svg>"#,
            self.points,
            esc(title),
            self.body,
            h = self.height,
        )
    }
}

/// About `n` round ticks (1, 2 or 5 times a power of ten) from `lo` to `hi`.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * pow).find(|s| *s >= raw).unwrap_or(10.0 * pow);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Ticks for bytes from 0 to `hi`, round in the unit the top is shown in.
pub fn byte_ticks(hi: f64) -> Vec<(f64, String)> {
    let unit = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|&(u, _)| hi >= 2.0 * u as f64)
        .unwrap_or((1, "B"));
    let u = unit.0 as f64;
    nice_ticks(0.0, hi / u, 5).into_iter().map(|v| (v * u, format!("{} {}", trim(v), unit.1))).collect()
}

/// Ticks for milliseconds on a log scale: one per decade.
pub fn log_ms_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a..=b)
        .map(|e| 10f64.powi(e))
        .filter(|v| *v >= lo && *v <= hi)
        .map(|v| (v, format!("{} ms", trim(v))))
        .collect()
}

/// Time ticks over Unix times `lo`..`hi`, at round steps of the clock,
/// labelled `HH:MM:SS` (UTC, as the text output prints times).
pub fn time_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    const STEPS: [f64; 14] =
        [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0];
    let span = (hi - lo).max(1.0);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8.0)
        .unwrap_or_else(|| (span / 8.0 / 3600.0).ceil() * 3600.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).map(|t| (t, super::super::text::clock(t))).collect()
}

/// `2`, `2.5`, `0.1`: a tick value without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_markup_as_text() {
        assert_eq!(esc("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
        assert_eq!(esc(r#"a&b "c""#), "a&amp;b &quot;c&quot;");
        assert_eq!(esc("ok\u{1}"), "ok\u{fffd}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 0.7, 5), [0.0, 0.2, 0.4, 0.6000000000000001]);
        let b = byte_ticks(100.0 * 1048576.0);
        assert_eq!(
            b.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
            ["0 MiB", "20 MiB", "40 MiB", "60 MiB", "80 MiB", "100 MiB"]
        );
        assert_eq!(byte_ticks(100.0).last().unwrap().1, "100 B");
        let t = time_ticks(3600.0 + 5.0, 3600.0 + 65.0);
        assert_eq!(
            t.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
            ["01:00:10", "01:00:20", "01:00:30", "01:00:40", "01:00:50", "01:01:00"]
        );
        let l = log_ms_ticks(0.05, 200.0);
        assert_eq!(l.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(), ["0.1 ms", "1 ms", "10 ms", "100 ms"]);
    }

    #[test]
    fn every_point_is_an_element_and_counted() {
        let mut c = Chart::new(200.0, (0.0, 10.0), (0.0, 100.0), false);
        assert_eq!(c.polyline("rss", "RSS", (0..5).map(|i| (i as f64, 10.0 * i as f64))), 5);
        c.add_points(5);
        c.circle("gc", 1.0, 50.0, 2.0, "<b>");
        c.count("gcs", 1);
        let svg = c.finish("memory", "a & b");
        assert!(svg.contains(r#"data-points="6" data-gcs="1""#), "{svg}");
        assert!(svg.contains(r#"<polyline class="rss" data-points="5" points="72.0,172.0 "#), "{svg}");
        assert!(svg.contains("<title>&lt;b&gt;</title>") && svg.contains("<title>a &amp; b</title>"));
    }
}
