//! The HTML report: one self-contained page (inline CSS and SVG, no scripts, nothing
//! fetched), with a chart of layer sizes and the waste table.

use crate::units::{human_size, percent};
use crate::{Analysis, WasteReason};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1f2328;background:#fff}\
h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:2rem}\
.meta{color:#59636e;font-size:.9rem}.meta code{font-size:.85rem}\
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}\
.card{border:1px solid #d1d9e0;border-radius:6px;padding:.6rem 1rem;min-width:10rem}\
.card b{display:block;font-size:1.3rem}.card span{color:#59636e;font-size:.85rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{border-bottom:1px solid #d1d9e0;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}td.num{text-align:right;white-space:nowrap}\
td code{font-size:.85rem;word-break:break-all}\
svg text{font-family:inherit;font-size:12px}.base{fill:#8c959f}.user{fill:#0969da}\
.note{color:#59636e;font-size:.85rem}";

/// The report as one HTML page.
pub fn render_html(a: &Analysis) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>strata analyze: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&a.image)
    ));
    h.push_str(&format!("<h1>{}</h1>\n", esc(&a.image)));
    h.push_str(&format!(
        "<p class=\"meta\">Id <code>{}</code> · source {} · base: {}</p>\n",
        esc(&a.id),
        esc(&a.source),
        esc(&a.base.describe())
    ));
    for note in &a.notes {
        h.push_str(&format!("<p class=\"note\">{}</p>\n", esc(note)));
    }

    h.push_str("<div class=\"cards\">\n");
    for (value, label) in [
        (human_size(a.total_size), "image size".to_string()),
        (
            human_size(a.compressed_size),
            "compressed (as transferred)".to_string(),
        ),
        (human_size(a.wasted_bytes), "wasted".to_string()),
        (percent(a.efficiency), "efficiency".to_string()),
        (
            percent(a.user_wasted_percent),
            "user waste / user bytes".to_string(),
        ),
    ] {
        h.push_str(&format!(
            "<div class=\"card\"><b>{}</b><span>{}</span></div>\n",
            esc(&value),
            esc(&label)
        ));
    }
    h.push_str("</div>\n");

    h.push_str("<h2>Layer sizes</h2>\n");
    h.push_str(&chart(a));

    h.push_str("<h2>Layers</h2>\n<table>\n<thead><tr><th>#</th><th>Size</th><th>Compressed</th><th>Added</th><th>Modified</th><th>Removed</th><th>Instruction</th></tr></thead>\n<tbody>\n");
    for l in &a.layers {
        h.push_str(&format!(
            "<tr><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({})</td><td class=\"num\">{} ({})</td><td class=\"num\">{} ({})</td><td><code>{}</code></td></tr>\n",
            l.index,
            if l.base { " base" } else { "" },
            human_size(l.size),
            human_size(l.compressed_size),
            l.added.files,
            human_size(l.added.bytes),
            l.modified.files,
            human_size(l.modified.bytes),
            l.removed.files,
            human_size(l.removed.bytes),
            esc(&l.instruction())
        ));
    }
    h.push_str("</tbody>\n</table>\n");

    h.push_str(&format!(
        "<h2>Wasted space ({} in {} copies)</h2>\n",
        human_size(a.wasted_bytes),
        a.wasted.len()
    ));
    h.push_str("<table id=\"waste\">\n<thead><tr><th>Wasted</th><th>Path</th><th>Added in</th><th>Hidden by</th><th>How</th></tr></thead>\n<tbody>\n");
    if a.wasted.is_empty() {
        h.push_str("<tr><td colspan=\"5\">No layer hides bytes of a lower one.</td></tr>\n");
    }
    let layer = |i: usize| {
        a.layers
            .get(i)
            .map(|l| format!("#{i} {}", l.instruction()))
            .unwrap_or_else(|| format!("#{i}"))
    };
    for w in &a.wasted {
        let how = match w.reason {
            WasteReason::Removed => "deleted",
            WasteReason::Overwritten => "overwritten",
            WasteReason::MetadataOnly => "chmod/chown only",
        };
        h.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{how}</td></tr>\n",
            human_size(w.size),
            esc(&w.path),
            esc(&layer(w.added_in)),
            esc(&layer(w.removed_in)),
        ));
    }
    h.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    h
}

/// A horizontal bar per layer, base layers grey, user layers blue.
fn chart(a: &Analysis) -> String {
    const ROW: usize = 22;
    const LABEL: usize = 60;
    const BAR: usize = 520;
    const VALUE: usize = 90;
    let width = LABEL + BAR + VALUE;
    let height = ROW * a.layers.len().max(1) + 8;
    let max = a.layers.iter().map(|l| l.size).max().unwrap_or(0).max(1);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"layer sizes\">\n"
    );
    for (i, l) in a.layers.iter().enumerate() {
        let y = i * ROW + 4;
        let w = ((l.size as f64 / max as f64) * BAR as f64).round() as usize;
        let w = if l.size > 0 { w.max(1) } else { 0 };
        let class = if l.base { "base" } else { "user" };
        s.push_str(&format!(
            "<text x=\"0\" y=\"{}\">#{}</text><rect class=\"{class}\" x=\"{LABEL}\" y=\"{y}\" width=\"{w}\" height=\"{}\"><title>{}</title></rect><text x=\"{}\" y=\"{}\">{}</text>\n",
            y + 14,
            l.index,
            ROW - 6,
            esc(&l.instruction()),
            LABEL + w + 6,
            y + 14,
            human_size(l.size)
        ));
    }
    s.push_str("</svg>\n");
    s
}
