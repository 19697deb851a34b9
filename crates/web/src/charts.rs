//! Time-series charts drawn on the server as SVG: lines or bars over a time axis, with a value
//! axis in the series' unit and a hover target per bucket whose title lists every series'
//! value there (the browser shows it on hover, and assistive technology reads it). No script
//! and no inline style: the page's content security policy allows neither, and the charts work
//! without JavaScript; the dashboards' live updates swap a re-rendered chart in.
//!
//! A chart's geometry is computed here; [`ChartSvg`]'s template writes it, escaping every
//! label.

use askama::Template;
use time::OffsetDateTime;
use time::macros::format_description;

/// The drawing's size in SVG units; it scales to its container.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Above this many points per series, points are not drawn one by one (the line shows them
/// and the hover bands still give each value).
const MAX_MARKED_POINTS: usize = 120;
/// Series colours (CSS classes `s0` … `s7`); further series reuse them.
const PALETTE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Line,
    Bar,
}

/// One line or set of bars: a label and its buckets' (start, value), in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(OffsetDateTime, f64)>,
}

/// What to draw: the time window `[from, to)` in buckets of `step` seconds.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub kind: Kind,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub step: i64,
    pub unit: &'a str,
    /// What the chart shows, for its accessible name.
    pub title: &'a str,
}

#[derive(Debug)]
pub struct Tick {
    pub at: String,
    pub label: String,
}

#[derive(Debug)]
pub struct Path {
    pub class: String,
    pub d: String,
}

#[derive(Debug)]
pub struct Rect {
    pub class: String,
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
}

#[derive(Debug)]
pub struct Dot {
    pub class: String,
    pub cx: String,
    pub cy: String,
}

/// A bucket's hover target: the full height of the plot over the bucket's width.
#[derive(Debug)]
pub struct Band {
    pub x: String,
    pub width: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "app/chart.svg", escape = "html")]
pub struct ChartSvg {
    pub width: f64,
    pub height: f64,
    pub title: String,
    pub plot_left: f64,
    pub plot_right: f64,
    pub plot_top: f64,
    pub plot_bottom: f64,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub paths: Vec<Path>,
    pub rects: Vec<Rect>,
    pub dots: Vec<Dot>,
    pub bands: Vec<Band>,
    /// Points drawn, over every series (a test counts them).
    pub points: usize,
}

/// Three significant digits, thousands as `k` and millions as `M`, then the unit.
pub fn value_text(value: f64, unit: &str) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if scaled.abs() >= 100.0 || scaled == scaled.trunc() {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{scaled:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    if text == "-0" {
        text = "0".into();
    }
    text.push_str(suffix);
    with_unit(text, unit)
}

/// The labels of value ticks: as [`value_text`] gives them where that tells every tick apart;
/// where it does not (ticks half a unit apart around 120 all read "120" or "121" at three
/// significant digits), with as many decimals as the ticks' step needs.
fn tick_labels(ticks: &[f64], unit: &str) -> Vec<String> {
    let labels: Vec<String> = ticks.iter().map(|tick| value_text(*tick, unit)).collect();
    if labels.windows(2).all(|pair| pair[0] != pair[1]) {
        return labels;
    }
    let step = ticks
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .fold(f64::INFINITY, f64::min);
    let decimals = if step.is_finite() && step > 0.0 {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        0
    };
    ticks
        .iter()
        .map(|tick| {
            let mut text = format!("{tick:.decimals$}");
            if text.contains('.') {
                text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
            }
            if text == "-0" {
                text = "0".into();
            }
            with_unit(text, unit)
        })
        .collect()
}

/// `text` followed by `unit` as values are written: `12 kW`, `1.5%`.
fn with_unit(text: String, unit: &str) -> String {
    match unit {
        "" => text,
        "%" => format!("{text}%"),
        unit => format!("{text} {unit}"),
    }
}

/// Round tick values covering `[low, high]`: about five, at 1, 2 or 5 times a power of ten.
fn value_ticks(low: f64, high: f64) -> Vec<f64> {
    let span = (high - low).max(f64::EPSILON);
    let raw = span / 4.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * power)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * power);
    let first = (low / step).floor() * step;
    // From at or below `low` to the first tick at or above `high`; each computed from the
    // first, so that no rounding error accumulates into a label.
    let mut ticks: Vec<f64> = Vec::new();
    while ticks.last().is_none_or(|last| *last < high) && ticks.len() < 12 {
        ticks.push(first + step * ticks.len() as f64);
    }
    ticks
}

/// Time ticks at a round interval, about six across the window, labelled in UTC.
fn time_ticks(from: i64, to: i64) -> Vec<(i64, String)> {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 3_600;
    const DAY: i64 = 86_400;
    let span = (to - from).max(1);
    let interval = [
        MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        2 * DAY,
        7 * DAY,
        14 * DAY,
        30 * DAY,
        90 * DAY,
        365 * DAY,
    ]
    .into_iter()
    .find(|interval| span / interval <= 7)
    .unwrap_or(365 * DAY);
    let short = format_description!("[hour]:[minute]");
    let long = format_description!("[month repr:short] [day padding:none]");
    let mut ticks = Vec::new();
    let mut at = from.div_euclid(interval) * interval;
    if at < from {
        at += interval;
    }
    while at <= to {
        if let Ok(time) = OffsetDateTime::from_unix_timestamp(at) {
            let label = if interval >= DAY || (at % DAY == 0 && span > DAY) {
                time.format(long)
            } else {
                time.format(short)
            };
            ticks.push((at, label.unwrap_or_default()));
        }
        at += interval;
    }
    ticks
}

fn number(value: f64) -> String {
    format!("{value:.1}")
}

fn moment_text(at: OffsetDateTime, step: i64) -> String {
    let format = if step >= 86_400 {
        format_description!("[year]-[month]-[day] UTC")
    } else {
        format_description!("[year]-[month]-[day] [hour]:[minute] UTC")
    };
    at.format(format).unwrap_or_default()
}

/// The chart of `lines`, ready to render.
pub fn draw(chart: &Chart<'_>, lines: &[Line]) -> ChartSvg {
    let from = chart.from.unix_timestamp();
    let to = chart.to.unix_timestamp().max(from + chart.step.max(1));
    let (plot_left, plot_right) = (LEFT, WIDTH - RIGHT);
    let (plot_top, plot_bottom) = (TOP, HEIGHT - BOTTOM);
    let x_of =
        |at: i64| plot_left + (at - from) as f64 / (to - from) as f64 * (plot_right - plot_left);
    let values = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|(_, value)| *value))
        .filter(|value| value.is_finite());
    let (mut low, mut high) = values
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
            (low.min(value), high.max(value))
        });
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    if chart.kind == Kind::Bar || low > 0.0 && low < high * 0.5 {
        low = low.min(0.0);
    }
    if chart.kind == Kind::Bar {
        high = high.max(0.0);
    }
    if (high - low).abs() < f64::EPSILON {
        (low, high) = (low - 1.0, high + 1.0);
    }
    let ticks = value_ticks(low, high);
    let (low, high) = (
        ticks.first().copied().unwrap_or(low).min(low),
        ticks.last().copied().unwrap_or(high).max(high),
    );
    let y_of = |value: f64| plot_bottom - (value - low) / (high - low) * (plot_bottom - plot_top);
    let y_ticks = ticks
        .iter()
        .zip(tick_labels(&ticks, chart.unit))
        .map(|(tick, label)| Tick {
            at: number(y_of(*tick)),
            label,
        })
        .collect();
    let x_ticks = time_ticks(from, to)
        .into_iter()
        .map(|(at, label)| Tick {
            at: number(x_of(at)),
            label,
        })
        .collect();
    let bucket_width = (x_of(from + chart.step) - x_of(from)).max(0.5);
    let mut paths = Vec::new();
    let mut rects = Vec::new();
    let mut dots = Vec::new();
    let mut points = 0;
    for (index, line) in lines.iter().enumerate() {
        let class = format!("s{}", index % PALETTE);
        let visible: Vec<(i64, f64)> = line
            .points
            .iter()
            .map(|(at, value)| (at.unix_timestamp(), *value))
            .filter(|(at, value)| *at >= from && *at < to && value.is_finite())
            .collect();
        points += visible.len();
        match chart.kind {
            Kind::Line => {
                let mut d = String::new();
                let mut previous: Option<i64> = None;
                for (at, value) in &visible {
                    // A bucket without readings breaks the line rather than bridging the gap.
                    let verb = match previous {
                        Some(before) if at - before <= chart.step => 'L',
                        _ => 'M',
                    };
                    let x = x_of(*at) + bucket_width / 2.0;
                    d.push_str(&format!("{verb}{} {}", number(x), number(y_of(*value))));
                    previous = Some(*at);
                }
                if visible.len() <= MAX_MARKED_POINTS {
                    dots.extend(visible.iter().map(|(at, value)| Dot {
                        class: class.clone(),
                        cx: number(x_of(*at) + bucket_width / 2.0),
                        cy: number(y_of(*value)),
                    }));
                }
                if !d.is_empty() {
                    paths.push(Path {
                        class: class.clone(),
                        d,
                    });
                }
            }
            Kind::Bar => {
                let slot = bucket_width * 0.8 / lines.len().max(1) as f64;
                let zero = y_of(0.0_f64.clamp(low, high));
                for (at, value) in &visible {
                    let x = x_of(*at) + bucket_width * 0.1 + slot * index as f64;
                    let y = y_of(*value);
                    rects.push(Rect {
                        class: class.clone(),
                        x: number(x),
                        y: number(y.min(zero)),
                        width: number(slot.max(0.5)),
                        height: number((zero - y).abs().max(0.5)),
                    });
                }
            }
        }
    }
    // One hover target per bucket that has a value, titled with every series' value there.
    let mut moments: Vec<i64> = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|(at, _)| at.unix_timestamp()))
        .filter(|at| *at >= from && *at < to)
        .collect();
    moments.sort_unstable();
    moments.dedup();
    let bands = moments
        .into_iter()
        .map(|at| {
            let mut title = OffsetDateTime::from_unix_timestamp(at)
                .map(|time| moment_text(time, chart.step))
                .unwrap_or_default();
            for line in lines {
                if let Some((_, value)) = line
                    .points
                    .iter()
                    .find(|(point, _)| point.unix_timestamp() == at)
                {
                    title.push('\n');
                    if !line.label.is_empty() {
                        title.push_str(&line.label);
                        title.push_str(": ");
                    }
                    title.push_str(&value_text(*value, chart.unit));
                }
            }
            Band {
                x: number(x_of(at)),
                width: number(bucket_width),
                title,
            }
        })
        .collect();
    ChartSvg {
        width: WIDTH,
        height: HEIGHT,
        title: chart.title.to_owned(),
        plot_left,
        plot_right,
        plot_top,
        plot_bottom,
        y_ticks,
        x_ticks,
        paths,
        rects,
        dots,
        bands,
        points,
    }
}

/// A sparkline: one series as a small line without axes, its values in `title` for hover and
/// assistive technology.
#[derive(Template)]
#[template(path = "app/sparkline.svg", escape = "html")]
pub struct SparklineSvg {
    pub title: String,
    pub d: String,
    pub width: f64,
    pub height: f64,
    /// Points drawn (a test counts them).
    pub points: usize,
}

/// `values` (oldest first, evenly spaced) as a sparkline whose accessible name is `title`;
/// the scale runs from zero to the largest value.
pub fn sparkline(values: &[f64], title: &str) -> String {
    const SPARK_WIDTH: f64 = 120.0;
    const SPARK_HEIGHT: f64 = 24.0;
    let high = values
        .iter()
        .copied()
        .filter(|value| value.is_finite())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let step = SPARK_WIDTH / (values.len().max(2) - 1) as f64;
    let d = values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let value = if value.is_finite() { *value } else { 0.0 };
            let y = SPARK_HEIGHT - 1.0 - value.max(0.0) / high * (SPARK_HEIGHT - 2.0);
            let command = if index == 0 { 'M' } else { 'L' };
            format!("{command}{} {}", number(index as f64 * step), number(y))
        })
        .collect::<Vec<_>>()
        .join(" ");
    SparklineSvg {
        title: title.to_owned(),
        d,
        width: SPARK_WIDTH,
        height: SPARK_HEIGHT,
        points: values.len(),
    }
    .render()
    .unwrap_or_else(|error| {
        tracing::error!(%error, "a sparkline failed to render");
        String::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_764_892_800 + minute * 60).unwrap()
    }

    fn chart(kind: Kind) -> Chart<'static> {
        Chart {
            kind,
            from: at(0),
            to: at(60),
            step: 60,
            unit: "kW",
            title: "power <kW>",
        }
    }

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(value_text(0.0, "kW"), "0 kW");
        assert_eq!(value_text(-0.0, ""), "0");
        assert_eq!(value_text(12.345, "kW"), "12.3 kW");
        assert_eq!(value_text(1.5, "%"), "1.5%");
        assert_eq!(value_text(25_000.0, "V"), "25k V");
        assert_eq!(value_text(2_500_000.0, ""), "2.5M");
        assert_eq!(value_text(400.0, "V"), "400 V");
    }

    #[test]
    fn value_ticks_are_round_and_cover_the_range() {
        assert_eq!(value_ticks(0.0, 220.0), [0.0, 100.0, 200.0, 300.0]);
        let ticks = value_ticks(380.0, 419.0);
        assert!(
            ticks[0] <= 380.0 && *ticks.last().unwrap() >= 419.0,
            "{ticks:?}"
        );
        assert_eq!(ticks, [380.0, 390.0, 400.0, 410.0, 420.0]);
    }

    #[test]
    fn close_ticks_are_labelled_apart() {
        // One reading of 123.4 kW: the axis spans a unit either side, in half units.
        let ticks = value_ticks(122.4, 124.4);
        assert_eq!(ticks, [122.0, 122.5, 123.0, 123.5, 124.0, 124.5]);
        assert_eq!(
            tick_labels(&ticks, "kW"),
            [
                "122 kW", "122.5 kW", "123 kW", "123.5 kW", "124 kW", "124.5 kW"
            ]
        );
        // Labels that already differ stay as values are written everywhere else.
        assert_eq!(
            tick_labels(&[0.0, 10_000.0, 20_000.0], ""),
            ["0", "10k", "20k"]
        );
    }

    #[test]
    fn an_hour_is_marked_every_ten_minutes_and_a_week_by_day() {
        let hour = time_ticks(at(0).unix_timestamp(), at(60).unix_timestamp());
        assert_eq!(
            hour.iter()
                .map(|(_, label)| label.as_str())
                .collect::<Vec<_>>(),
            [
                "00:00", "00:10", "00:20", "00:30", "00:40", "00:50", "01:00"
            ]
        );
        let week = time_ticks(at(0).unix_timestamp(), at(7 * 1440).unix_timestamp());
        assert_eq!(week.first().unwrap().1, "Dec 5");
        assert!(week.len() <= 8, "{week:?}");
    }

    #[test]
    fn a_gap_breaks_the_line_and_every_bucket_has_a_titled_hover_target() {
        let lines = [
            Line {
                label: "device-1".into(),
                points: vec![(at(1), 10.0), (at(2), 12.0), (at(5), 11.0)],
            },
            Line {
                label: "device-2".into(),
                points: vec![(at(2), 3.0)],
            },
        ];
        let svg = draw(&chart(Kind::Line), &lines);
        assert_eq!(svg.points, 4);
        assert_eq!(svg.paths.len(), 2);
        assert_eq!(svg.paths[0].d.matches('M').count(), 2, "{}", svg.paths[0].d);
        assert_eq!(svg.dots.len(), 4);
        assert_eq!(svg.bands.len(), 3);
        assert_eq!(
            svg.bands[1].title,
            "2025-12-05 00:02 UTC\ndevice-1: 12 kW\ndevice-2: 3 kW"
        );
        let markup = svg.render().unwrap();
        assert!(markup.contains("power &#60;kW&#62;"), "{markup}");
        assert!(!markup.contains("<kW>"));
    }

    #[test]
    fn bars_stand_on_zero_and_points_outside_the_window_are_left_out() {
        let lines = [Line {
            label: String::new(),
            points: vec![(at(-5), 99.0), (at(3), 4.0), (at(70), 99.0)],
        }];
        let svg = draw(&chart(Kind::Bar), &lines);
        assert_eq!(svg.points, 1);
        assert_eq!(svg.rects.len(), 1);
        let bar = &svg.rects[0];
        let bottom: f64 = bar.y.parse::<f64>().unwrap() + bar.height.parse::<f64>().unwrap();
        assert!((bottom - (HEIGHT - BOTTOM)).abs() < 0.2, "{bar:?}");
        assert!(svg.y_ticks.iter().any(|tick| tick.label == "0 kW"));
    }

    #[test]
    fn an_empty_chart_still_has_axes() {
        let svg = draw(&chart(Kind::Line), &[]);
        assert_eq!(svg.points, 0);
        assert!(!svg.y_ticks.is_empty() && !svg.x_ticks.is_empty());
        assert!(svg.render().is_ok());
    }
}
