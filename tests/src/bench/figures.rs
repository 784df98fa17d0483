//! The numbers a run produces: each figure for the proxy ("ours") and, where it has one, the
//! plain relay ("baseline"); medians over repeats; a Markdown table.

use std::fmt::Write as _;

/// One measured quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Its unit.
    pub unit: &'static str,
    /// The proxy's value.
    pub ours: f64,
    /// The plain relay's value, when the figure has one.
    pub baseline: Option<f64>,
}

impl Figure {
    /// A figure with a baseline.
    pub fn pair(name: impl Into<String>, unit: &'static str, ours: f64, baseline: f64) -> Self {
        Self { name: name.into(), unit, ours, baseline: Some(baseline) }
    }

    /// A figure of the proxy alone.
    pub fn alone(name: impl Into<String>, unit: &'static str, ours: f64) -> Self {
        Self { name: name.into(), unit, ours, baseline: None }
    }

    /// ours / baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.ours / b)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Per figure, the median of its values over `runs` (each run lists the same figures in the
/// same order; a figure missing from a run is skipped there).
pub fn medians(runs: &[Vec<Figure>]) -> Vec<Figure> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|f| {
            let same: Vec<&Figure> =
                runs.iter().filter_map(|r| r.iter().find(|g| g.name == f.name)).collect();
            let baseline = f.baseline.map(|_| median(same.iter().filter_map(|g| g.baseline).collect()));
            Figure {
                name: f.name.clone(),
                unit: f.unit,
                ours: median(same.iter().map(|g| g.ours).collect()),
                baseline,
            }
        })
        .collect()
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// The figures as a Markdown table: figure, unit, ours, baseline, ours / baseline.
pub fn table(figures: &[Figure]) -> String {
    let mut out =
        String::from("| figure | unit | ours | plain relay | ours / relay |\n|---|---|---:|---:|---:|\n");
    for f in figures {
        let baseline = f.baseline.map_or_else(|| "–".to_owned(), number);
        let ratio = f.ratio().map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
        let _ = writeln!(out, "| {} | {} | {} | {baseline} | {ratio} |", f.name, f.unit, number(f.ours));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_per_figure() {
        let run = |a: f64, b: f64| vec![Figure::pair("x", "u", a, b), Figure::alone("y", "u", a)];
        let m = medians(&[run(3.0, 1.0), run(1.0, 9.0), run(2.0, 5.0)]);
        assert_eq!(m, vec![Figure::pair("x", "u", 2.0, 5.0), Figure::alone("y", "u", 2.0)]);
        assert_eq!(m[0].ratio(), Some(0.4));
    }

    #[test]
    fn table_rows() {
        let t = table(&[Figure::pair("bulk", "MB/s", 850.0, 1000.0), Figure::alone("p99", "µs", 12.5)]);
        assert_eq!(
            t,
            "| figure | unit | ours | plain relay | ours / relay |\n|---|---|---:|---:|---:|\n\
             | bulk | MB/s | 850 | 1000 | 0.85 |\n| p99 | µs | 12.50 | – | – |\n"
        );
    }
}
