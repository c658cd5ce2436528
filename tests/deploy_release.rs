//! The Kubernetes training and release scripts (deploy/train/train-category.sh,
//! deploy/release/release.sh) run here as their pods would run them, with the environment the
//! Jobs give them: two categories trained by index (one of them restarted, so it resumes),
//! then packaged, evaluated with signed attestations, published and promoted to staging, with
//! the provenance naming the Jobs.
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn vqad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqad"))
}

/// PATH with the built vqad and vqad-train first, as in the image.
fn path_env() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_vqad")).parent().unwrap().to_path_buf();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

const IMAGE: &str = "registry.example.com/vqad-train@sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn pod(script: &str, job: &str, uid: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join(script))
        .env("PATH", path_env())
        .env("VQAD_K8S_NAMESPACE", "ml")
        .env("VQAD_K8S_JOB", job)
        .env("VQAD_K8S_POD_UID", uid)
        .env("VQAD_IMAGE", IMAGE)
        .env("OMP_NUM_THREADS", "1");
    c
}

fn output(c: &mut Command) -> (Output, String) {
    let o = c.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o, text)
}

#[test]
fn the_training_and_release_scripts_train_resume_package_publish_and_promote() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data = d.join("data");
    for cat in ["alpha", "beta"] {
        let o = vqad().args(["synth", "--category", cat, "--size", "64", "--train", "20", "--test-good", "2", "--test-bad", "2", "--out"]).arg(&data).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let list = d.join("categories.txt");
    std::fs::write(&list, "# trained by index\nalpha\n\nbeta\n").unwrap();
    std::fs::write(d.join("quick.toml"), "[train]\nvqvae_epochs = 2\nprior_epochs = 2\nmax_steps_per_epoch = 2\n").unwrap();
    let runs = d.join("runs");
    let train = |index: u32| {
        let mut c = pod("deploy/train/train-category.sh", "vqad-train", &format!("train-pod-{index}"));
        c.env("JOB_COMPLETION_INDEX", index.to_string())
            .env("CATEGORIES_FILE", &list)
            .env("DATA_DIR", &data)
            .env("RUNS_DIR", &runs)
            .env("PRESET", "tiny")
            .env("DEVICE", "cpu")
            .env("CONFIG", d.join("quick.toml"));
        output(&mut c)
    };
    for i in 0..2 {
        let (o, text) = train(i);
        assert!(o.status.success(), "index {i}:\n{text}");
        assert!(text.contains(&format!("index {i} -> {}", ["alpha", "beta"][i as usize])), "{text}");
    }
    // A restarted pod of index 1 finds its run and resumes it (here: already complete).
    let (o, text) = train(1);
    assert!(o.status.success() && text.contains("continuing the run") && text.contains("already trained"), "{text}");
    // An index beyond the list fails that index alone, naming why.
    let (o, text) = train(2);
    assert!(!o.status.success() && text.contains("index 2 has no line"), "{text}");

    // The release.
    let o = vqad().arg("keygen").arg("--out").arg(d.join("release")).output().unwrap();
    assert!(o.status.success());
    let registry = d.join("registry");
    let release = |image: &str, dist: &str| {
        let mut c = pod("deploy/release/release.sh", "vqad-release", "release-pod-1");
        c.env("VQAD_IMAGE", image)
            .env("CATEGORIES_FILE", &list)
            .env("RUNS_DIR", &runs)
            .env("DATA_DIR", &data)
            .env("REGISTRY_DIR", &registry)
            .env("RELEASE_VERSION", "1.0.0")
            .env("SIGNING_KEY", d.join("release.key"))
            .env("PUBKEY", d.join("release.pub"))
            .env("REQUIRE", "image_auroc>=0 pixel_auroc>=0")
            .env("DIST_DIR", d.join(dist));
        output(&mut c)
    };
    // An image not pinned by digest cannot name the builder: every category fails.
    let (o, text) = release("registry.example.com/vqad-train:latest", "dist-unpinned");
    assert!(!o.status.success() && text.contains("not pinned by digest") && text.contains("failed: alpha beta"), "{text}");
    let (o, text) = release(IMAGE, "dist");
    assert!(o.status.success(), "{text}");
    assert!(text.contains("every category published and promoted to staging"), "{text}");

    let key = vqad::package::TrustedKey::load(&d.join("release.pub")).unwrap();
    for (i, cat) in ["alpha", "beta"].iter().enumerate() {
        let r = vqad::registry::resolve(&registry, &format!("{cat}@staging"), &key, &Default::default()).unwrap();
        assert_eq!(r.version, "1.0.0");
        let b = vqad::provenance::BuildProvenance::of(&r.package).unwrap().unwrap();
        let id = &b.predicate().run_details.builder.id;
        assert_eq!(id, &format!("https://vqad.invalid/builders/kubernetes-job?namespace=ml&job=vqad-release&pod=release-pod-1&image={IMAGE}"));
        assert_eq!(b.predicate().run_details.metadata.invocation_id, "ml/vqad-release/release-pod-1");
        assert_eq!(
            b.internal().training_builder.as_deref(),
            Some(format!("https://vqad.invalid/builders/kubernetes-job?namespace=ml&job=vqad-train&pod=train-pod-{i}&image={IMAGE}").as_str())
        );
        let entry = vqad::registry::list(&registry, Some(cat)).unwrap().remove(0);
        assert_eq!(entry.attestations.len(), 2, "{entry:?}");
        let published: PathBuf = registry.join(&entry.path);
        let o = vqad().arg("audit").arg(&published).arg("--pubkey").arg(d.join("release.pub")).arg("--data").arg(data.join(cat)).arg("--test").arg(data.join(cat)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}
