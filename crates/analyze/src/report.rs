//! The terminal report: a table of layers with a bar chart of their sizes, the totals, and
//! the biggest offenders.

use crate::units::{human_size, percent};
use crate::{Analysis, ChangeKind, WasteReason};

/// What the terminal report shows.
#[derive(Clone, Debug)]
pub struct TextOptions {
    /// Width of the longest bar, in characters.
    pub bar_width: usize,
    /// How many of each layer's changed files to list (largest first).
    pub files_per_layer: usize,
    /// How many wasted copies to list.
    pub offenders: usize,
    /// Longest instruction text before it is cut with `…`.
    pub instruction_width: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            bar_width: 30,
            files_per_layer: 3,
            offenders: 10,
            instruction_width: 70,
        }
    }
}

/// A bar of `value / max * width` characters, in eighths.
fn bar(value: u64, max: u64, width: usize) -> String {
    if max == 0 || value == 0 {
        return String::new();
    }
    const PARTS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let eighths = ((value as f64 / max as f64) * (width * 8) as f64).round() as usize;
    let eighths = eighths.max(1);
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8 - 1]);
    }
    s
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Lays out rows with columns padded to their widest cell (the last column is not padded).
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn stat(sign: char, files: u64, bytes: u64) -> String {
    if files == 0 {
        format!("{sign}0")
    } else {
        format!("{sign}{files} ({})", human_size(bytes))
    }
}

/// The report as text for a terminal.
pub fn render_text(a: &Analysis, opts: &TextOptions) -> String {
    let mut out = String::new();
    out.push_str(&format!("Image:   {}\n", a.image));
    out.push_str(&format!("Id:      {}\n", a.id));
    out.push_str(&format!("Source:  {}\n", a.source));
    out.push_str(&format!("Base:    {}\n", a.base.describe()));
    for note in &a.notes {
        out.push_str(&format!("Note:    {note}\n"));
    }

    out.push_str("\nLayers (bottom first)\n");
    let max = a.layers.iter().map(|l| l.size).max().unwrap_or(0);
    let mut rows = vec![vec![
        "#".to_string(),
        "SIZE".to_string(),
        "CHART".to_string(),
        "ADDED".to_string(),
        "MODIFIED".to_string(),
        "REMOVED".to_string(),
        "INSTRUCTION".to_string(),
    ]];
    let mut details: Vec<(usize, Vec<String>)> = Vec::new();
    for l in &a.layers {
        let marker = if l.base { " (base)" } else { "" };
        rows.push(vec![
            format!("{}{marker}", l.index),
            human_size(l.size),
            bar(l.size, max, opts.bar_width),
            stat('+', l.added.files, l.added.bytes),
            stat('~', l.modified.files, l.modified.bytes),
            stat('-', l.removed.files, l.removed.bytes),
            cut(&l.instruction(), opts.instruction_width),
        ]);
        if opts.files_per_layer > 0 && !l.changes.is_empty() {
            let mut changes: Vec<_> = l.changes.iter().collect();
            changes.sort_by(|x, y| y.size.cmp(&x.size).then_with(|| x.path.cmp(&y.path)));
            let mut lines: Vec<String> = changes
                .iter()
                .take(opts.files_per_layer)
                .map(|c| {
                    let sign = match c.change {
                        ChangeKind::Added => '+',
                        ChangeKind::Modified => '~',
                        ChangeKind::Removed => '-',
                    };
                    let meta = if c.metadata_only {
                        " (same content: chmod/chown)"
                    } else {
                        ""
                    };
                    format!("{sign} {} {}{meta}", c.path, human_size(c.size))
                })
                .collect();
            if changes.len() > opts.files_per_layer {
                lines.push(format!(
                    "… and {} more",
                    changes.len() - opts.files_per_layer
                ));
            }
            details.push((l.index, lines));
        }
    }
    // The table, with each layer's files under its row.
    let rendered = table(&rows, "  ");
    let mut lines = rendered.lines();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (i, line) in lines.enumerate() {
        out.push_str(line);
        out.push('\n');
        if let Some((_, files)) = details.iter().find(|(idx, _)| *idx == i) {
            for f in files {
                out.push_str(&format!("        {f}\n"));
            }
        }
        if a.base.layers > 0 && i + 1 == a.base.layers && i + 1 < a.layers.len() {
            out.push_str("  ---- base image ends here ----\n");
        }
    }

    out.push_str("\nSummary\n");
    let base_size = a.total_size - a.user_size;
    let mut summary = vec![
        vec![
            "Image size:".to_string(),
            format!(
                "{} in {} layers ({} base, {} user); {} compressed",
                human_size(a.total_size),
                a.layers.len(),
                human_size(base_size),
                human_size(a.user_size),
                human_size(a.compressed_size)
            ),
        ],
        vec![
            "Wasted:".to_string(),
            format!("{} ({} bytes)", human_size(a.wasted_bytes), a.wasted_bytes),
        ],
        vec![
            "User wasted:".to_string(),
            format!(
                "{} = {} of the bytes user layers add",
                human_size(a.user_wasted_bytes),
                percent(a.user_wasted_percent)
            ),
        ],
        vec!["Efficiency:".to_string(), percent(a.efficiency)],
    ];
    if a.wasted_bytes == 0 {
        summary[1][1] = "0B: no layer hides bytes of a lower one".to_string();
    }
    out.push_str(&table(&summary, "  "));

    if !a.wasted.is_empty() {
        let shown = a.wasted.len().min(opts.offenders);
        out.push_str(&format!(
            "\nBiggest offenders ({shown} of {})\n",
            a.wasted.len()
        ));
        let instruction = |i: usize| {
            a.layers
                .get(i)
                .map(|l| format!("#{i} {}", cut(&l.instruction(), 40)))
                .unwrap_or_else(|| format!("#{i}"))
        };
        let mut rows = vec![vec![
            "WASTED".to_string(),
            "PATH".to_string(),
            "ADDED IN".to_string(),
            "HIDDEN BY".to_string(),
        ]];
        for w in a.wasted.iter().take(shown) {
            let how = match w.reason {
                WasteReason::Removed => "deleted",
                WasteReason::Overwritten => "overwritten",
                WasteReason::MetadataOnly => "chmod/chown only",
            };
            rows.push(vec![
                human_size(w.size),
                w.path.clone(),
                instruction(w.added_in),
                format!("{} ({how})", instruction(w.removed_in)),
            ]);
        }
        out.push_str(&table(&rows, "  "));
        if a.wasted.len() > shown {
            let rest: u64 = a.wasted.iter().skip(shown).map(|w| w.size).sum();
            out.push_str(&format!(
                "  … and {} more ({})\n",
                a.wasted.len() - shown,
                human_size(rest)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_in_eighths() {
        assert_eq!(bar(0, 10, 4), "");
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(5, 10, 4), "██");
        assert_eq!(bar(1, 1000, 4), "▏");
        assert_eq!(bar(3, 16, 4), "▊");
    }

    #[test]
    fn long_text_is_cut() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
