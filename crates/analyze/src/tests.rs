//! Whole analyses of a fixed fake image: numbers, the terminal report, JSON, HTML, CI rules.

use oci::{History, ImageConfig, RootFs};
use testkit::TarBuilder;

use super::*;
use crate::ci::{Rules, Status};

fn entry(created_by: &str, comment: Option<&str>, empty: bool) -> History {
    History {
        created_by: (!created_by.is_empty()).then(|| created_by.to_string()),
        comment: comment.map(str::to_string),
        empty_layer: empty,
        ..Default::default()
    }
}

fn config(history: Vec<History>, layers: usize) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: (0..layers)
                .map(|i| oci::DiffId(oci::Digest::of(&[i as u8])))
                .collect(),
        },
        history,
        ..Default::default()
    }
}

const BK: Option<&str> = Some(BUILDKIT_HISTORY_COMMENT);

/// A base layer, an apt install, a COPY of the context with its .git, and a RUN that
/// deletes .git and chmods curl.
fn fake_image() -> Analysis {
    let history = vec![
        entry("/bin/sh -c #(nop) ADD file:0123 in / ", None, false),
        entry("/bin/sh -c #(nop)  CMD [\"sh\"]", None, true),
        entry(
            "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit",
            BK,
            false,
        ),
        entry("COPY . /app # buildkit", BK, false),
        entry(
            "RUN /bin/sh -c rm -rf /app/.git && chmod 755 /usr/bin/curl # buildkit",
            BK,
            false,
        ),
        entry("ENV X=1", BK, true),
    ];
    let tars = vec![
        TarBuilder::new()
            .dir("bin/")
            .file("bin/busybox", &[1; 9000])
            .dir("etc/")
            .file("etc/passwd", &[2; 100])
            .finish(),
        TarBuilder::new()
            .dir("usr/bin/")
            .file("usr/bin/curl", &[3; 2000])
            .dir("var/lib/apt/lists/")
            .file("var/lib/apt/lists/big", &[4; 3000])
            .finish(),
        TarBuilder::new()
            .dir("app/")
            .file("app/main", &[5; 1500])
            .dir("app/.git/")
            .file("app/.git/pack", &[6; 4000])
            .finish(),
    ];
    // Whiteout .git and rewrite curl with the same bytes, mode 755.
    let mut last = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    last.append_data(&mut h, "app/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    last.append_data(&mut h, "app/.wh..git", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(2000);
    h.set_mode(0o755);
    last.append_data(&mut h, "usr/bin/curl", &[3u8; 2000][..])
        .unwrap();
    let mut tars = tars;
    tars.push(last.into_inner().unwrap());
    analyze_tars("example/app:1", &config(history, 4), &tars).unwrap()
}

#[test]
fn the_fake_image_adds_up() {
    let a = fake_image();
    assert_eq!(a.layers.len(), 4);
    assert_eq!(
        a.base,
        BaseSplit {
            layers: 1,
            method: BaseMethod::BuildkitHistory
        }
    );
    assert_eq!(a.total_size, 9100 + 5000 + 5500 + 2000);
    assert_eq!(a.user_size, 12_500);
    assert_eq!(a.wasted_bytes, 6000);
    assert_eq!(a.user_wasted_bytes, 6000);
    assert_eq!(a.wasted_for("/app/.git/pack"), 4000);
    assert_eq!(a.wasted_for("/usr/bin/curl"), 2000);
    assert!((a.user_wasted_percent - 0.48).abs() < 1e-12);
    // dive: Σmin = 100+9000+3000+2000+1500+0, Σall = 100+9000+3000+4000+1500+4000.
    assert!((a.efficiency - 15_600.0 / 21_600.0).abs() < 1e-12);
    assert_eq!(a.layers[3].removed.files, 1);
    assert_eq!(a.layers[3].modified.files, 1);
    assert_eq!(a.layers[2].created_by, "COPY . /app # buildkit");
    assert_eq!(a.layers[2].instruction(), "COPY . /app");
    assert_eq!(a.wasted[0].added_in, 2);
    assert_eq!(a.wasted[0].removed_in, 3);
    assert_eq!(a.wasted[1].reason, WasteReason::MetadataOnly);
}

fn stable(a: &Analysis) -> Analysis {
    let mut a = a.clone();
    // Layer digests depend on the tar builder's header bytes; the numbers are what matter.
    for l in &mut a.layers {
        l.digest = format!("sha256:layer{}", l.index);
        l.diff_id = Some(format!("sha256:diff{}", l.index));
        l.compressed_size = l.tar_size;
    }
    a.compressed_size = a.layers.iter().map(|l| l.compressed_size).sum();
    a
}

#[test]
fn terminal_report_snapshot() {
    let a = stable(&fake_image());
    insta::assert_snapshot!(render_text(&a, &TextOptions::default()));
}

#[test]
fn json_snapshot() {
    let a = stable(&fake_image());
    let json = serde_json::to_value(&a).unwrap();
    for key in [
        "layers",
        "wasted_bytes",
        "efficiency",
        "user_wasted_percent",
        "wasted",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let first = &json["wasted"][0];
    for key in ["path", "size", "added_in", "removed_in"] {
        assert!(first.get(key).is_some(), "wasted entries lack {key}");
    }
    insta::assert_json_snapshot!(json);
}

#[test]
fn html_is_one_well_formed_page_with_the_chart_and_the_table() {
    let a = fake_image();
    let html = render_html(&a);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"));
    assert!(html.contains("<table id=\"waste\">"));
    assert!(html.contains("/app/.git/pack"));
    // Nothing is fetched: no external URL, no script.
    assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("<script"));
    // Every element that opens closes (a small tag balance check).
    for tag in [
        "html", "head", "body", "table", "thead", "tbody", "svg", "tr", "td", "th",
    ] {
        let open =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        let close = html.matches(&format!("</{tag}>")).count();
        assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
    }
    // Text is escaped.
    let mut hostile = a.clone();
    hostile.image = "<img onerror=x>".into();
    assert!(render_html(&hostile).contains("&lt;img onerror=x&gt;"));
}

#[test]
fn ci_rules_on_the_fake_image() {
    let a = fake_image();
    let results = Rules::default().evaluate(&a);
    let status: Vec<(&str, Status)> = results.iter().map(|r| (r.rule, r.status)).collect();
    assert_eq!(
        status,
        [
            ("lowestEfficiency", Status::Fail),
            ("highestWastedBytes", Status::Skip),
            ("highestUserWastedPercent", Status::Fail)
        ]
    );
    assert_eq!(
        results[0].message,
        "image efficiency is too low (efficiency=0.72 < threshold=0.9)"
    );
    let relaxed = Rules::parse("0.5", "6000", "0.5").unwrap().evaluate(&a);
    assert!(
        relaxed.iter().all(|r| r.status == Status::Pass),
        "{relaxed:?}"
    );
    let strict = Rules::parse("0.5", "5999B", "0.5").unwrap().evaluate(&a);
    assert_eq!(strict[1].status, Status::Fail);
    assert_eq!(
        strict[1].message,
        "too many bytes wasted (wasted-bytes=6000 > threshold=5999)"
    );
    let text = ci::render_results(&results);
    assert!(text.contains("Result:FAIL [Total:3] [Passed:0] [Failed:2] [Warn:0] [Skipped:1]"));
}

#[test]
fn base_split_without_a_buildkit_marker_takes_the_first_layer() {
    let c = config(
        vec![
            entry("/bin/sh -c #(nop) ADD file:1 in /", None, false),
            entry("/bin/sh -c apt-get install x", None, false),
        ],
        2,
    );
    assert_eq!(
        BaseSplit::from_config(&c),
        BaseSplit {
            layers: 1,
            method: BaseMethod::FirstLayer
        }
    );
    // FROM scratch: the very first entry is BuildKit's, so there is no base.
    let c = config(vec![entry("COPY x / # buildkit", BK, false)], 1);
    assert_eq!(BaseSplit::from_config(&c).layers, 0);
    // Metadata-only base entries do not count as layers.
    let c = config(
        vec![
            entry("ADD rootfs", None, false),
            entry("CMD", None, true),
            entry("LABEL a=b", None, true),
            entry("RUN x # buildkit", BK, false),
        ],
        2,
    );
    assert_eq!(BaseSplit::from_config(&c).layers, 1);
}

#[test]
fn user_waste_counts_what_user_layers_hide_even_in_base_layers() {
    let history = vec![
        entry("ADD base", None, false),
        entry("ADD base more", None, false),
        entry("RUN rm /big # buildkit", BK, false),
    ];
    let a = analyze_tars(
        "x",
        &config(history, 3),
        &[
            TarBuilder::new().file("big", &[1; 700]).finish(),
            TarBuilder::new()
                .file("f", &[1; 100])
                .file("f2", &[1; 10])
                .finish(),
            TarBuilder::new()
                .file(".wh.big", b"")
                .file("f", &[2; 50])
                .finish(),
        ],
    )
    .unwrap();
    assert_eq!(a.base.layers, 2);
    assert_eq!(a.wasted_bytes, 800);
    assert_eq!(a.user_wasted_bytes, 800);
    assert_eq!(a.user_size, 50);
    assert!((a.user_wasted_percent - 16.0).abs() < 1e-12);
}
