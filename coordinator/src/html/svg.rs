//! The HTML report's pictures, as inline SVG: charts with axes (the soak's RSS checkpoints and
//! trend, the overhead pairs, a metric's history) drawn with plotters' SVG backend, whose text
//! is plain SVG `<text>` in the viewer's sans-serif font (no font file is read), and small
//! hand-drawn figures (an interval against its threshold, a class's spread, retention churn).
//! Every text that comes from the report is escaped here.

use std::fmt::Write as _;

use plotters::prelude::*;

/// Fail, inconclusive and neutral colours, and the series colours (the CSS uses the same).
const RED: RGBColor = RGBColor(0xcf, 0x22, 0x2e);
const AMBER: RGBColor = RGBColor(0xbf, 0x87, 0x00);
const BLUE_: RGBColor = RGBColor(0x09, 0x69, 0xda);
const GREY: RGBColor = RGBColor(0x6e, 0x77, 0x81);
const ORANGE: RGBColor = RGBColor(0xe3, 0x6c, 0x09);

/// Escapes text for SVG (and HTML) content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The CSS colour of an outcome class (`pass`, `fail`, `inconclusive`).
pub(crate) fn outcome_colour(class: &str) -> &'static str {
    match class {
        "pass" => "#1a7f37",
        "fail" => "#cf222e",
        "inconclusive" => "#bf8700",
        _ => "#6e7781",
    }
}

/// A range that holds every value, padded by 8 % (and widened when the values are all equal).
fn padded(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > f64::EPSILON * hi.abs().max(1.0) {
        span * 0.08
    } else {
        (hi.abs() * 0.05).max(1.0)
    };
    (lo - pad, hi + pad)
}

/// A compact number for an axis tick: 3 significant digits with k/M/G suffixes.
pub(crate) fn compact(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled == scaled.trunc() {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    format!("{text}{suffix}")
}

/// What a chart could not draw, shown in its place.
fn failed(what: &str, error: impl std::fmt::Display) -> String {
    format!(
        "<p class=\"note\">The {} chart could not be drawn: {}</p>",
        escape(what),
        escape(&error.to_string())
    )
}

/// A chart's plotting area: `f64` × `f64` on the SVG backend.
type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart drawn by `draw` on a `size` SVG canvas with a white ground, its plotting area built
/// the charts' one way (margin, axis label room) over `x` × `y`; the SVG, or, if plotters fails,
/// a note saying the `what` chart could not be drawn.
fn chart_svg(
    what: &str,
    size: (u32, u32),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    draw: impl for<'a> FnOnce(&mut Chart<'a>) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(58)
            .build_cartesian_2d(x, y)?;
        draw(&mut chart)?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => failed(what, e),
    }
}

/// A horizontal reference line across a chart, with its label at the right.
pub(crate) struct Reference<'a> {
    /// Its y value.
    pub(crate) y: f64,
    /// Its label.
    pub(crate) label: &'a str,
}

/// Draws the series' legend at `position`, in the charts' one style.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// The soak's RSS checkpoints (MiB against equivalent hours since the warm-up) with the fitted
/// Theil–Sen line `intercept + slope × t` (bytes, seconds).
pub(crate) fn rss_chart(points: &[(f64, f64)], line: Option<(f64, f64)>) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let pts: Vec<(f64, f64)> = points.iter().map(|&(s, b)| (s / 3600.0, b / MIB)).collect();
    let (x0, x1) = padded(pts.iter().map(|p| p.0));
    let fitted: Vec<(f64, f64)> = line
        .map(|(intercept, slope)| {
            let first = pts.first().map_or(0.0, |p| p.0);
            let last = pts.last().map_or(1.0, |p| p.0);
            vec![
                (first, (intercept + slope * first * 3600.0) / MIB),
                (last, (intercept + slope * last * 3600.0) / MIB),
            ]
        })
        .unwrap_or_default();
    let (y0, y1) = padded(pts.iter().chain(&fitted).map(|p| p.1));
    // Enough decimals that neighbouring ticks differ.
    let digits = (-((y1 - y0) / 6.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    chart_svg("RSS", (560, 260), x0..x1, y0..y1, |chart| {
        chart
            .configure_mesh()
            .x_desc("equivalent hours after the warm-up")
            .y_desc("RSS (MiB)")
            .x_labels(8)
            .y_labels(6)
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 12))
            .y_label_formatter(&|v| format!("{v:.digits$}"))
            .draw()?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 3, BLUE_.mix(0.8).filled())),
            )?
            .label("checkpoint")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, BLUE_.filled()));
        if !fitted.is_empty() {
            chart
                .draw_series(LineSeries::new(fitted, RED.stroke_width(2)))?
                .label("Theil–Sen trend")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
        }
        draw_legend(chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// One overhead metric per pair (in pair order, tracked-first pairs in orange), with the
/// estimate, its 95 % interval as a band, and the budget when there is one.
pub(crate) fn pairs_chart(
    what: &str,
    values: &[(f64, bool)],
    estimate: Option<(f64, f64, f64)>,
    reference: Option<Reference<'_>>,
) -> String {
    let n = values.len().max(1) as f64;
    let (y0, y1) = padded(
        values
            .iter()
            .map(|v| v.0)
            .chain(estimate.iter().flat_map(|e| [e.0, e.1, e.2]))
            .chain(reference.iter().map(|r| r.y)),
    );
    chart_svg(what, (560, 260), 0.5..n + 0.5, y0..y1, |chart| {
        chart
            .configure_mesh()
            .x_desc("pair")
            .y_desc(what)
            .x_labels(10)
            .y_labels(6)
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 12))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| compact(*v))
            .draw()?;
        if let Some((est, lo, hi)) = estimate {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.5, lo), (n + 0.5, hi)],
                BLUE_.mix(0.12).filled(),
            )))?;
            chart
                .draw_series(LineSeries::new(
                    [(0.5, est), (n + 0.5, est)],
                    BLUE_.stroke_width(2),
                ))?
                .label("estimate and 95% interval")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], BLUE_.stroke_width(2))
                });
        }
        if let Some(r) = &reference {
            chart
                .draw_series(LineSeries::new(
                    [(0.5, r.y), (n + 0.5, r.y)],
                    RED.stroke_width(1),
                ))?
                .label(r.label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        }
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.1)
                    .map(|(i, v)| Circle::new(((i + 1) as f64, v.0), 3, GREY.filled())),
            )?
            .label("unprofiled first")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, GREY.filled()));
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.1)
                    .map(|(i, v)| Circle::new(((i + 1) as f64, v.0), 3, ORANGE.filled())),
            )?
            .label("tracked first")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, ORANGE.filled()));
        draw_legend(chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// A metric's value run by run, with a vertical line where each shift starts.
pub(crate) fn history_chart(what: &str, values: &[f64], change_points: &[usize]) -> String {
    let n = values.len().max(1) as f64;
    let (y0, y1) = padded(values.iter().copied());
    chart_svg(what, (560, 220), 0.5..n + 0.5, y0..y1, |chart| {
        chart
            .configure_mesh()
            .x_desc("run")
            .y_desc(what)
            .x_labels(10)
            .y_labels(5)
            .light_line_style(TRANSPARENT)
            .label_style(("sans-serif", 12))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| compact(*v))
            .draw()?;
        for &c in change_points.iter().filter(|&&c| c < values.len()) {
            let x = c as f64 + 0.5;
            chart.draw_series(LineSeries::new([(x, y0), (x, y1)], AMBER.stroke_width(2)))?;
        }
        let pts: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| ((i + 1) as f64, v))
            .collect();
        chart.draw_series(LineSeries::new(pts.iter().copied(), BLUE_))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE_.filled())))?;
        Ok(())
    })
}

/// An interval bar: the value's 95 % interval (or the point alone) against the range it must
/// stay in, `[lower, upper]` (a lower bound for two-sided checks only).
pub(crate) fn interval_bar(
    value: f64,
    interval: Option<(f64, f64)>,
    lower: Option<f64>,
    upper: f64,
    outcome: &str,
) -> String {
    const W: f64 = 220.0;
    const H: f64 = 20.0;
    let (lo, hi) = interval.unwrap_or((value, value));
    let mut range = padded([
        value,
        lo,
        hi,
        upper,
        lower.unwrap_or(upper),
        0.0_f64.min(lo),
    ]);
    if range.0 < 0.0 && lo >= 0.0 && lower.is_none_or(|l| l >= 0.0) {
        range.0 = 0.0;
    }
    let x = |v: f64| 6.0 + (v - range.0) / (range.1 - range.0) * (W - 12.0);
    let colour = outcome_colour(outcome);
    let mut s = format!(
        "<svg class=\"bar\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    );
    // The allowed region.
    let allowed_from = lower.map_or(x(range.0), x);
    write!(
        s,
        "<rect x=\"{:.1}\" y=\"6\" width=\"{:.1}\" height=\"8\" fill=\"#dafbe1\"/>",
        allowed_from,
        (x(upper) - allowed_from).max(0.0)
    )
    .ok();
    for bound in lower.into_iter().chain([upper]) {
        write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"2\" y2=\"18\" stroke=\"#cf222e\" stroke-width=\"1.5\" stroke-dasharray=\"3 2\"/>",
            x(bound)
        ).ok();
    }
    if interval.is_some() {
        write!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"10\" y2=\"10\" stroke=\"{colour}\" stroke-width=\"3\"/>",
            x(lo),
            x(hi)
        ).ok();
    }
    write!(
        s,
        "<circle cx=\"{:.1}\" cy=\"10\" r=\"4\" fill=\"{colour}\"/></svg>",
        x(value)
    )
    .ok();
    s
}

/// Most values a spread strip draws as dots; more are drawn as columns.
const STRIP_DOTS: usize = 200;

/// A hardware class's spread of one metric: a dot per agent (its id as the tooltip), the
/// median as a tick, and the threshold when there is one. A class of more than [`STRIP_DOTS`]
/// agents gets a column per 4 pixels of the strip instead, as tall as its share of the fullest
/// column, with how many agents it holds and their range as the tooltip: the strip's size does
/// not grow with the class.
pub(crate) fn spread_strip(values: &[(&str, f64)], median: f64, threshold: Option<f64>) -> String {
    const W: f64 = 260.0;
    const H: f64 = 24.0;
    let range = padded(values.iter().map(|v| v.1).chain([median]).chain(threshold));
    let x = |v: f64| 6.0 + (v - range.0) / (range.1 - range.0) * (W - 12.0);
    let mut s = format!(
        "<svg class=\"strip\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <line x1=\"6\" x2=\"{}\" y1=\"12\" y2=\"12\" stroke=\"#d0d7de\"/>",
        W - 6.0
    );
    if let Some(t) = threshold {
        write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"2\" y2=\"22\" stroke=\"#cf222e\" stroke-width=\"1.5\" stroke-dasharray=\"3 2\"/>",
            x(t)
        ).ok();
    }
    write!(
        s,
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"4\" y2=\"20\" stroke=\"#24292f\" stroke-width=\"2\"/>",
        x(median)
    ).ok();
    if values.len() > STRIP_DOTS {
        const COLUMN: f64 = 4.0;
        let columns = ((W - 12.0) / COLUMN) as usize;
        // Per column: how many values, the smallest and the largest.
        let mut bins = vec![(0usize, f64::INFINITY, f64::NEG_INFINITY); columns];
        for &(_, v) in values {
            let i = (((x(v) - 6.0) / COLUMN).max(0.0) as usize).min(columns - 1);
            let bin = &mut bins[i];
            *bin = (bin.0 + 1, bin.1.min(v), bin.2.max(v));
        }
        let fullest = bins.iter().map(|b| b.0).max().unwrap_or(1).max(1);
        for (i, &(n, lo, hi)) in bins.iter().enumerate().filter(|(_, b)| b.0 > 0) {
            let h = 3.0 + 15.0 * n as f64 / fullest as f64;
            write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"{h:.1}\" fill=\"#0969da\" fill-opacity=\"0.6\"><title>{n} agents: {} to {}</title></rect>",
                6.0 + i as f64 * COLUMN,
                12.0 - h / 2.0,
                compact(lo),
                compact(hi)
            ).ok();
        }
    } else {
        for (agent, v) in values {
            write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"12\" r=\"4\" fill=\"#0969da\" fill-opacity=\"0.6\"><title>{}: {}</title></circle>",
                x(*v),
                escape(agent),
                compact(*v)
            ).ok();
        }
    }
    s.push_str("</svg>");
    s
}

/// One bar of a churn chart: its label, value, and the limit it must stay within, if any.
pub(crate) struct ChurnBar<'a> {
    /// What it counts.
    pub(crate) label: &'a str,
    /// The count.
    pub(crate) value: f64,
    /// Its text.
    pub(crate) text: String,
    /// The limit, if any.
    pub(crate) limit: Option<f64>,
}

/// Horizontal bars of one group of retention counters (segments, or bytes), on one scale.
pub(crate) fn churn_bars(bars: &[ChurnBar<'_>]) -> String {
    const LABEL_W: f64 = 150.0;
    const BAR_W: f64 = 260.0;
    const ROW: f64 = 22.0;
    let h = ROW * bars.len() as f64 + 4.0;
    let top = bars
        .iter()
        .flat_map(|b| [b.value, b.limit.unwrap_or(0.0)])
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let w = LABEL_W + BAR_W + 110.0;
    let mut s = format!(
        "<svg class=\"churn\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 2.0 + ROW * i as f64;
        let len = bar.value / top * BAR_W;
        let over = bar.limit.is_some_and(|l| bar.value > l);
        let fill = if over { "#cf222e" } else { "#0969da" };
        write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#24292f\">{}</text>\
             <rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{fill}\" fill-opacity=\"0.75\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#24292f\">{}</text>",
            LABEL_W - 6.0,
            y + 12.0,
            escape(bar.label),
            y + 1.0,
            len.max(1.0),
            LABEL_W + len.max(1.0) + 6.0,
            y + 12.0,
            escape(&bar.text)
        ).ok();
        if let Some(limit) = bar.limit {
            write!(
                s,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#cf222e\" stroke-width=\"1.5\" stroke-dasharray=\"3 2\"/>",
                LABEL_W + limit / top * BAR_W,
                y - 1.0,
                y + 17.0
            ).ok();
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_report_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let strip = spread_strip(&[("<b>a</b>", 1.0), ("b", 2.0)], 1.5, Some(3.0));
        assert!(strip.contains("&lt;b&gt;a&lt;/b&gt;"), "{strip}");
        assert!(!strip.contains("<b>"));
    }

    #[test]
    fn charts_draw_svg_even_for_flat_or_single_values() {
        let rss = rss_chart(&[(0.0, 1e7), (3600.0, 1e7)], Some((1e7, 0.0)));
        assert!(rss.starts_with("<svg"), "{rss}");
        assert!(rss.contains("<circle"));
        let pairs = pairs_chart(
            "runtime_overhead_pct",
            &[(5.0, false)],
            Some((5.0, 5.0, 5.0)),
            Some(Reference {
                y: 10.0,
                label: "budget <10%>",
            }),
        );
        assert!(pairs.starts_with("<svg"), "{pairs}");
        assert!(pairs.contains("budget &lt;10%&gt;"));
        let history = history_chart("x", &[], &[3]);
        assert!(history.starts_with("<svg"), "{history}");
    }

    #[test]
    fn a_large_class_is_a_strip_of_columns_that_counts_every_agent() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("agent-{i}")).collect();
        let values: Vec<(&str, f64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), (i % 100) as f64))
            .collect();
        let strip = spread_strip(&values, 49.5, Some(120.0));
        assert!(!strip.contains("<circle"), "{strip}");
        assert!(!strip.contains("agent-"));
        // Every value is in one column, whose tooltip counts it.
        let counted: usize = strip
            .split("<title>")
            .skip(1)
            .map(|t| t.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(counted, values.len());
        assert!(strip.len() < 8 * 1024, "{} bytes", strip.len());
        // A small class keeps its dots.
        let small = spread_strip(&values[..STRIP_DOTS], 49.5, None);
        assert_eq!(small.matches("<circle").count(), STRIP_DOTS);
    }

    #[test]
    fn compact_numbers_keep_three_digits() {
        assert_eq!(compact(85.654), "85.7");
        assert_eq!(compact(26_425.8), "26.4k");
        assert_eq!(compact(62_017_628.0), "62.0M");
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(1.234), "1.23");
    }
}
