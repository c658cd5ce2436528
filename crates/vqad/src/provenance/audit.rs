//! `vqad audit`: every claim a package makes, held against the world, one check per line.
//!
//! A check passes, fails (with the reason) or is not run (with the reason: a flag not given,
//! or a check it depends on failed, so that one wrong input fails exactly one check). The
//! audit passes when every check that ran passed. The JSON form is
//! `schemas/audit.schema.json`.

use super::build::{BuildProvenance, TRAIN_PATH};
use super::rebuild::{check_rebuild, RebuildResult, Rebuilder};
use super::evaluation::{figures_of, EvalConfig, EvaluationAttestation, EvaluationFigures, TestSet, TEST_RESULT_V01};
use crate::data::{dataset_digest, dir_hash, split_validation, Category};
use crate::eval::report::{evaluate_category, EvalOptions};
use crate::package::intoto::Statement;
use crate::package::{TrustedKey, VerifiedPackage};
use crate::runtime::{Detector, DetectorOptions, ResampleMode};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The checks, in the order they run and print.
pub const CHECKS: [(&str, &str); 10] = [
    ("signature", "signature and every file verify (as `vqad verify`)"),
    ("provenance", "build provenance verifies and names exactly the package's files"),
    ("parameters", "provenance parameters equal the manifest (RFC 8785)"),
    ("training-data", "training data: dataset digest, dirHash and split equal the provenance"),
    ("source-commit", "source checkout is at the recorded commit"),
    ("source-clean", "source tree clean (at build time and now)"),
    ("attestation", "evaluation attestations verify and are about this archive"),
    ("test-data", "test set: digests equal the attestation's"),
    ("evaluation", "evaluation rerun here gives the attested figures"),
    ("rebuild", "retrained from the recorded inputs: same graphs and codebook"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Fail,
    NotRun,
}

impl CheckStatus {
    fn word(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Fail => "FAIL",
            CheckStatus::NotRun => "NOT RUN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub title: &'static str,
    pub status: CheckStatus,
    pub reason: String,
}

/// What the auditor gave.
#[derive(Default)]
pub struct AuditOptions<'a> {
    /// The category folder the package was trained on (`train/good`).
    pub data: Option<&'a Path>,
    /// The category folder holding the test set (`test/`, `ground_truth/`).
    pub test: Option<&'a Path>,
    /// A git checkout of vqad's source.
    pub source: Option<&'a Path>,
    /// Evaluation attestations (DSSE envelopes).
    pub attestations: Vec<PathBuf>,
    /// How to run the package for the evaluation rerun (providers, ONNX Runtime library).
    pub detector: DetectorOptions,
    pub rebuild: Option<Rebuilder<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub package: PathBuf,
    pub name: Option<String>,
    pub version: Option<String>,
    pub archive_sha256: Option<String>,
    pub passed: bool,
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildResult>,
}

impl AuditReport {
    /// The checks that ran and failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail).collect()
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == name)
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "vqad audit: {} {} ({}{})\n",
            self.name.as_deref().unwrap_or("?"),
            self.version.as_deref().unwrap_or("?"),
            self.package.display(),
            self.archive_sha256.as_ref().map(|d| format!(", archive sha256 {d}")).unwrap_or_default()
        );
        for c in &self.checks {
            s.push_str(&format!("  {:<8} {:<14} {}: {}\n", c.status.word(), c.check, c.title, c.reason));
        }
        let ran = self.checks.iter().filter(|c| c.status != CheckStatus::NotRun).count();
        let failed = self.failed();
        if failed.is_empty() {
            s.push_str(&format!("result: PASS ({ran} checks ran, all passed; {} not run)\n", self.checks.len() - ran));
        } else {
            let names: Vec<&str> = failed.iter().map(|c| c.check).collect();
            s.push_str(&format!("result: FAIL ({} of {ran} checks that ran failed: {})\n", failed.len(), names.join(", ")));
        }
        s
    }
}

struct Checklist(Vec<Check>);

impl Checklist {
    fn set(&mut self, name: &str, status: CheckStatus, reason: impl Into<String>) {
        let c = self.0.iter_mut().find(|c| c.check == name).expect("known check");
        c.status = status;
        c.reason = reason.into();
    }
    fn result(&mut self, name: &str, r: Result<String, String>) -> bool {
        match r {
            Ok(why) => {
                self.set(name, CheckStatus::Pass, why);
                true
            }
            Err(why) => {
                self.set(name, CheckStatus::Fail, why);
                false
            }
        }
    }
}

/// Runs every check that the options allow on the package at `path`.
pub fn audit(path: &Path, key: &TrustedKey, o: &AuditOptions) -> AuditReport {
    let mut cl = Checklist(CHECKS.iter().map(|(c, t)| Check { check: c, title: t, status: CheckStatus::NotRun, reason: String::new() }).collect());
    for (name, _) in CHECKS {
        cl.set(name, CheckStatus::NotRun, "the package did not verify");
    }
    let mut report = AuditReport { package: path.to_path_buf(), name: None, version: None, archive_sha256: None, passed: false, checks: vec![], rebuild: None };
    let pkg = match VerifiedPackage::open(path, key) {
        Ok(p) => p,
        Err(e) => {
            cl.set("signature", CheckStatus::Fail, format!("refused: {e}"));
            report.checks = cl.0;
            return report;
        }
    };
    report.name = Some(pkg.manifest.name.clone());
    report.version = Some(pkg.manifest.version.clone());
    report.archive_sha256 = Some(pkg.archive_sha256.clone());
    cl.set(
        "signature",
        CheckStatus::Pass,
        format!("model.sig verifies with key {}…; {} files re-hashed", &pkg.key_fingerprint[..16], pkg.files.len()),
    );

    // Provenance and what depends on it.
    let prov = match BuildProvenance::of(&pkg) {
        Ok(Some(p)) => {
            cl.set("provenance", CheckStatus::Pass, format!(
                "{} verifies with the package key; its {} subjects are the package's other files; builder {}",
                crate::package::PROVENANCE_FILE,
                p.statement.subject.len(),
                p.predicate().run_details.builder.id
            ));
            Some(p)
        }
        Ok(None) => {
            cl.set("provenance", CheckStatus::Fail, format!(
                "no provenance: this package (format {}) carries no {}; nothing links it to its data, source or build",
                pkg.manifest.format_version,
                crate::package::PROVENANCE_FILE
            ));
            None
        }
        Err(e) => {
            cl.set("provenance", CheckStatus::Fail, e.to_string());
            None
        }
    };
    let no_prov = "no readable provenance";
    for c in ["parameters", "training-data", "source-commit", "source-clean", "rebuild"] {
        cl.set(c, CheckStatus::NotRun, no_prov);
    }
    let mut data_ok = false;
    if let Some(p) = &prov {
        cl.result("parameters", check_parameters(p, &pkg));
        match o.data {
            None => cl.set("training-data", CheckStatus::NotRun, "--data not given"),
            Some(d) => data_ok = cl.result("training-data", check_data(p, d)),
        }
        match o.source {
            None => {
                cl.set("source-commit", CheckStatus::NotRun, "--source not given");
                cl.set("source-clean", CheckStatus::NotRun, "--source not given");
            }
            Some(s) => {
                let (commit, clean) = check_source(p, s);
                cl.result("source-commit", commit);
                cl.result("source-clean", clean);
            }
        }
    }

    // Evaluation attestations.
    let mut figures: Option<Statement<EvaluationFigures>> = None;
    let mut attestations = o.attestations.clone();
    for p in super::evaluation::beside(path) {
        if !attestations.contains(&p) {
            attestations.push(p);
        }
    }
    if attestations.is_empty() {
        cl.set("attestation", CheckStatus::NotRun, "no evaluation attestation given (--attestation, or attestations/ beside the package)");
    } else {
        match check_attestations(&attestations, key, &pkg) {
            Ok((why, f)) => {
                cl.set("attestation", CheckStatus::Pass, why);
                figures = f;
            }
            Err(why) => cl.set("attestation", CheckStatus::Fail, why),
        }
    }
    match (o.test, &figures) {
        (None, _) => {
            cl.set("test-data", CheckStatus::NotRun, "--test not given");
            cl.set("evaluation", CheckStatus::NotRun, "--test not given");
        }
        (Some(_), None) => {
            let why = if attestations.is_empty() { "no evaluation attestation to compare with" } else { "no verified evaluation-figures attestation" };
            cl.set("test-data", CheckStatus::NotRun, why);
            cl.set("evaluation", CheckStatus::NotRun, why);
        }
        (Some(t), Some(f)) => match Category::open(t) {
            Err(e) => {
                cl.set("test-data", CheckStatus::Fail, e.to_string());
                cl.set("evaluation", CheckStatus::NotRun, "the test set could not be read");
            }
            Ok(cat) => {
                if cl.result("test-data", check_test_set(&cat, &f.predicate)) {
                    cl.result("evaluation", check_evaluation(&pkg, &cat, &f.predicate, &o.detector));
                } else {
                    cl.set("evaluation", CheckStatus::NotRun, "the test set is not the attested one");
                }
            }
        },
    }

    // Rebuild.
    if let Some(p) = &prov {
        match (o.rebuild, o.data) {
            (None, _) => cl.set("rebuild", CheckStatus::NotRun, "--rebuild not given"),
            (Some(_), None) => cl.set("rebuild", CheckStatus::NotRun, "--rebuild needs --data (the training data)"),
            (Some(_), Some(_)) if !data_ok => cl.set("rebuild", CheckStatus::NotRun, "the data is not the recorded training data"),
            (Some(r), Some(d)) => {
                let (res, detail) = check_rebuild(p, &pkg, d, r);
                cl.result("rebuild", res);
                report.rebuild = detail;
            }
        }
    }
    report.passed = cl.0.iter().all(|c| c.status != CheckStatus::Fail);
    report.checks = cl.0;
    report
}

/// The first path where two JSON values differ, for messages.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value as V;
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &format!("{at}.{k}")),
                (p, q) => Some(format!("{at}.{k} ({} vs {})", show(p), show(q))),
            })
        }
        (V::Array(x), V::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")))
        }
        _ if super::canonical_json(a) != super::canonical_json(b) => Some(format!("{at} ({a} vs {b})")),
        _ => None,
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into())
}

fn check_parameters(p: &BuildProvenance, pkg: &VerifiedPackage) -> Result<String, String> {
    let ext = p.external();
    let m = &pkg.manifest;
    let mut problems = vec![];
    if super::canonical_json(&ext.config) != super::canonical_json(&m.provenance.training_config) {
        let at = first_difference(&ext.config, &m.provenance.training_config, "config").unwrap_or_else(|| "config".into());
        problems.push(format!("the provenance's training config differs from the manifest's at {at} (provenance vs manifest)"));
    }
    if ext.seed != m.provenance.seed {
        problems.push(format!("seed {} vs the manifest's {}", ext.seed, m.provenance.seed));
    }
    if (ext.name.as_str(), ext.version.as_str()) != (m.name.as_str(), m.version.as_str()) {
        problems.push(format!("{} {} vs the manifest's {} {}", ext.name, ext.version, m.name, m.version));
    }
    let cfg_preset = ext.config.get("preset").and_then(|v| v.as_str()).unwrap_or_default();
    if ext.preset != cfg_preset {
        problems.push(format!("preset '{}' vs the config's '{cfg_preset}'", ext.preset));
    }
    if let Some(k) = ext.config.get("kind").and_then(|v| v.as_str()) {
        if k != ext.kind {
            problems.push(format!("kind '{}' vs the config's '{k}'", ext.kind));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "config (RFC 8785, {} bytes), seed {}, preset {}, kind {}, {} {} equal the manifest",
            super::canonical_json(&ext.config).len(),
            ext.seed,
            ext.preset,
            ext.kind,
            ext.name,
            ext.version
        ))
    } else {
        Err(problems.join("; "))
    }
}

fn check_data(p: &BuildProvenance, dir: &Path) -> Result<String, String> {
    let (digest, dirhash, ann) = p.data().map_err(|e| e.to_string())?;
    let cat = Category::open_train_only(dir).map_err(|e| e.to_string())?;
    let ours = dataset_digest(&cat.root, &cat.train_good).map_err(|e| e.to_string())?;
    let our_hash = dir_hash(&cat.root, &[TRAIN_PATH]).map_err(|e| e.to_string())?;
    let val_fraction = p.external().config.pointer("/train/val_fraction").and_then(|v| v.as_f64()).unwrap_or(0.1);
    let (train, val) = split_validation(&cat.train_good, val_fraction);
    let rel = |f: &PathBuf| f.strip_prefix(&cat.root).unwrap_or(f).to_string_lossy().replace('\\', "/");
    let val_files: Vec<String> = val.iter().map(rel).collect();
    let mut problems = vec![];
    if ours != digest {
        problems.push(format!("vqad dataset digest of {}/{TRAIN_PATH} is {ours}, the provenance records {digest}", dir.display()));
    }
    match &dirhash {
        Some(h) if *h != our_hash => problems.push(format!("dirHash is {our_hash}, the provenance records {h}")),
        Some(_) => {}
        None => problems.push("the provenance records no dirHash (trained before vqad recorded one)".into()),
    }
    if cat.train_good.len() as u64 != ann.images {
        problems.push(format!("{} images, the provenance records {}", cat.train_good.len(), ann.images));
    }
    if val_files != ann.validation_files || train.len() as u64 != ann.train_images || val.len() as u64 != ann.validation_images {
        problems.push(format!(
            "the split (validation fraction {val_fraction}) gives {} train / {} validation images, the provenance records {} / {}{}",
            train.len(),
            val.len(),
            ann.train_images,
            ann.validation_images,
            if val_files != ann.validation_files { " with other validation files" } else { "" }
        ));
    }
    if problems.is_empty() {
        Ok(format!("{} images: digest {}…, dirHash {}…, split {} train / {} validation equal the provenance", ann.images, &digest[..16], &our_hash[..16], ann.train_images, ann.validation_images))
    } else {
        Err(problems.join("; "))
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let o = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().map_err(|e| format!("running git: {e}"))?;
    if !o.status.success() {
        return Err(format!("{}: git {}: {}", dir.display(), args.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn check_source(p: &BuildProvenance, dir: &Path) -> (Result<String, String>, Result<String, String>) {
    let (recorded, ann) = match p.source() {
        Ok(s) => s,
        Err(e) => return (Err(e.to_string()), Err(e.to_string())),
    };
    let commit = (|| {
        let head = git(dir, &["rev-parse", "--verify", "HEAD"])?.trim().to_string();
        match &recorded {
            None => Err(format!("the provenance records no commit ({})", ann.note.as_deref().unwrap_or("unknown"))),
            Some(c) if *c == head => Ok(format!("{} is at {c}", dir.display())),
            Some(c) => Err(format!("{} is at {head}, the provenance records {c}", dir.display())),
        }
    })();
    let clean = (|| {
        let status = git(dir, &["status", "--porcelain", "--untracked-files=normal"])?;
        let changed: Vec<&str> = status.lines().collect();
        let mut problems = vec![];
        if !changed.is_empty() {
            let shown: Vec<&str> = changed.iter().take(5).copied().collect();
            problems.push(format!("{} has {} uncommitted change(s): {}", dir.display(), changed.len(), shown.join(", ")));
        }
        match ann.clean {
            Some(true) => {}
            Some(false) => problems.push("the build's checkout was not clean (recorded)".into()),
            None => problems.push("the build did not record whether its checkout was clean".into()),
        }
        if problems.is_empty() {
            Ok(format!("{} is clean and the build's checkout was clean", dir.display()))
        } else {
            Err(problems.join("; "))
        }
    })();
    (commit, clean)
}

type Verified = (String, Option<Statement<EvaluationFigures>>);

fn check_attestations(files: &[PathBuf], key: &TrustedKey, pkg: &VerifiedPackage) -> Result<Verified, String> {
    let mut figures: Option<Statement<EvaluationFigures>> = None;
    let mut results = vec![];
    let mut labels = vec![];
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let a = EvaluationAttestation::open(&bytes, key).map_err(|e| format!("{}: {e}", f.display()))?;
        a.check_subject(pkg).map_err(|e| format!("{}: {e}", f.display()))?;
        labels.push(a.label());
        match a {
            EvaluationAttestation::Figures(s) => {
                if figures.replace(s).is_some() {
                    return Err(format!("{}: a second evaluation-figures attestation for the same package", f.display()));
                }
            }
            EvaluationAttestation::TestResult(s) => results.push((f.clone(), s)),
        }
    }
    // A test result must agree with the figures it was decided on.
    if let Some(fig) = &figures {
        for (f, r) in &results {
            let passed: Vec<&String> = fig.predicate.requirements.iter().filter(|x| x.passed).map(|x| &x.requirement).collect();
            let failed: Vec<&String> = fig.predicate.requirements.iter().filter(|x| !x.passed).map(|x| &x.requirement).collect();
            let want = if failed.is_empty() { "PASSED" } else { "FAILED" };
            if r.predicate.result != want || r.predicate.passed_tests.iter().collect::<Vec<_>>() != passed || r.predicate.failed_tests.iter().collect::<Vec<_>>() != failed {
                return Err(format!("{}: {TEST_RESULT_V01} says {} but the attested figures give {want}", f.display(), r.predicate.result));
            }
            let digests = r.predicate.configuration.iter().find(|c| c.name.as_deref() == Some("test-set")).map(|c| c.digest.clone()).unwrap_or_default();
            if digests.get("dirHash") != Some(&fig.predicate.test_set.dir_hash) {
                return Err(format!("{}: its test set is not the one of the evaluation figures", f.display()));
            }
        }
    }
    Ok((format!("{} attestation(s) verify with the package key and name archive sha256 {}…: {}", files.len(), &pkg.archive_sha256[..16], labels.join(", ")), figures))
}

fn check_test_set(cat: &Category, fig: &EvaluationFigures) -> Result<String, String> {
    let ours = TestSet::measure(cat).map_err(|e| e.to_string())?;
    let t = &fig.test_set;
    let mut problems = vec![];
    if ours.dir_hash != t.dir_hash {
        problems.push(format!("dirHash of test/ and ground_truth/ is {}, the attestation records {}", ours.dir_hash, t.dir_hash));
    }
    if ours.vqad_dataset != t.vqad_dataset {
        problems.push(format!("vqad digest of the test images and masks is {}, the attestation records {}", ours.vqad_dataset, t.vqad_dataset));
    }
    if (ours.images, ours.defective) != (t.images, t.defective) {
        problems.push(format!("{} test images ({} defective), the attestation records {} ({})", ours.images, ours.defective, t.images, t.defective));
    }
    if problems.is_empty() {
        Ok(format!("{} test images: dirHash {}…, digest {}… equal the attestation", t.images, &t.dir_hash[..16], &t.vqad_dataset[..16]))
    } else {
        Err(problems.join("; "))
    }
}

fn check_evaluation(pkg: &VerifiedPackage, cat: &Category, fig: &EvaluationFigures, det_opts: &DetectorOptions) -> Result<String, String> {
    let c: &EvalConfig = &fig.config;
    let mut opts = det_opts.clone();
    opts.eta = c.eta;
    opts.local_constraint = c.local_constraint;
    opts.mode = if c.resample == "naive" { ResampleMode::Naive } else { ResampleMode::Incremental };
    opts.batch = c.batch.max(1);
    let mut det = Detector::from_verified(pkg, opts).map_err(|e| e.to_string())?;
    let out = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nothing = |_: usize, _: usize| {};
    let r = evaluate_category(
        &mut det,
        cat,
        &pkg.path.display().to_string(),
        &pkg.manifest.version,
        &EvalOptions { out: out.path(), ablation: false, variants: None, val_fraction: c.val_fraction, progress: &nothing, decode: Default::default() },
    )
    .map_err(|e| e.to_string())?;
    let ours = figures_of(&r.rows);
    let same_build = fig.software.get("vqad").map(String::as_str) == Some(crate::VERSION)
        && fig.software.get("onnxruntime") == crate::runtime::session::ort_version().as_ref();
    // Same vqad and ONNX Runtime: the figures must come out identical. Otherwise kernels may
    // round differently; the tolerance used is stated.
    let tol = if same_build { 0.0 } else { 1e-6 };
    let mut worst: (f64, String) = (0.0, String::new());
    let mut problems = vec![];
    for (subset, m) in &fig.figures {
        for (k, v) in m {
            match ours.get(subset).and_then(|x| x.get(k)) {
                None => problems.push(format!("{subset}.{k}: attested {v}, not computed here")),
                Some(x) => {
                    let d = (x - v).abs();
                    if d > worst.0 || worst.1.is_empty() {
                        worst = (d, format!("{subset}.{k}"));
                    }
                    if d > tol {
                        problems.push(format!("{subset}.{k}: attested {v}, here {x} (|Δ| {d:.3e})"));
                    }
                }
            }
        }
    }
    let n: usize = fig.figures.values().map(|m| m.len()).sum();
    let tol_text = if same_build { "tolerance 0 (same vqad and ONNX Runtime)".to_string() } else { format!("tolerance {tol:e} (another vqad or ONNX Runtime build)") };
    if problems.is_empty() {
        Ok(format!("{n} figures equal the attested ones, {tol_text}; largest |Δ| {:.3e} ({})", worst.0, worst.1))
    } else {
        Err(format!("{} of {n} figures differ, {tol_text}: {}", problems.len(), problems.join("; ")))
    }
}
