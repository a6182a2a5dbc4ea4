//! When each step of a build ran, and `--timings`' HTML page of it: one bar per step on a time
//! axis, in the manner of `cargo build --timings`, self-contained (inline CSS and SVG, no script).

use std::fmt::Write as _;

use serde::Serialize;

use crate::pipeline::Done;

/// Where a step's result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Found in the local cache: nothing ran.
    Cached,
    /// Fetched from a shared cache (not yet used: room for a registry cache).
    #[allow(dead_code)]
    Pulled,
    /// Ran here.
    Ran,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Cached => "cached",
            Source::Pulled => "pulled",
            Source::Ran => "ran",
        }
    }
}

/// One step: a container stage, package, image or verify.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub source: Source,
    /// Seconds since the run began.
    pub start: f64,
    pub seconds: f64,
}

impl Step {
    pub fn new(name: &str, cached: bool, start: f64, seconds: f64) -> Step {
        Step {
            name: name.to_string(),
            source: if cached { Source::Cached } else { Source::Ran },
            start,
            seconds,
        }
    }

    pub fn of_stage(done: &Done) -> Step {
        let mut step = Step::new(&done.name, done.cached, done.start, done.seconds);
        if let Some(crate::store::Origin::Remote { .. }) = done.origin {
            step.source = Source::Pulled;
        }
        step
    }
}

/// A run's steps on one time axis and its total.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// What was built (the artifact's name).
    pub title: String,
    pub steps: Vec<Step>,
    /// The whole run, from before fetching to the end of verify.
    pub seconds: f64,
}

/// Width of the bars' area in the SVG, and the height of one row.
const WIDTH: f64 = 900.0;
const LABEL: f64 = 140.0;
const ROW: f64 = 24.0;

impl Timeline {
    /// The page: a bar per step at its start, coloured by where its result came from, a time
    /// axis, `floor` (what it is, seconds) as a marked line when given, and a table of the figures.
    pub fn html(&self, floor: Option<(&str, f64)>) -> String {
        let svg = self.svg(self.span(floor), floor);
        let rows = self.rows(floor);
        let ran: f64 = self
            .steps
            .iter()
            .filter(|s| s.source == Source::Ran)
            .map(|s| s.seconds)
            .sum();
        page(&escape(&self.title), self.seconds, ran, &svg, &rows)
    }

    /// The seconds the time axis covers: the last step's end, the total or the floor, at least 1.
    fn span(&self, floor: Option<(&str, f64)>) -> f64 {
        self.steps
            .iter()
            .map(|s| s.start + s.seconds)
            .chain([self.seconds, floor.map_or(0.0, |f| f.1)])
            .fold(0.0_f64, f64::max)
            .max(1.0)
    }

    /// The chart: the time axis, a bar per step and the floor's line.
    fn svg(&self, span: f64, floor: Option<(&str, f64)>) -> String {
        let height = (self.steps.len() as f64 + 2.0) * ROW + 10.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" role="img">"#,
            LABEL + WIDTH + 60.0
        );
        let axis_y = (self.steps.len() as f64 + 1.0) * ROW;
        write_axis(&mut svg, span, axis_y);
        for (i, step) in self.steps.iter().enumerate() {
            write_bar(&mut svg, span, i, step);
        }
        if let Some((what, floor)) = floor {
            let _ = writeln!(
                svg,
                r#"<line class="floor" x1="{0:.1}" y1="0" x2="{0:.1}" y2="{axis_y}"/><text class="floor" x="{0:.1}" y="{1}">{2} {3:.1} s</text>"#,
                x_of(span, floor),
                axis_y - 4.0,
                escape(what),
                floor
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// The table's rows: one per step, then the floor's when given.
    fn rows(&self, floor: Option<(&str, f64)>) -> String {
        let mut rows = String::new();
        for step in &self.steps {
            let _ = writeln!(
                rows,
                "<tr><td>{}</td><td class=\"{1}\">{1}</td><td>{2:.1}</td><td>{3:.1}</td></tr>",
                escape(&step.name),
                step.source.as_str(),
                step.start,
                step.seconds
            );
        }
        if let Some((what, f)) = floor {
            let what = escape(what);
            let _ = writeln!(
                rows,
                "<tr><th>{what}</th><td></td><td></td><td>{f:.1}</td></tr>"
            );
        }
        rows
    }
}

/// The x of time `t` on an axis of `span` seconds.
fn x_of(span: f64, t: f64) -> f64 {
    LABEL + t / span * WIDTH
}

/// The time axis: about ten ticks at round seconds, each with a grid line.
fn write_axis(svg: &mut String, span: f64, axis_y: f64) {
    let tick = nice_tick(span / 10.0);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let _ = writeln!(
            svg,
            r#"<line class="grid" x1="{0:.1}" y1="0" x2="{0:.1}" y2="{axis_y}"/><text class="tick" x="{0:.1}" y="{1}">{2} s</text>"#,
            x_of(span, t),
            axis_y + 14.0,
            trim(t)
        );
        t += tick;
    }
}

/// The bar of the `i`th step, with its name before it and its seconds after it.
fn write_bar(svg: &mut String, span: f64, i: usize, step: &Step) {
    let y = i as f64 * ROW + 4.0;
    let width = (step.seconds / span * WIDTH).max(1.0);
    let name = escape(&step.name);
    let source = step.source.as_str();
    let _ = writeln!(
        svg,
        r#"<g class="step {source}"><text class="name" x="{}" y="{}">{name}</text><rect x="{:.1}" y="{y}" width="{width:.1}" height="{}"><title>{name}: {source}, {:.1} s from {:.1} s</title></rect><text class="secs" x="{:.1}" y="{}">{:.1} s</text></g>"#,
        LABEL - 8.0,
        y + 14.0,
        x_of(span, step.start),
        ROW - 8.0,
        step.seconds,
        step.start,
        x_of(span, step.start) + width + 4.0,
        y + 14.0,
        step.seconds
    );
}

/// The whole page around the chart and the table's rows; `title` is already escaped.
fn page(title: &str, total: f64, ran: f64, svg: &str, rows: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>python-fips timings: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
text {{ font-size: 12px; }}
text.name {{ text-anchor: end; }}
text.tick {{ text-anchor: middle; fill: #666; }}
line.grid {{ stroke: #ddd; }}
line.floor {{ stroke: #c00; stroke-dasharray: 4 3; }}
text.floor {{ fill: #c00; }}
.ran rect {{ fill: #3a7bd5; }}
.cached rect {{ fill: #bbb; }}
.pulled rect {{ fill: #4caf50; }}
td.ran {{ color: #3a7bd5; }} td.cached {{ color: #888; }} td.pulled {{ color: #4caf50; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ padding: 2px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Total {total:.1} s, of which {ran:.1} s in steps that ran. Bars: <span style="color:#3a7bd5">ran</span>, <span style="color:#888">cached</span>, <span style="color:#4caf50">pulled</span>.</p>
{svg}<table>
<tr><th>step</th><th>source</th><th>start s</th><th>seconds</th></tr>
{rows}<tr><th>total</th><td></td><td></td><td>{total:.1}</td></tr>
</table>
</body>
</html>
"#
    )
}

/// `text` safe inside HTML and SVG text and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest of 1, 2, 5 × 10ⁿ seconds at least `raw`.
fn nice_tick(raw: f64) -> f64 {
    let mut tick = 0.1;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if tick * m >= raw {
                return tick * m;
            }
        }
        tick *= 10.0;
    }
}

fn trim(t: f64) -> String {
    let s = format!("{t:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        Timeline {
            title: "python-fips-3.13.15 <test>".into(),
            steps: vec![
                Step::new("openssl", true, 0.5, 0.0),
                Step::new("python", false, 0.6, 61.25),
                Step::new("fin<al>ize & co", false, 61.9, 7.5),
                Step::new("package", false, 69.4, 3.0),
            ],
            seconds: 80.0,
        }
    }

    #[test]
    fn the_page_has_one_bar_per_step_with_its_name_and_seconds() {
        let page = timeline().html(Some(("floor python.sh", 300.0)));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("<rect ").count(), 4, "{page}");
        assert_eq!(page.matches("<g class=\"step ").count(), 4);
        assert_eq!(page.matches("<g class=\"step cached\"").count(), 1);
        assert_eq!(page.matches("<g class=\"step ran\"").count(), 3);
        assert!(page.contains(">python</text>"));
        assert!(page.contains(">61.2 s</text>") || page.contains(">61.3 s</text>"));
        assert!(page.contains(">7.5 s</text>"));
        assert!(page.contains("floor python.sh 300.0 s"));
        assert!(page.contains("<th>total</th><td></td><td></td><td>80.0</td>"));
        // Self-contained: nothing fetched, nothing run.
        assert!(!page.contains("<script"));
        assert!(!page.contains("src="));
        assert!(!page.contains("href="));
        // Tags balance.
        for tag in ["svg", "g", "table", "tr", "style", "text"] {
            assert_eq!(
                page.matches(&format!("<{tag}>")).count()
                    + page.matches(&format!("<{tag} ")).count(),
                page.matches(&format!("</{tag}>")).count(),
                "<{tag}>"
            );
        }
    }

    #[test]
    fn names_are_escaped() {
        let page = timeline().html(None);
        assert!(page.contains("fin&lt;al&gt;ize &amp; co"));
        assert!(!page.contains("fin<al>ize"));
        assert!(page.contains("python-fips-3.13.15 &lt;test&gt;"));
        assert!(
            !page.contains("<line class=\"floor\""),
            "no floor line without a floor"
        );
        assert_eq!(escape(r#"a"b'c"#), "a&quot;b&#39;c");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_tick(0.07), 0.1);
        assert_eq!(nice_tick(3.0), 5.0);
        assert_eq!(nice_tick(11.0), 20.0);
        assert_eq!(trim(20.0), "20");
    }
}
