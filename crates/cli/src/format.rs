//! Output formatting that matches the docker CLI to the character: its size units, its
//! "N minutes ago", its ellipsis and its table layout (Go's tabwriter with docker's settings).

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits,
/// Go's `%g` formatting. One implementation, shared with `strata analyze`.
pub use analyze::units::human_size;

/// The error and its causes on one line each, without repeating a cause that the message
/// already includes.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(&format!("\n  caused by: {c}"));
        }
    }
    out
}

/// docker's `units.HumanDuration`, as used for "CREATED" columns (callers add " ago").
pub fn human_duration(seconds: i64) -> String {
    let s = seconds;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = ((s as f64) / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp; a missing or unreadable one counts
/// as the epoch, as docker's zero time does.
pub fn unix_seconds(created: Option<&str>) -> i64 {
    created
        .and_then(|c| c.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0)
}

/// "2 hours ago", relative to `now` (seconds).
pub fn since(created: Option<&str>, now: i64) -> String {
    format!("{} ago", human_duration(now - unix_seconds(created)))
}

/// docker's `Ellipsis`: at most `max` characters, the last one replaced by `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A table laid out as docker lays it out: Go's tabwriter with minwidth 10, padding 3, spaces;
/// every column but the last padded to its widest cell plus 3 (at least 10).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns.saturating_sub(1))
            .map(|c| {
                let widest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0);
                (widest + 3).max(10)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            for (c, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if let Some(w) = widths.get(c) {
                    let pad = w.saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(1_239_000), "1.24MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(999_999), "1e+03kB");
        assert_eq!(human_size(4_400_000_000), "4.4GB");
    }

    #[test]
    fn durations_match_docker_wording() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let mut t = Table::new(&["REPOSITORY", "TAG", "SIZE"]);
        t.row(vec!["busybox".into(), "latest".into(), "1.2MB".into()]);
        assert_eq!(
            t.render(),
            "REPOSITORY   TAG       SIZE\nbusybox      latest    1.2MB\n"
        );
    }

    #[test]
    fn ellipsis_and_ids() {
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}
