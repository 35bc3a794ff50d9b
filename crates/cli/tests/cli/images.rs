use std::process::Command as StdCommand;

use testkit::{docker, run_tool, unique_name};

use super::{Env, conformance_dir, table_filters, tar_names};

#[test]
fn version_help_and_usage_errors() {
    let env = Env::new();
    assert!(env.ok(&["--version"]).starts_with("strata "));
    assert!(env.ok(&["images", "--help"]).contains("--no-trunc"));
    let (code, err) = env.fails(&["images", "--bogus"]);
    assert_eq!(code, 125, "docker's usage exit status");
    assert!(err.contains("--bogus"));
    let (code, err) = env.fails(&["inspect", "no-such-image"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such image: no-such-image"), "{err}");
}

#[test]
fn import_images_inspect_history() {
    let env = Env::new();
    let id = env.import_busybox("demo/busybox:1.0");
    assert!(id.starts_with("sha256:"), "{id}");

    let images = env.ok(&["images"]);
    insta::with_settings!({filters => table_filters()}, {
        insta::assert_snapshot!("images", images);
    });
    assert_eq!(env.ok(&["images", "-q"]).trim(), &id[7..19]);

    let info = env.inspect("demo/busybox:1.0");
    assert_eq!(info["Id"], id);
    assert_eq!(info["RepoTags"][0], "demo/busybox:1.0");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["RootFS"]["Type"], "layers");
    assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(info["Size"].as_u64().unwrap() > 500_000);
    assert_eq!(
        info["Descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    let history = env.ok(&["history", "demo/busybox:1.0"]);
    insta::with_settings!({filters => table_filters()}, {
        insta::assert_snapshot!("history", history);
    });
    assert!(
        env.ok(&["history", "--no-trunc", "demo/busybox:1.0"])
            .contains(&id)
    );
}

#[test]
fn import_is_reproducible_with_source_date_epoch() {
    let a = Env::new();
    let b = Env::new();
    assert_eq!(a.import_busybox("x"), b.import_busybox("x"));
}

#[test]
fn import_directory_and_zstd() {
    let env = Env::new();
    let rootfs = env.path("rootfs");
    testkit::busybox_rootfs(&rootfs);
    let out = env.ok(&[
        "import",
        "--compression",
        "zstd",
        rootfs.to_str().unwrap(),
        "dirimage",
    ]);
    assert!(out.starts_with("sha256:"));
    let info = env.inspect("dirimage");
    assert_eq!(
        info["Descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest_digest = info["Descriptor"]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.root()
                .join("content/blobs/sha256")
                .join(&manifest_digest[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[test]
fn export_flattens_the_image() {
    let env = Env::new();
    env.import_busybox("exp");
    let out = env.path("flat.tar");
    env.ok(&["export", "exp", "-o", out.to_str().unwrap()]);
    let names = tar_names(&out);
    let expected = tar_names(&env.busybox_tar());
    assert_eq!(names, expected);
}

#[test]
fn prune_all_removes_every_image_no_container_uses() {
    let env = Env::new();
    env.import_busybox("used:1");
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM used:1\nRUN touch /made\n").unwrap();
    env.ok(&[
        "build",
        "-q",
        "-t",
        "unused:1",
        "-t",
        "unused:2",
        ctx.to_str().unwrap(),
    ]);
    env.ok(&["run", "--name", "user", "used:1", "true"]);

    let out = env.ok(&["prune"]);
    assert!(
        !out.contains("untagged:"),
        "plain prune keeps named images: {out}"
    );
    let out = env.ok(&["prune", "--all"]);
    assert!(
        out.starts_with(
            "Deleted Images:\nuntagged: unused:1\nuntagged: unused:2\ndeleted: sha256:"
        ),
        "{out}"
    );
    let listing = env.ok(&["images"]);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(
        listing.contains("\nused ") && !listing.contains("unused"),
        "the image a container uses stays: {listing}"
    );
    env.ok(&["rm", "user"]);
    env.ok(&["prune", "-a"]);
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn tag_and_rmi() {
    let env = Env::new();
    let id = env.import_busybox("one:1");
    env.ok(&["tag", "one:1", "two"]);
    let info = env.inspect("two");
    assert_eq!(info["Id"], id);
    assert_eq!(info["RepoTags"].as_array().unwrap().len(), 2);

    let (_, err) = env.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("must be forced"), "{err}");

    let out = env.ok(&["rmi", "one:1"]);
    assert_eq!(out, "Untagged: one:1\n");
    let out = env.ok(&["rmi", "two"]);
    assert_eq!(out, format!("Untagged: two:latest\nDeleted: {id}\n"));
    assert_eq!(env.ok(&["images", "-q"]), "");

    let out = env.ok(&["prune"]);
    assert!(out.contains("deleted blob:"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert!(
        std::fs::read_dir(env.root().join("content/blobs/sha256"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        std::fs::read_dir(env.root().join("snapshots-v2"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn save_load_round_trip_in_both_formats() {
    let env = Env::new();
    let id = env.import_busybox("rt:1");
    for format in ["docker", "oci"] {
        let file = env.path(&format!("rt-{format}.tar"));
        env.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            "rt:1",
        ]);
        let other = Env::new();
        let out = other.ok(&["load", "-i", file.to_str().unwrap()]);
        assert_eq!(out, "Loaded image: rt:1\n", "{format}");
        assert_eq!(other.inspect("rt:1")["Id"], id, "{format}");
        let flat = other.path("flat.tar");
        other.ok(&["export", "rt:1", "-o", flat.to_str().unwrap()]);
        assert_eq!(tar_names(&flat), tar_names(&env.busybox_tar()));
    }
}

#[test]
fn truncated_or_corrupt_archive_leaves_the_store_as_it_was() {
    let env = Env::new();
    env.import_busybox("keep");
    let good = env.path("good.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        good.to_str().unwrap(),
        "keep",
    ]);
    let data = std::fs::read(&good).unwrap();

    let target = Env::new();
    target.import_busybox("already-there");
    target.ok(&["prune"]);
    let before = target.store_files();

    let truncated = env.path("truncated.tar");
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let (code, err) = target.fails(&["load", "-i", truncated.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("truncated"), "{err}");

    // Flip one byte inside the big layer blob: its digest no longer matches its name.
    let corrupt = env.path("corrupt.tar");
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&corrupt, &bad).unwrap();
    let (_, err) = target.fails(&["load", "-i", corrupt.to_str().unwrap()]);
    assert!(err.contains("digest"), "{err}");

    assert_eq!(target.ok(&["images", "-q"]).lines().count(), 1);
    target.ok(&["prune"]);
    assert_eq!(target.store_files(), before);
}

#[test]
fn docker_load_and_run_a_strata_image() {
    let env = Env::new();
    let name = unique_name("run");
    let id = env.import_busybox(&name);
    let file = env.path("for-docker.tar");
    env.ok(&["save", "-o", file.to_str().unwrap(), &name]);
    docker(&["load", "-i", file.to_str().unwrap()]);
    let out = docker(&[
        "run",
        "--rm",
        "--network=none",
        &name,
        "/bin/sh",
        "-c",
        "echo ran-in-docker; ls /bin/busybox",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ran-in-docker\n/bin/busybox"), "{stdout}");
    let docker_id = docker(&["image", "inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(String::from_utf8_lossy(&docker_id.stdout).trim(), id);
    docker(&["rmi", &name]);
}

#[test]
fn docker_save_loads_into_strata() {
    let env = Env::new();
    let name = unique_name("dsave");
    let tar = env.busybox_tar();
    docker(&["import", tar.to_str().unwrap(), &name]);
    let archive = env.path("docker-saved.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &name]);
    let docker_id = docker(&["image", "inspect", "-f", "{{.Id}}", &name]);
    docker(&["rmi", &name]);

    let out = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, format!("Loaded image: {name}:latest\n"));
    let info = env.inspect(&name);
    assert_eq!(
        info["Id"].as_str().unwrap(),
        String::from_utf8_lossy(&docker_id.stdout).trim()
    );
    let flat = env.path("flat.tar");
    env.ok(&["export", &name, "-o", flat.to_str().unwrap()]);
    assert_eq!(tar_names(&flat), tar_names(&tar));
}

#[test]
fn oci_archive_is_read_by_skopeo_and_umoci() {
    let env = Env::new();
    let id = env.import_busybox("ocitest:2");
    let file = env.path("oci.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        file.to_str().unwrap(),
        "ocitest:2",
    ]);

    let out = run_tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", file.display()),
        ],
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["rootfs"]["type"], "layers");

    let layout = env.path("layout");
    let status = StdCommand::new("tar")
        .arg("-C")
        .arg({
            std::fs::create_dir_all(&layout).unwrap();
            &layout
        })
        .arg("-xf")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = env.path("bundle");
    run_tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:2", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(bundle.join("rootfs/bin/sh").is_symlink());

    // And the layout directory itself loads back.
    let other = Env::new();
    other.ok(&["load", "-i", layout.to_str().unwrap()]);
    assert_eq!(other.inspect("ocitest:2")["Id"], id);
}

#[test]
fn skopeo_oci_archive_loads_into_strata() {
    let env = Env::new();
    let id = env.import_busybox("src:1");
    let docker_archive = env.path("d.tar");
    env.ok(&["save", "-o", docker_archive.to_str().unwrap(), "src:1"]);
    let oci = env.path("skopeo-oci.tar");
    run_tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", docker_archive.display()),
            &format!("oci-archive:{}:fromskopeo:3", oci.display()),
        ],
    );
    let other = Env::new();
    let out = other.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: fromskopeo:3\n");
    let info = other.inspect("fromskopeo:3");
    // skopeo rewrites the config when it converts to OCI (so the id differs) and recompresses
    // the layers; the uncompressed layers and the history are the same image.
    let original = env.inspect(&id);
    assert_eq!(info["RootFS"], original["RootFS"]);
    assert_eq!(info["Created"], original["Created"]);
    assert_eq!(info["History"], original["History"]);
}

#[test]
fn concurrent_processes_share_one_store() {
    let env = Env::new();
    env.import_busybox("base");
    let archive = env.path("base.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), "base"]);
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let mut children = Vec::new();
    for i in 0..12 {
        let mut c = StdCommand::new(&bin);
        c.env("STRATA_ROOT", env.root());
        match i % 4 {
            0 => c.args(["load", "-i", archive.to_str().unwrap()]),
            1 => c.args(["tag", "base", &format!("copy:{i}")]),
            2 => c.args(["prune"]),
            _ => c.args([
                "import",
                env.busybox_tar().to_str().unwrap(),
                &format!("imp:{i}"),
            ]),
        };
        children.push(c.stdout(std::process::Stdio::null()).spawn().unwrap());
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let listed = env.ok(&["images"]);
    assert_eq!(listed.matches("copy ").count(), 3, "{listed}");
    // Every named image is complete and verifies: export reads every blob and snapshot.
    for name in [
        "base", "copy:1", "copy:5", "copy:9", "imp:3", "imp:7", "imp:11",
    ] {
        let out = env.path(&format!("{}.tar", name.replace(':', "-")));
        env.ok(&["export", name, "-o", out.to_str().unwrap()]);
    }
    env.ok(&["prune"]);
    for name in ["base", "imp:11"] {
        env.ok(&["save", "-o", env.path("again.tar").to_str().unwrap(), name]);
    }
}

#[test]
fn debug_parse_matches_every_result_file() {
    let env = Env::new();
    let mut checked = 0;
    for case in std::fs::read_dir(conformance_dir().join("testfiles")).unwrap() {
        let case = case.unwrap().path();
        let dockerfile = case.join("Dockerfile");
        let out = env.ok(&["debug", "parse", dockerfile.to_str().unwrap()]);
        let want = std::fs::read_to_string(case.join("result")).unwrap();
        assert_eq!(out, want, "{}", case.display());
        checked += 1;
    }
    assert_eq!(checked, 33);
    for case in std::fs::read_dir(conformance_dir().join("testfiles-negative")).unwrap() {
        let dockerfile = case.unwrap().path().join("Dockerfile");
        let (code, err) = env.fails(&["debug", "parse", dockerfile.to_str().unwrap()]);
        assert_eq!(code, 1);
        // The report names the file (and the line and column when there is one).
        assert!(err.starts_with("Error: "), "{err}");
        assert!(err.contains("--> ") && err.contains("/Dockerfile"), "{err}");
    }
}
