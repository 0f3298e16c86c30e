//! A hand-written SVG of a run: latency over time (per-second p50 and p99,
//! by scheduled send time) above the percentile distribution (HdrHistogram
//! style, the tail spread out on a log axis). Plain SVG with axes, labels
//! and units, readable in any browser or Markdown viewer.
use std::fmt::Write as _;

use crate::report::RunReport;
use crate::stats::Metric;
use crate::stats::PercentilePoint;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 340.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 90.0;
const GAP: f64 = 90.0;

const SERIES: [(Metric, &str, &str); 3] = [
    (Metric::Ack, "ack", "#1f77b4"),
    (Metric::Ttft, "first token", "#e6550d"),
    (Metric::Completion, "completion", "#2ca02c"),
];

/// Where a panel's plot area is on the canvas.
#[derive(Clone, Copy)]
struct Area {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// A linear or logarithmic value axis.
#[derive(Clone, Copy)]
struct Scale {
    min: f64,
    max: f64,
    log: bool,
}

impl Scale {
    /// Latencies that span more than ~1.5 decades go on a log axis, or the
    /// body of the distribution is squashed flat under its tail.
    fn for_latencies(values: impl Iterator<Item = f64>) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, 0.0_f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            return Self {
                min: 0.0,
                max: 1.0,
                log: false,
            };
        }
        if hi / lo > 30.0 {
            Self {
                min: 10f64.powf(lo.log10().floor()),
                max: 10f64.powf(hi.log10().ceil()),
                log: true,
            }
        } else {
            let step = nice_step(hi, 5);
            Self {
                min: 0.0,
                max: (hi / step).ceil().max(1.0) * step,
                log: false,
            }
        }
    }

    fn fraction(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.min).log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = Vec::new();
            let mut decade = self.min;
            let decades = (self.max / self.min).log10().round() as u32;
            while decade <= self.max * 1.0001 {
                ticks.push(decade);
                if decades <= 3 {
                    for m in [2.0, 5.0] {
                        if decade * m < self.max {
                            ticks.push(decade * m);
                        }
                    }
                }
                decade *= 10.0;
            }
            ticks
        } else {
            let step = nice_step(self.max - self.min, 5);
            let mut ticks = Vec::new();
            let mut v = self.min;
            while v <= self.max + step * 1e-6 {
                ticks.push(v);
                v += step;
            }
            ticks
        }
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving about `count` ticks.
fn nice_step(range: f64, count: u32) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / f64::from(count);
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

fn label_number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        trim_zeros(format!("{v:.2}"))
    } else {
        trim_zeros(format!("{v:.4}"))
    }
}

fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole SVG document for a run.
pub fn render(report: &RunReport) -> String {
    let height = TOP + PANEL_HEIGHT * 2.0 + GAP + 60.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="26" font-size="16" font-weight="bold">{}</text>
<text x="{LEFT}" y="46" fill="#444">{}</text>"##,
        escape(&report.label),
        escape(&subtitle(report))
    );
    let area = |i: f64| Area {
        x: LEFT,
        y: TOP + i * (PANEL_HEIGHT + GAP),
        w: WIDTH - LEFT - RIGHT,
        h: PANEL_HEIGHT,
    };
    latency_over_time(&mut svg, report, area(0.0));
    percentile_distribution(&mut svg, report, area(1.0));
    svg.push_str("</svg>\n");
    svg
}

fn subtitle(report: &RunReport) -> String {
    let s = &report.summary;
    let mut text = format!(
        "{:.0} acks/s · {} acked · {} failed · {} connections · {} B messages",
        s.throughput.acked_per_s, s.acked, s.failed, report.connections, report.message_bytes
    );
    if let Some(ack) = &s.latency_ms.ack {
        let _ = write!(
            text,
            " · ack p50 {} ms, p99 {} ms, p99.9 {} ms",
            label_number(ack.p50),
            label_number(ack.p99),
            label_number(ack.p999)
        );
    }
    text
}

fn latency_over_time(svg: &mut String, report: &RunReport, area: Area) {
    let timeline = &report.summary.timeline;
    let seconds = timeline.len().max(1) as f64;
    let x = Scale {
        min: 0.0,
        max: seconds,
        log: false,
    };
    let y = Scale::for_latencies(timeline.iter().flat_map(|s| {
        SERIES
            .iter()
            .flat_map(|(m, _, _)| [s.p50_ms(*m), s.p99_ms(*m)])
            .flatten()
    }));
    frame(
        svg,
        area,
        "Latency over time (per second of scheduled send time)",
        "time since start (s)",
        &y,
    );
    for tick in x.ticks() {
        let px = area.x + x.fraction(tick) * area.w;
        x_tick(svg, area, px, &label_number(tick));
    }
    let mut legend = Vec::new();
    for (metric, name, color) in SERIES {
        for (quantile, dashed) in [("p99", false), ("p50", true)] {
            let points: Vec<(f64, f64)> = timeline
                .iter()
                .filter_map(|s| {
                    let v = if dashed {
                        s.p50_ms(metric)
                    } else {
                        s.p99_ms(metric)
                    }?;
                    Some((
                        area.x + x.fraction(s.second as f64 + 0.5) * area.w,
                        area.y + (1.0 - y.fraction(v)) * area.h,
                    ))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            polyline(svg, &points, color, dashed);
            legend.push((format!("{name} {quantile}"), color, dashed));
        }
    }
    draw_legend(svg, area, &legend);
}

/// The x position of a percentile: 0 at 0%, 1 at 90%, 2 at 99%, 3 at 99.9%...
fn nines(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(1e-7);
    -remaining.log10()
}

fn percentile_distribution(svg: &mut String, report: &RunReport, area: Area) {
    let distributions = &report.summary.percentile_distribution;
    let plotted = |metric: Metric| -> Vec<PercentilePoint> {
        // The 100th percentile has no place on a "nines" axis; it is the max in the table.
        distributions
            .get(metric)
            .iter()
            .copied()
            .filter(|p| p.percentile < 100.0)
            .collect()
    };
    let max_nines = SERIES
        .iter()
        .flat_map(|(m, _, _)| plotted(*m))
        .map(|p| nines(p.percentile))
        .fold(2.0_f64, f64::max)
        .ceil()
        .min(6.0);
    let x = Scale {
        min: 0.0,
        max: max_nines,
        log: false,
    };
    let y = Scale::for_latencies(
        SERIES
            .iter()
            .flat_map(|(m, _, _)| plotted(*m))
            .map(|p| p.ms),
    );
    frame(
        svg,
        area,
        "Latency by percentile (whole run)",
        "percentile",
        &y,
    );
    for n in 0..=(max_nines as u32) {
        let label = match n {
            0 => "0%".to_owned(),
            1 => "90%".to_owned(),
            n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
        };
        let px = area.x + x.fraction(f64::from(n)) * area.w;
        x_tick(svg, area, px, &label);
    }
    let mut legend = Vec::new();
    for (metric, name, color) in SERIES {
        let points: Vec<(f64, f64)> = plotted(metric)
            .iter()
            .map(|p| {
                (
                    area.x + x.fraction(nines(p.percentile)) * area.w,
                    area.y + (1.0 - y.fraction(p.ms)) * area.h,
                )
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        polyline(svg, &points, color, false);
        legend.push((name.to_owned(), color, false));
    }
    draw_legend(svg, area, &legend);
}

/// Border, title, y grid lines with labels in ms, and the x-axis title.
fn frame(svg: &mut String, area: Area, title: &str, x_title: &str, y: &Scale) {
    let Area { x, y: top, w, h } = area;
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top - 12.0,
        escape(title)
    );
    for tick in y.ticks() {
        let py = top + (1.0 - y.fraction(tick)) * h;
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#e3e3e3"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x + w,
            x - 6.0,
            py + 4.0,
            label_number(tick)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{x}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate({},{}) rotate(-90)" text-anchor="middle">latency (ms{})</text>"##,
        x + w / 2.0,
        top + h + 36.0,
        escape(x_title),
        x - 56.0,
        top + h / 2.0,
        if y.log { ", log scale" } else { "" }
    );
}

fn x_tick(svg: &mut String, area: Area, px: f64, label: &str) {
    let bottom = area.y + area.h;
    let _ = writeln!(
        svg,
        r##"<line x1="{px:.1}" y1="{bottom}" x2="{px:.1}" y2="{}" stroke="#333"/><line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{bottom}" stroke="#f0f0f0"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
        bottom + 5.0,
        area.y,
        bottom + 18.0,
        escape(label)
    );
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
    let mut coordinates = String::new();
    for (x, y) in points {
        let _ = write!(coordinates, "{x:.1},{y:.1} ");
    }
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
        coordinates.trim_end()
    );
    if points.len() == 1 {
        let (x, y) = points[0];
        let _ = writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
        );
    }
}

fn draw_legend(svg: &mut String, area: Area, entries: &[(String, &str, bool)]) {
    let x = area.x + area.w + 16.0;
    if entries.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{x}" y="{}" fill="#888">no samples</text>"##,
            area.y + 14.0
        );
    }
    for (i, (name, color, dashed)) in entries.iter().enumerate() {
        let y = area.y + 10.0 + i as f64 * 20.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 28.0,
            x + 34.0,
            y + 4.0,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(0.7, 5), 0.2);
        assert_eq!(nice_step(300.0, 5), 100.0);
    }

    #[test]
    fn wide_latency_ranges_use_a_log_axis() {
        let narrow = Scale::for_latencies([1.0, 3.0].into_iter());
        assert!(!narrow.log);
        assert!(narrow.max >= 3.0);
        let wide = Scale::for_latencies([0.2, 900.0].into_iter());
        assert!(wide.log);
        assert_eq!((wide.min, wide.max), (0.1, 1000.0));
        assert!(wide.ticks().contains(&1.0));
    }

    #[test]
    fn nines_put_percentiles_on_a_log_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}
