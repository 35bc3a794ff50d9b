//! The accounting: what each layer adds, modifies and removes, which bytes lower layers keep
//! that nobody can see any more, and dive's efficiency score.
//!
//! Layers are scanned one at a time (streamed: only entry metadata and a content hash are
//! kept), then stacked bottom to top over a model of the visible tree, with overlay
//! semantics: a layer's whiteouts and opaque directories hide what the layers *below* it
//! hold, then its entries are laid over the result.

use std::collections::BTreeMap;
use std::io::Read;

use oci::DiffId;
use serde::Serialize;
use sha2::Digest as _;

use layer::tar::{Kind, ReadError, TarReader, clean_path};

/// A non-directory entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScannedEntry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: String,
    /// sha256 of a regular file's content.
    pub hash: Option<[u8; 32]>,
}

/// What one layer tar holds, as metadata.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScannedLayer {
    /// Non-directory entries, in tar order.
    pub entries: Vec<ScannedEntry>,
    /// Directory entries.
    pub dirs: Vec<String>,
    /// Paths deleted by `.wh.NAME` entries.
    pub whiteouts: Vec<String>,
    /// Directories marked opaque (`.wh..wh..opq`); `""` is the root.
    pub opaques: Vec<String>,
    /// Length of the uncompressed tar.
    pub tar_size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Option<DiffId>,
}

/// Reads a layer tar (already decompressed) to its end, keeping only metadata and hashes.
pub(crate) fn scan_layer<R: Read>(reader: R) -> Result<ScannedLayer, ReadError> {
    let hashing = layer::HashingReader::new(reader);
    let mut walker = TarReader::new(hashing);
    let mut out = ScannedLayer::default();
    let mut buf = vec![0u8; 128 << 10];
    while let Some(entry) = walker.next_entry()? {
        let Some(path) = clean_path(&entry.path) else {
            continue;
        };
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n),
            None => (String::new(), path.as_str()),
        };
        if let Some(meta) = name.strip_prefix(".wh.") {
            if name == ".wh..wh..opq" {
                out.opaques.push(parent);
            } else if !meta.starts_with(".wh.") && !meta.is_empty() {
                out.whiteouts.push(join(&parent, meta));
            }
            continue;
        }
        if entry.kind == Kind::Dir {
            out.dirs.push(path);
            continue;
        }
        let hash = if entry.kind == Kind::File {
            let mut hasher = sha2::Sha256::new();
            loop {
                let n = walker.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Some(hasher.finalize().into())
        } else {
            None
        };
        out.entries.push(ScannedEntry {
            path,
            kind: entry.kind,
            size: entry.size,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            link: String::from_utf8_lossy(&entry.link).into_owned(),
            hash,
        });
    }
    // Read to the end, so the diff id and size cover the whole stream (and a verifying
    // reader underneath gets to check its digest).
    let mut rest = walker.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())?;
    let (digest, len, _) = rest.finish();
    out.tar_size = len;
    out.diff_id = Some(DiffId(digest));
    Ok(out)
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// How a file changed in a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Removed,
}

/// One non-directory path a layer added, modified or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Absolute path in the image.
    pub path: String,
    pub change: ChangeKind,
    /// Bytes of the new copy (added, modified) or of the copy that went away (removed).
    pub size: u64,
    /// A modification that rewrote the same content (mode or owner changed, or nothing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub metadata_only: bool,
}

/// Why a lower copy of a file is waste.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WasteReason {
    /// A later layer deleted it (a whiteout, an opaque directory, or a directory or file
    /// that replaced it).
    Removed,
    /// A later layer wrote new content at the same path.
    Overwritten,
    /// A later layer rewrote it with the same content: a chmod or chown (or a touch).
    MetadataOnly,
}

/// Bytes a lower layer keeps that the final image cannot see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waste {
    /// Absolute path in the image.
    pub path: String,
    /// Bytes of the hidden copy.
    pub size: u64,
    /// The layer (index, bottom first) that holds the hidden copy.
    pub added_in: usize,
    /// The layer that deleted or replaced it.
    pub removed_in: usize,
    pub reason: WasteReason,
}

/// Per-layer counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeStats {
    pub files: u64,
    pub bytes: u64,
}

/// What stacking one layer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LayerChanges {
    /// File bytes the layer carries (sum of its entries' sizes: dive's layer size).
    pub size: u64,
    pub added: ChangeStats,
    pub modified: ChangeStats,
    pub removed: ChangeStats,
    pub changes: Vec<FileChange>,
}

#[derive(Clone, Debug)]
struct Copy {
    layer: usize,
    dir: bool,
    size: u64,
    kind: Option<Kind>,
    hash: Option<[u8; 32]>,
    link: String,
}

/// dive's per-path bookkeeping: every appearance of a path in a layer (a removal counts as
/// an appearance of size 0), their sum and their minimum.
#[derive(Clone, Copy, Debug)]
struct Seen {
    cumulative: u64,
    min: u64,
}

/// Stacks scanned layers bottom to top.
#[derive(Default)]
pub(crate) struct Stacker {
    visible: BTreeMap<String, Copy>,
    seen: BTreeMap<String, Seen>,
    pub waste: Vec<Waste>,
    layers: usize,
}

impl Stacker {
    pub fn new() -> Self {
        Self::default()
    }

    fn see(&mut self, path: &str, size: u64) {
        self.seen
            .entry(path.to_string())
            .and_modify(|s| {
                s.cumulative += size;
                s.min = s.min.min(size);
            })
            .or_insert(Seen {
                cumulative: size,
                min: size,
            });
    }

    /// Removes `path` and everything below it from the visible tree, recording waste and
    /// changes for each non-directory copy that goes away. `keep_self` removes only what is
    /// below (an opaque directory keeps itself).
    fn remove_tree(&mut self, path: &str, layer: usize, keep_self: bool, out: &mut LayerChanges) {
        let mut doomed: Vec<String> = Vec::new();
        if !keep_self && self.visible.contains_key(path) {
            doomed.push(path.to_string());
        }
        if path.is_empty() {
            doomed.extend(self.visible.keys().cloned());
        } else {
            let lo = format!("{path}/");
            let hi = format!("{path}0"); // '0' is the byte after '/'
            doomed.extend(self.visible.range(lo..hi).map(|(k, _)| k.clone()));
        }
        for p in doomed {
            if let Some(copy) = self.visible.remove(&p) {
                self.hide(&p, copy, layer, WasteReason::Removed, out);
            }
        }
    }

    /// Accounts for a copy that a layer hides.
    fn hide(
        &mut self,
        path: &str,
        copy: Copy,
        layer: usize,
        reason: WasteReason,
        out: &mut LayerChanges,
    ) {
        if copy.dir {
            return;
        }
        if reason == WasteReason::Removed {
            self.see(path, 0);
            out.removed.files += 1;
            out.removed.bytes += copy.size;
            out.changes.push(FileChange {
                path: format!("/{path}"),
                change: ChangeKind::Removed,
                size: copy.size,
                metadata_only: false,
            });
        }
        if copy.size > 0 {
            self.waste.push(Waste {
                path: format!("/{path}"),
                size: copy.size,
                added_in: copy.layer,
                removed_in: layer,
                reason,
            });
        }
    }

    /// Lays one layer over the stack.
    pub fn apply(&mut self, layer: &ScannedLayer) -> LayerChanges {
        let index = self.layers;
        self.layers += 1;
        let mut out = LayerChanges::default();
        // Whiteouts and opaque markers hide what is below this layer, whatever their order
        // in the tar relative to the layer's own entries.
        for dir in &layer.opaques {
            self.remove_tree(dir, index, true, &mut out);
        }
        for path in &layer.whiteouts {
            self.remove_tree(path, index, false, &mut out);
        }
        for dir in &layer.dirs {
            self.replace_ancestors(dir, index, &mut out);
            match self.visible.get(dir) {
                Some(c) if c.dir => {}
                Some(_) => {
                    if let Some(copy) = self.visible.remove(dir) {
                        self.hide(dir, copy, index, WasteReason::Removed, &mut out);
                    }
                }
                None => {}
            }
            self.visible.insert(
                dir.clone(),
                Copy {
                    layer: index,
                    dir: true,
                    size: 0,
                    kind: None,
                    hash: None,
                    link: String::new(),
                },
            );
        }
        for entry in &layer.entries {
            out.size += entry.size;
            self.replace_ancestors(&entry.path, index, &mut out);
            // A non-directory at a path that was a directory (listed or implied by its
            // contents) replaces it: everything that was in it goes.
            if self.visible.get(&entry.path).is_some_and(|c| c.dir) {
                self.remove_tree(&entry.path, index, false, &mut out);
            } else {
                self.remove_tree(&entry.path, index, true, &mut out);
            }
            let new = Copy {
                layer: index,
                dir: false,
                size: entry.size,
                kind: Some(entry.kind),
                hash: entry.hash,
                link: entry.link.clone(),
            };
            self.see(&entry.path, entry.size);
            let (change, metadata_only) = match self.visible.remove(&entry.path) {
                Some(old) => {
                    let same = old.kind == new.kind
                        && old.size == new.size
                        && old.hash == new.hash
                        && old.link == new.link;
                    let reason = if same {
                        WasteReason::MetadataOnly
                    } else {
                        WasteReason::Overwritten
                    };
                    self.hide(&entry.path, old, index, reason, &mut out);
                    out.modified.files += 1;
                    out.modified.bytes += entry.size;
                    (ChangeKind::Modified, same)
                }
                None => {
                    out.added.files += 1;
                    out.added.bytes += entry.size;
                    (ChangeKind::Added, false)
                }
            };
            out.changes.push(FileChange {
                path: format!("/{}", entry.path),
                change,
                size: entry.size,
                metadata_only,
            });
            self.visible.insert(entry.path.clone(), new);
        }
        out
    }

    /// A path inside a directory replaces any non-directory that sat at one of its parents.
    fn replace_ancestors(&mut self, path: &str, layer: usize, out: &mut LayerChanges) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            let ancestor = &path[..end + slash];
            if self.visible.get(ancestor).is_some_and(|c| !c.dir)
                && let Some(copy) = self.visible.remove(ancestor)
            {
                self.hide(ancestor, copy, layer, WasteReason::Removed, out);
            }
            end += slash + 1;
        }
    }

    /// dive's efficiency: the sum over paths of the smallest appearance, over the sum of all
    /// appearances; 1 when there are no bytes at all.
    pub fn efficiency(&self) -> f64 {
        let (min, total) = self.seen.values().fold((0u128, 0u128), |(m, t), s| {
            (m + u128::from(s.min), t + u128::from(s.cumulative))
        });
        if total == 0 {
            1.0
        } else {
            min as f64 / total as f64
        }
    }

    /// Bytes of every non-directory copy still visible.
    #[cfg(test)]
    pub fn visible_bytes(&self) -> u64 {
        self.visible.values().map(|c| c.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::TarBuilder;

    fn scan(tar: Vec<u8>) -> ScannedLayer {
        scan_layer(&tar[..]).unwrap()
    }

    fn stack(tars: Vec<Vec<u8>>) -> (Stacker, Vec<LayerChanges>) {
        let mut s = Stacker::new();
        let changes = tars.into_iter().map(|t| s.apply(&scan(t))).collect();
        (s, changes)
    }

    fn wasted(s: &Stacker) -> u64 {
        s.waste.iter().map(|w| w.size).sum()
    }

    fn tar_with_mode(path: &str, data: &[u8], mode: u32) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        b.append_data(&mut h, path, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn scan_sorts_entries_whiteouts_and_opaque_markers() {
        let l = scan(
            TarBuilder::new()
                .dir("etc/")
                .file("etc/a", b"12345")
                .file("etc/.wh.old", b"")
                .file("var/.wh..wh..opq", b"")
                .file(".wh..wh..opq", b"")
                .symlink("bin", "usr/bin")
                .finish(),
        );
        assert_eq!(l.dirs, ["etc"]);
        assert_eq!(l.whiteouts, ["etc/old"]);
        assert_eq!(l.opaques, ["var", ""]);
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].size, 5);
        assert!(l.entries[0].hash.is_some());
        assert_eq!(l.entries[1].kind, Kind::Symlink);
        assert_eq!(l.entries[1].link, "usr/bin");
        assert!(l.tar_size >= 1024 && l.tar_size.is_multiple_of(512));
    }

    #[test]
    fn added_modified_removed_are_counted_with_sizes() {
        let (_, ch) = stack(vec![
            TarBuilder::new()
                .dir("a/")
                .file("a/x", &[1; 100])
                .file("a/y", &[2; 10])
                .finish(),
            TarBuilder::new()
                .dir("a/")
                .file("a/x", &[3; 40])
                .file("a/z", &[4; 7])
                .file("a/.wh.y", b"")
                .finish(),
        ]);
        assert_eq!(
            ch[0].added,
            ChangeStats {
                files: 2,
                bytes: 110
            }
        );
        assert_eq!(ch[0].size, 110);
        assert_eq!(ch[1].added, ChangeStats { files: 1, bytes: 7 });
        assert_eq!(
            ch[1].modified,
            ChangeStats {
                files: 1,
                bytes: 40
            }
        );
        assert_eq!(
            ch[1].removed,
            ChangeStats {
                files: 1,
                bytes: 10
            }
        );
        assert_eq!(ch[1].size, 47);
        let removed: Vec<&FileChange> = ch[1]
            .changes
            .iter()
            .filter(|c| c.change == ChangeKind::Removed)
            .collect();
        assert_eq!(removed[0].path, "/a/y");
    }

    #[test]
    fn a_file_added_overwritten_twice_and_deleted_wastes_every_copy() {
        // The copy kept is the whiteout (0 bytes): reclaimable = total - 0.
        let (s, _) = stack(vec![
            TarBuilder::new().file("f", &[1; 1000]).finish(),
            TarBuilder::new().file("f", &[2; 300]).finish(),
            TarBuilder::new().file("f", &[3; 50]).finish(),
            TarBuilder::new().file(".wh.f", b"").finish(),
        ]);
        assert_eq!(wasted(&s), 1350);
        let w: Vec<(usize, usize, WasteReason)> = s
            .waste
            .iter()
            .map(|w| (w.added_in, w.removed_in, w.reason))
            .collect();
        assert_eq!(
            w,
            [
                (0, 1, WasteReason::Overwritten),
                (1, 2, WasteReason::Overwritten),
                (2, 3, WasteReason::Removed)
            ]
        );
        // dive: min over appearances {1000, 300, 50, 0} = 0, cumulative 1350.
        assert_eq!(s.efficiency(), 0.0);
    }

    #[test]
    fn a_file_overwritten_twice_and_kept_wastes_total_minus_the_kept_copy() {
        let (s, _) = stack(vec![
            TarBuilder::new().file("f", &[1; 1000]).finish(),
            TarBuilder::new().file("f", &[2; 300]).finish(),
            TarBuilder::new().file("f", &[3; 500]).finish(),
        ]);
        // Total 1800, one copy (the visible 500) kept.
        assert_eq!(wasted(&s), 1300);
        assert_eq!(s.visible_bytes(), 500);
        // dive's score keeps the smallest appearance: 300 / 1800.
        assert!((s.efficiency() - 300.0 / 1800.0).abs() < 1e-12);
    }

    #[test]
    fn chmod_only_rewrites_are_waste_and_marked_as_such() {
        let (s, ch) = stack(vec![
            tar_with_mode("bin/tool", &[9; 4096], 0o644),
            tar_with_mode("bin/tool", &[9; 4096], 0o755),
        ]);
        assert_eq!(wasted(&s), 4096);
        assert_eq!(s.waste[0].reason, WasteReason::MetadataOnly);
        assert!(ch[1].changes[0].metadata_only);
        assert_eq!(ch[1].modified.files, 1);
        // dive: 4096 of 8192 is the minimum kept.
        assert!((s.efficiency() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn whiteout_of_a_directory_and_opaque_directories_hide_every_file_below() {
        let (s, ch) = stack(vec![
            TarBuilder::new()
                .dir("d/")
                .file("d/a", &[1; 10])
                .dir("d/sub/")
                .file("d/sub/b", &[1; 20])
                .dir("o/")
                .file("o/c", &[1; 30])
                .file("dx", &[1; 5]) // a sibling whose name shares the prefix
                .finish(),
            TarBuilder::new()
                .file(".wh.d", b"")
                .dir("o/")
                .file("o/.wh..wh..opq", b"")
                .file("o/new", &[1; 3])
                .finish(),
        ]);
        assert_eq!(wasted(&s), 60);
        assert_eq!(
            ch[1].removed,
            ChangeStats {
                files: 3,
                bytes: 60
            }
        );
        assert_eq!(ch[1].added, ChangeStats { files: 1, bytes: 3 });
        assert_eq!(s.visible_bytes(), 8);
        let mut paths: Vec<&str> = s.waste.iter().map(|w| w.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["/d/a", "/d/sub/b", "/o/c"]);
    }

    #[test]
    fn opaque_marker_before_the_layers_own_entries_keeps_them() {
        // The marker may come after the new entries in the tar: they must survive.
        let (s, _) = stack(vec![
            TarBuilder::new().file("o/old", &[1; 9]).finish(),
            TarBuilder::new()
                .file("o/mine", &[1; 4])
                .file("o/.wh..wh..opq", b"")
                .finish(),
        ]);
        assert_eq!(wasted(&s), 9);
        assert_eq!(s.visible_bytes(), 4);
    }

    #[test]
    fn a_file_replacing_a_directory_or_a_parent_file_removes_what_it_hides() {
        let (s, _) = stack(vec![
            TarBuilder::new()
                .file("x/a", &[1; 10])
                .file("y", &[1; 20])
                .finish(),
            TarBuilder::new()
                .file("x", &[1; 1])
                .file("y/inner", &[1; 2])
                .finish(),
        ]);
        assert_eq!(wasted(&s), 30);
        assert!(s.waste.iter().all(|w| w.reason == WasteReason::Removed));
    }

    #[test]
    fn efficiency_is_one_without_waste() {
        let (s, _) = stack(vec![
            TarBuilder::new().file("a", &[1; 10]).finish(),
            TarBuilder::new().file("b", &[1; 10]).finish(),
        ]);
        assert_eq!(s.efficiency(), 1.0);
        assert_eq!(wasted(&s), 0);
        assert_eq!(Stacker::new().efficiency(), 1.0);
    }
}
