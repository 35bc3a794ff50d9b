//! `layer::apply` of arbitrary bytes (plain tar, or gzip/zstd by sniffing) into a fresh
//! directory, in both modes. It may refuse the input, but must never panic, hang, or write
//! outside the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [layer::ApplyMode::Overlay, layer::ApplyMode::Flatten] {
        let Ok(outer) = tempfile::tempdir() else {
            return;
        };
        let root = outer.path().join("root");
        if std::fs::create_dir(&root).is_err() {
            return;
        }
        let _ = layer::apply(data, &root, mode);
        // Nothing may appear beside the root: every path resolves inside it.
        let beside: Vec<_> = std::fs::read_dir(outer.path())
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(
            beside,
            [std::ffi::OsString::from("root")],
            "{mode:?} wrote outside the root"
        );
    }
});
