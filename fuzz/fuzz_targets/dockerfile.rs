//! The Dockerfile frontend on arbitrary bytes: parse and dump, the typed layer, and the
//! planner (ARG/ENV scoping and word expansion of every instruction, stage graph), with every
//! error rendered as a user would see it. Any of them may refuse the input; none may panic.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use build::plan::{PlanOptions, ResolvedImage};
use libfuzzer_sys::fuzz_target;

fn image() -> ResolvedImage {
    ResolvedImage {
        config: oci::ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(oci::ContainerConfig {
                env: vec!["PATH=/bin".into(), "HOME=/root".into()],
                on_build: vec!["RUN echo $HOME".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = dockerfile::debug_parse(data);
    let df = match dockerfile::Dockerfile::parse(data) {
        Ok(df) => df,
        Err(error) => {
            let _ = error.render("Dockerfile", data);
            return;
        }
    };
    let Some(platform) = oci::Platform::parse("linux/amd64") else {
        return;
    };
    let mut build_args = BTreeMap::new();
    build_args.insert("A".to_string(), "a b".to_string());
    build_args.insert("HTTP_PROXY".to_string(), "http://p".to_string());
    for target in [
        None,
        df.stages.first().and_then(|s| s.name().map(str::to_string)),
    ] {
        let opts = PlanOptions {
            build_args: build_args.clone(),
            target,
            platform: platform.clone(),
        };
        let refs = match build::plan::external_images(&df, &opts) {
            Ok(refs) => refs,
            Err(error) => {
                let _ = dockerfile::render_error("Dockerfile", data, error.span, &error.message);
                continue;
            }
        };
        let images: HashMap<String, ResolvedImage> =
            refs.into_iter().map(|r| (r, image())).collect();
        if let Err(error) = build::plan::plan(&df, &opts, &images) {
            let _ = dockerfile::render_error("Dockerfile", data, error.span, &error.message);
        }
    }
});
