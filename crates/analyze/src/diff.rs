//! Two images side by side: which layers they share, which only the second has, and what a
//! pull of the second costs a machine that already holds the first.
//!
//! Layers are compared by blob digest, because that is what a pull skips: a blob the machine
//! already has is never transferred again. Two blobs with the same content but different
//! compression (same diff id, different digest) are both transferred; they are listed apart.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::ImageSource;
use crate::units::{human_size, percent};

/// One layer in the comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiffLayer {
    pub digest: String,
    pub diff_id: Option<String>,
    /// Bytes as transferred.
    pub compressed_size: u64,
    /// Position in the first image, if it has the blob.
    pub index_a: Option<usize>,
    /// Position in the second image, if it has the blob.
    pub index_b: Option<usize>,
    pub instruction: String,
}

/// The comparison of image A with image B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageDiff {
    pub image_a: String,
    pub image_b: String,
    /// Blobs both images have.
    pub shared: Vec<DiffLayer>,
    /// Blobs only B has (what a pull of B transfers).
    pub only_b: Vec<DiffLayer>,
    /// Blobs only A has.
    pub only_a: Vec<DiffLayer>,
    /// Of `only_b`, those whose content A has under another digest (other compression).
    pub same_content_other_blob: Vec<String>,
    /// Bytes of all of B's distinct blobs and its config: a pull onto an empty machine.
    pub pull_b_from_scratch: u64,
    /// Bytes a pull of B transfers when A is present: B's blobs A lacks, plus B's config
    /// unless it is A's. Manifests (a few hundred bytes) are not counted.
    pub pull_b_given_a: u64,
    /// Of `pull_b_given_a`, the config's bytes.
    pub config_bytes: u64,
}

fn instructions(source: &ImageSource) -> Vec<String> {
    let mut out: Vec<String> = source
        .config
        .history_with_layers()
        .into_iter()
        .filter(|(_, layer)| layer.is_some())
        .map(|(h, _)| {
            let text = h
                .created_by
                .filter(|c| !c.is_empty())
                .or(h.comment)
                .unwrap_or_default();
            text.strip_suffix(" # buildkit")
                .unwrap_or(&text)
                .trim()
                .to_string()
        })
        .collect();
    out.resize(source.layers.len(), String::new());
    out
}

/// Compares the layers of two images (no layer is read: manifests tell it all).
pub fn diff(a: &ImageSource, b: &ImageSource) -> ImageDiff {
    // Blob digest → its first position in the image.
    let positions = |image: &ImageSource| -> HashMap<String, usize> {
        image
            .layers
            .iter()
            .enumerate()
            .rev()
            .map(|(i, l)| (l.digest.to_string(), i))
            .collect()
    };
    let (in_a, in_b) = (positions(a), positions(b));
    let a_diff_ids: BTreeSet<String> = a
        .layers
        .iter()
        .filter_map(|l| l.diff_id.as_ref().map(|d| d.to_string()))
        .collect();
    let (text_a, text_b) = (instructions(a), instructions(b));

    let mut shared = Vec::new();
    let mut only_b = Vec::new();
    let mut same_content = Vec::new();
    let mut seen = BTreeSet::new();
    let mut from_scratch = 0;
    let mut given_a = 0;
    for (i, l) in b.layers.iter().enumerate() {
        let digest = l.digest.to_string();
        if !seen.insert(digest.clone()) {
            continue; // the same blob twice in B is transferred once
        }
        from_scratch += l.compressed_size;
        let entry = DiffLayer {
            digest: digest.clone(),
            diff_id: l.diff_id.as_ref().map(|d| d.to_string()),
            compressed_size: l.compressed_size,
            index_a: in_a.get(&digest).copied(),
            index_b: Some(i),
            instruction: text_b[i].clone(),
        };
        if entry.index_a.is_some() {
            shared.push(entry);
        } else {
            given_a += l.compressed_size;
            if entry
                .diff_id
                .as_ref()
                .is_some_and(|d| a_diff_ids.contains(d))
            {
                same_content.push(digest);
            }
            only_b.push(entry);
        }
    }
    let mut only_a = Vec::new();
    let mut seen_a = BTreeSet::new();
    for (i, l) in a.layers.iter().enumerate() {
        let digest = l.digest.to_string();
        if in_b.contains_key(&digest) || !seen_a.insert(digest.clone()) {
            continue;
        }
        only_a.push(DiffLayer {
            digest,
            diff_id: l.diff_id.as_ref().map(|d| d.to_string()),
            compressed_size: l.compressed_size,
            index_a: Some(i),
            index_b: None,
            instruction: text_a[i].clone(),
        });
    }
    let config_bytes = if a.id == b.id { 0 } else { b.config_size };
    ImageDiff {
        image_a: a.name.clone(),
        image_b: b.name.clone(),
        shared,
        only_b,
        only_a,
        same_content_other_blob: same_content,
        pull_b_from_scratch: from_scratch + b.config_size,
        pull_b_given_a: given_a + config_bytes,
        config_bytes,
    }
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

fn layer_rows(layers: &[DiffLayer], header: &[&str]) -> String {
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for l in layers {
        let idx = |i: Option<usize>| i.map_or("-".to_string(), |i| i.to_string());
        let mut row = Vec::new();
        if header.contains(&"A") {
            row.push(idx(l.index_a));
        }
        if header.contains(&"B") {
            row.push(idx(l.index_b));
        }
        row.push(short(&l.digest));
        row.push(human_size(l.compressed_size));
        let mut text: String = l.instruction.chars().take(60).collect();
        if l.instruction.chars().count() > 60 {
            text.push('…');
        }
        row.push(text);
        rows.push(row);
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::from("  ");
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The comparison for a terminal.
pub fn render_diff(d: &ImageDiff) -> String {
    let mut out = String::new();
    out.push_str(&format!("A: {}\nB: {}\n", d.image_a, d.image_b));
    let mut section = |title: &str, layers: &[DiffLayer], headers: &[&str]| {
        let bytes: u64 = layers.iter().map(|l| l.compressed_size).sum();
        out.push_str(&format!(
            "\n{title}: {} ({})\n",
            layers.len(),
            human_size(bytes)
        ));
        if !layers.is_empty() {
            out.push_str(&layer_rows(layers, headers));
        }
    };
    section(
        "Shared layers",
        &d.shared,
        &["A", "B", "DIGEST", "COMPRESSED", "INSTRUCTION"],
    );
    section(
        "Only in B",
        &d.only_b,
        &["B", "DIGEST", "COMPRESSED", "INSTRUCTION"],
    );
    section(
        "Only in A",
        &d.only_a,
        &["A", "DIGEST", "COMPRESSED", "INSTRUCTION"],
    );
    if !d.same_content_other_blob.is_empty() {
        out.push_str(&format!(
            "\nNote: {} of B's layers have content A already holds under another digest (other compression); a pull transfers them anyway.\n",
            d.same_content_other_blob.len()
        ));
    }
    let share = if d.pull_b_from_scratch == 0 {
        0.0
    } else {
        d.pull_b_given_a as f64 / d.pull_b_from_scratch as f64
    };
    out.push_str(&format!(
        "\nPull of B where A is present: {} bytes ({}): {} layer blob(s) and {} of config; {} of the {} bytes ({}) a pull of B costs on an empty machine.\n",
        d.pull_b_given_a,
        human_size(d.pull_b_given_a),
        d.only_b.len(),
        human_size(d.config_bytes),
        percent(share),
        d.pull_b_from_scratch,
        human_size(d.pull_b_from_scratch),
    ));
    out
}
