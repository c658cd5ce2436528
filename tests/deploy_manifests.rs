//! deploy/ (Kubernetes manifests, GPU overlay, KServe runtime, Dockerfile) checked offline by
//! tools/deploy-check/check-manifests.py: strict Kubernetes JSON schemas (kubernetes-validate),
//! KServe's CRD schemas, `kubectl kustomize` renders, hadolint, and the deployment's promises.
//! The second test breaks one thing at a time in a copy and requires the check to name it, so
//! a check that passes everything cannot pass here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The deploy-check venv's python (kubectl and hadolint beside it), installed once per cache.
fn checker_python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let o = Command::new("bash").arg(repo().join("tools/setup-deploy-check.sh")).output().unwrap();
        assert!(o.status.success(), "setup-deploy-check failed: {}", String::from_utf8_lossy(&o.stderr));
        PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
    })
}

fn check(root: &Path, vqad: Option<&str>) -> (Output, String) {
    let mut cmd = Command::new(checker_python());
    cmd.arg(repo().join("tools/deploy-check/check-manifests.py")).arg("--root").arg(root);
    if let Some(v) = vqad {
        cmd.arg("--vqad").arg(v);
    }
    let o = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o, text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A throw-away root holding what the check reads: deploy/, .dockerignore, setup-native.sh.
fn copy_of_repo() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("deploy"), &t.path().join("deploy"));
    std::fs::copy(repo().join(".dockerignore"), t.path().join(".dockerignore")).unwrap();
    std::fs::create_dir_all(t.path().join("tools")).unwrap();
    std::fs::copy(repo().join("tools/setup-native.sh"), t.path().join("tools/setup-native.sh")).unwrap();
    t
}

#[test]
fn deploy_manifests_pass_the_offline_checks() {
    let (o, text) = check(repo(), Some(env!("CARGO_BIN_EXE_vqad")));
    println!("{text}");
    assert!(o.status.success(), "deploy/ fails its checks:\n{text}");
    // All six kustomizations (deploy/, base/, overlays/gpu/, kserve/, train/, release/)
    // rendered, nothing flagged.
    assert!(text.contains("6 kustomizations rendered (22 resources)"), "{text}");
    assert!(text.contains(": 0 problems"), "{text}");
}

#[test]
fn broken_manifests_are_refused_naming_file_and_problem() {
    // (file under the copy, text to find, replacement, what the report must say)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // A misspelt field: strict schema, in the file itself and in every render using it.
        ("deploy/base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true",
         &["deploy/base/deployment.yaml: deployment/vqad: [Kubernetes 1.37]", "'readOnlyRootFileSystem' was unexpected"]),
        ("deploy/base/deployment.yaml", "containerPort: 8000", "containerPort: \"8000\"",
         &["deploy/base/deployment.yaml: deployment/vqad: [Kubernetes 1.31] spec.template.spec.containers.0.ports.0.containerPort", "is not of type 'integer'"]),
        ("deploy/base/deployment.yaml", "readOnly: true", "readOnly: false",
         &["deploy/ (rendered): deployment/vqad: container vqad: volumeMount registry (--registry) must be readOnly"]),
        ("deploy/base/deployment.yaml", "path: /v2/health/ready", "path: /healthz",
         &["container vqad: readinessProbe must GET /v2/health/ready"]),
        ("deploy/base/deployment.yaml", "--poll-secs=30", "--poll-seconds=30",
         &["`vqad serve` has no flag --poll-seconds"]),
        ("deploy/base/deployment.yaml", "--max-inflight-mb=512", "--max-inflight-mb=1536",
         &["container vqad: --max-inflight-mb 1536 is more than half the memory limit 2Gi"]),
        ("deploy/kserve/servingruntime.yaml", "        - --max-inflight-mb=512\n", "",
         &["servingruntime/vqad: container kserve-container: --max-inflight-mb must be given"]),
        ("deploy/base/kustomization.yaml", "- hpa.yaml", "- hpa.yml",
         &["deploy/base/ (kubectl kustomize)", "deploy/base/hpa.yaml: is neither a resource nor a patch"]),
        ("deploy/overlays/gpu/deployment-gpu.yaml", "--providers=tensorrt,cuda,cpu", "--providers=cpu",
         &["deploy/overlays/gpu/ [patched by deploy/overlays/gpu/deployment-gpu.yaml", "GPU overlay must run --providers tensorrt,cuda,cpu"]),
        ("deploy/kserve/inferenceservice.yaml", "protocolVersion: v2", "protocolVersion: [v2]",
         &["deploy/kserve/inferenceservice.yaml: inferenceservice/vqad: [KServe CRD schema] spec.predictor.model.protocolVersion: ['v2'] is not of type 'string'"]),
        ("deploy/kserve/inferenceservice.yaml", "runtime: vqad", "runtime: triton",
         &["inferenceservice/vqad: runtime 'triton' is no ServingRuntime here"]),
        ("deploy/kserve/servingruntime.yaml", "name: kserve-container", "name: vqad",
         &["servingruntime/vqad: needs exactly one container named kserve-container"]),
        ("deploy/docker/Dockerfile", "ARG ORT_VERSION=1.31.1", "ARG ORT_VERSION=1.30.0",
         &["deploy/docker/Dockerfile: ARG ORT_VERSION=1.30.0 but tools/setup-native.sh pins"]),
        ("deploy/docker/Dockerfile", "USER 10001:10001", "USER root",
         &["deploy/docker/Dockerfile: stage train: USER must be a numeric non-root uid"]),
        // The training Job (deploy/train/).
        ("deploy/train/train-job.yaml", "  backoffLimitPerIndex: 2\n", "",
         &["deploy/train/ (rendered): job/vqad-train: backoffLimitPerIndex must be set"]),
        ("deploy/train/train-job.yaml", "completions: 3", "completions: 4",
         &["job/vqad-train: completions 4 but categories.txt lists 3 categories"]),
        ("deploy/train/train-job.yaml", "nvidia.com/gpu: 1", "nvidia.com/gpu: 0",
         &["job/vqad-train: each training pod needs nvidia.com/gpu: 1"]),
        ("deploy/train/train-job.yaml", "fieldPath: metadata.uid", "fieldPath: metadata.name",
         &["job/vqad-train: VQAD_K8S_POD_UID must come from the downward API fieldRef metadata.uid"]),
        ("deploy/train/train-category.sh", "args+=(--resume)", "args+=()",
         &["job/vqad-train: the script must resume (--resume)"]),
        ("deploy/train/kustomization.yaml", "    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000", "    newTag: 0.1.0",
         &["job/vqad-train: image registry.example.com/vqad-train:0.1.0 must be pinned by digest"]),
        // The release Job (deploy/release/).
        ("deploy/release/release-job.yaml", "mountPath: /etc/vqad/signing\n              readOnly: true", "mountPath: /etc/vqad/signing\n              readOnly: false",
         &["deploy/release/ (rendered): job/vqad-release: volumeMount signing-key (SIGNING_KEY) must be mounted readOnly"]),
        ("deploy/release/release-job.yaml", "          secret:\n            secretName: vqad-signing-key\n            defaultMode: 0440", "          configMap:\n            name: vqad-signing-key",
         &["job/vqad-release: volume signing-key (SIGNING_KEY) must be a Secret"]),
        ("deploy/release/release-job.yaml", "value: staging", "value: production",
         &["job/vqad-release: the release must promote to staging (CHANNEL is production)"]),
        ("deploy/release/release.sh", "vqad publish", "echo vqad-publish",
         &["job/vqad-release: the release script must run `vqad publish`"]),
        ("deploy/release/categories.txt", "screw", "cable",
         &["job/vqad-release: category cable is released but not trained by deploy/train"]),
    ];
    checker_python(); // install once, before the threads
    // Each case is a whole check run (~1.5 s); two at a time, one per CI core.
    std::thread::scope(|s| {
        for chunk in cases.chunks(cases.len().div_ceil(2)) {
            s.spawn(move || {
                for (file, find, replace, expect) in chunk {
                    let t = copy_of_repo();
                    let path = t.path().join(file);
                    let before = std::fs::read_to_string(&path).unwrap();
                    assert!(before.contains(find), "{file} no longer contains {find:?}: update this case");
                    std::fs::write(&path, before.replacen(find, replace, 1)).unwrap();
                    let (o, text) = check(t.path(), None);
                    assert_eq!(o.status.code(), Some(1), "{file}: {find:?} -> {replace:?} was not refused:\n{text}");
                    for e in *expect {
                        assert!(text.contains(e), "{file}: {find:?} -> {replace:?}: the report lacks {e:?}:\n{text}");
                    }
                }
            });
        }
    });
}
