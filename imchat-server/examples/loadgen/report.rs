//! Figures over several runs (median and min–max) and the tables the
//! generator prints and writes as Markdown.

use std::fmt::Write as _;

/// The values one figure took over the runs.
#[derive(Debug, Clone, Default)]
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        if v.is_empty() {
            return None;
        }
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        })
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// "median (min–max)" with `fmt` for each number; "failed" when no run
    /// produced a value.
    pub fn show(&self, fmt: fn(f64) -> String) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) if self.0.len() > 1 => {
                let failed = self.0.len() - self.sorted().len();
                let f = if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                };
                format!("{} ({}–{}{f})", fmt(m), fmt(lo), fmt(hi))
            }
            (Some(m), _, _) => fmt(m),
            _ => "failed".into(),
        }
    }
}

/// Percentile `q` (0..=1) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn millions(v: f64) -> String {
    format!("{:.2} M", v / 1e6)
}
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}
pub fn kib(v: f64) -> String {
    format!("{v:.1} KiB")
}
pub fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}
pub fn mbps(v: f64) -> String {
    format!("{v:.0} MB/s")
}
pub fn secs(v: f64) -> String {
    format!("{v:.2} s")
}
pub fn pct(v: f64) -> String {
    format!("{v:.0} %")
}
pub fn micros(v: f64) -> String {
    format!("{v:.3} µs")
}
pub fn ratio(v: f64) -> String {
    format!("{v:.2}×")
}

/// One table of the report.
#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, head: &[&str]) -> Self {
        Table {
            title: title.into(),
            head: head.iter().map(std::string::ToString::to_string).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Aligned plain text for the terminal.
    pub fn text(&self) -> String {
        let cols = self.head.len();
        let mut w = vec![0; cols];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut s = format!("\n== {} ==\n", self.title);
        for (k, r) in std::iter::once(&self.head).chain(&self.rows).enumerate() {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i.min(cols - 1)]))
                .collect();
            let _ = writeln!(s, "  {}", line.join("  ").trim_end());
            if k == 0 {
                let _ = writeln!(
                    s,
                    "  {}",
                    "-".repeat(w.iter().sum::<usize>() + 2 * (cols - 1))
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  * {n}");
        }
        s
    }

    /// The same as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.head.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(self.head.len()));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s.push('\n');
        s
    }
}
