//! Signed evaluation (`vqad eval --attest KEY --require image_auroc>=0.95`): per category two
//! in-toto statements about the package's archive digest, each in its own DSSE envelope:
//!
//! - in-toto's test-result v0.1 ([`TEST_RESULT_V01`]): `PASSED` or `FAILED` against the
//!   thresholds the user stated, with the test set's digests and the evaluation config as
//!   `configuration`;
//! - vqad's evaluation figures ([`EVALUATION_V1`], `schemas/evaluation.schema.json`): every
//!   figure per defect type and overall, the test set, the config, the providers that ran.
//!
//! An auditor checks both signatures with the package key, that their subject is the
//! archive they hold, and (`vqad audit --test`) that the figures come out again.

use super::ProvenanceError;
use crate::data::{dataset_digest, dir_hash, Category};
use crate::eval::report::{CategoryReport, MetricRow};
use crate::package::intoto::{self, ResourceDescriptor, Statement};
use crate::package::{package_file_name, SigningKey, TrustedKey, VerifiedPackage};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// in-toto's test-result predicate.
pub const TEST_RESULT_V01: &str = "https://in-toto.io/attestation/test-result/v0.1";
/// vqad's evaluation-figures predicate.
pub const EVALUATION_V1: &str = "https://vqad.invalid/attestations/evaluation/v1";
/// The folders of a category that make its test set, relative to the category folder.
pub const TEST_PATHS: [&str; 2] = ["test", "ground_truth"];
/// File name suffixes of the two statements.
pub const TEST_RESULT_SUFFIX: &str = "test-result.intoto.json";
pub const EVALUATION_SUFFIX: &str = "evaluation.intoto.json";

/// A stated threshold, e.g. `image_auroc>=0.95`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub metric: String,
    pub op: String,
    pub value: f64,
}

/// The figures a requirement may name (the columns of the evaluation report).
pub const METRICS: [&str; 9] =
    ["image_accuracy", "accuracy_good", "accuracy_defective", "pro", "pixel_auroc", "image_f1", "pixel_f1", "image_auroc", "aupro_30"];

impl Requirement {
    /// Parses `METRIC>=X` (also `>`, `<=`, `<`).
    pub fn parse(s: &str) -> Result<Self, ProvenanceError> {
        let bad = |why: &str| ProvenanceError::Invalid(format!("--require '{s}': {why} (e.g. image_auroc>=0.95; metrics: {})", METRICS.join(", ")));
        let at = s.find(['<', '>']).ok_or_else(|| bad("no comparison"))?;
        let metric = s[..at].trim();
        let rest = &s[at..];
        let op = if rest.starts_with(">=") || rest.starts_with("<=") { &rest[..2] } else { &rest[..1] };
        let value: f64 = rest[op.len()..].trim().parse().map_err(|_| bad("the threshold is not a number"))?;
        if !METRICS.contains(&metric) {
            return Err(bad(&format!("unknown metric '{metric}'")));
        }
        if !value.is_finite() {
            return Err(bad("the threshold is not finite"));
        }
        Ok(Requirement { metric: metric.into(), op: op.into(), value })
    }

    /// Whether `figures` meets it; a missing figure never does.
    pub fn met(&self, figure: Option<f64>) -> bool {
        let Some(x) = figure else { return false };
        match self.op.as_str() {
            ">=" => x >= self.value,
            ">" => x > self.value,
            "<=" => x <= self.value,
            _ => x < self.value,
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.metric, self.op, self.value)
    }
}

/// How the package was run for the figures; `vqad audit --test` runs it the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvalConfig {
    /// Overrides of the package's η and local constraint (absent: the package's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_constraint: Option<bool>,
    /// `incremental` or `naive`.
    pub resample: String,
    pub batch: usize,
    /// The validation share of train/good (for the report's diagnostics).
    pub val_fraction: f64,
}

/// The test set as measured: vqad's digest over its images and masks, and the in-toto
/// `dirHash` of `test/` and `ground_truth/` (recomputable with coreutils).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestSet {
    pub paths: Vec<String>,
    pub dir_hash: String,
    pub vqad_dataset: String,
    pub images: u64,
    pub defective: u64,
}

impl TestSet {
    /// Measures the test set of a category.
    pub fn measure(cat: &Category) -> Result<Self, ProvenanceError> {
        let mut files: Vec<PathBuf> = cat.test.iter().map(|t| t.path.clone()).collect();
        files.extend(cat.test.iter().filter_map(|t| t.mask.clone()));
        Ok(TestSet {
            paths: TEST_PATHS.iter().map(|s| s.to_string()).collect(),
            dir_hash: dir_hash(&cat.root, &TEST_PATHS)?,
            vqad_dataset: dataset_digest(&cat.root, &files)?,
            images: cat.test.len() as u64,
            defective: cat.test.iter().filter(|t| t.defect != "good").count() as u64,
        })
    }

    fn descriptor(&self, location: &Path) -> ResourceDescriptor {
        let loc = std::fs::canonicalize(location).unwrap_or_else(|_| location.to_path_buf());
        ResourceDescriptor {
            name: Some("test-set".into()),
            uri: Some(format!("file://{}", loc.display())),
            digest: BTreeMap::from([("dirHash".to_string(), self.dir_hash.clone()), (super::build::VQAD_DATASET_DIGEST.to_string(), self.vqad_dataset.clone())]),
            annotations: match serde_json::to_value(self) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => None,
            },
            ..Default::default()
        }
    }
}

/// One stated requirement and how it came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementResult {
    pub requirement: String,
    pub value: Option<f64>,
    pub passed: bool,
}

/// vqad's evaluation-figures predicate ([`EVALUATION_V1`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EvaluationFigures {
    pub category: String,
    pub test_set: TestSet,
    pub config: EvalConfig,
    /// Subset (defect type, `overall`) → metric → value; metrics that are undefined for a
    /// subset are absent.
    pub figures: BTreeMap<String, BTreeMap<String, f64>>,
    pub requirements: Vec<RequirementResult>,
    /// Graph → execution provider that ran it.
    pub providers: BTreeMap<String, String>,
    /// `vqad`, `onnxruntime` versions.
    pub software: BTreeMap<String, String>,
    pub evaluated_on: String,
}

/// in-toto's test-result predicate ([`TEST_RESULT_V01`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestResult {
    pub result: String,
    pub configuration: Vec<ResourceDescriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub passed_tests: Vec<String>,
    #[serde(default)]
    pub warned_tests: Vec<String>,
    #[serde(default)]
    pub failed_tests: Vec<String>,
}

/// The figures of a report's rows: subset → metric → value.
pub fn figures_of(rows: &[MetricRow]) -> BTreeMap<String, BTreeMap<String, f64>> {
    rows.iter()
        .map(|r| {
            let v = serde_json::to_value(r).unwrap_or_default();
            let m = METRICS.iter().filter_map(|k| v.get(*k).and_then(|x| x.as_f64()).map(|x| (k.to_string(), x))).collect();
            (r.subset.clone(), m)
        })
        .collect()
}

/// What [`attest`] wrote.
#[derive(Debug, Clone)]
pub struct Attested {
    pub passed: bool,
    pub test_result: PathBuf,
    pub evaluation: PathBuf,
    pub requirements: Vec<RequirementResult>,
}

/// Signs the two statements of one category's evaluation into `dir` (created; existing files
/// are refused): `<name>-<version>.test-result.intoto.json` and `….evaluation.intoto.json`.
#[allow(clippy::too_many_arguments)]
pub fn attest(
    pkg: &VerifiedPackage,
    cat: &Category,
    report: &CategoryReport,
    config: &EvalConfig,
    requirements: &[Requirement],
    providers: BTreeMap<String, String>,
    key: &SigningKey,
    dir: &Path,
) -> Result<Attested, ProvenanceError> {
    if requirements.is_empty() {
        return Err(ProvenanceError::Invalid("--attest needs at least one --require (e.g. image_auroc>=0.95): a test result passes or fails against stated thresholds".into()));
    }
    let test_set = TestSet::measure(cat)?;
    let figures = figures_of(&report.rows);
    let overall = figures.get("overall").cloned().unwrap_or_default();
    let results: Vec<RequirementResult> = requirements
        .iter()
        .map(|r| {
            let value = overall.get(&r.metric).copied();
            RequirementResult { requirement: r.to_string(), value, passed: r.met(value) }
        })
        .collect();
    let passed = results.iter().all(|r| r.passed);
    let subject = vec![ResourceDescriptor::file(&package_file_name(&pkg.manifest), &pkg.archive_sha256)];
    let cfg_bytes = super::canonical_json(&serde_json::to_value(config).map_err(|e| ProvenanceError::Invalid(e.to_string()))?);
    let tr = TestResult {
        result: if passed { "PASSED" } else { "FAILED" }.into(),
        configuration: vec![
            test_set.descriptor(&cat.root),
            ResourceDescriptor {
                name: Some("eval-config".into()),
                digest: BTreeMap::from([("sha256".to_string(), crate::fsutil::sha256_hex(&cfg_bytes))]),
                content: Some(base64::engine::general_purpose::STANDARD.encode(&cfg_bytes)),
                media_type: Some("application/json".into()),
                ..Default::default()
            },
        ],
        url: None,
        passed_tests: results.iter().filter(|r| r.passed).map(|r| r.requirement.clone()).collect(),
        warned_tests: vec![],
        failed_tests: results.iter().filter(|r| !r.passed).map(|r| r.requirement.clone()).collect(),
    };
    let fig = EvaluationFigures {
        category: cat.name.clone(),
        test_set,
        config: config.clone(),
        figures,
        requirements: results.clone(),
        providers,
        software: BTreeMap::from_iter(
            [("vqad".to_string(), Some(crate::VERSION.to_string())), ("onnxruntime".to_string(), crate::runtime::session::ort_version())]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v))),
        ),
        evaluated_on: super::now_rfc3339(),
    };
    std::fs::create_dir_all(dir).map_err(|e| ProvenanceError::io(dir, e))?;
    let id = pkg.manifest.id();
    let write = |suffix: &str, bytes: Vec<u8>| -> Result<PathBuf, ProvenanceError> {
        let p = dir.join(format!("{id}.{suffix}"));
        crate::fsutil::write_file(&p, &bytes, false).map_err(|e| ProvenanceError::io(&p, e))?;
        Ok(p)
    };
    let test_result = write(TEST_RESULT_SUFFIX, Statement::new(subject.clone(), TEST_RESULT_V01, tr).sign(key))?;
    let evaluation = write(EVALUATION_SUFFIX, Statement::new(subject, EVALUATION_V1, fig).sign(key))?;
    Ok(Attested { passed, test_result, evaluation, requirements: results })
}

/// A verified evaluation attestation of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EvaluationAttestation {
    TestResult(Statement<TestResult>),
    Figures(Statement<EvaluationFigures>),
}

impl EvaluationAttestation {
    /// Verifies an attestation envelope with `key` and parses it strictly by its predicate type.
    pub fn open(bytes: &[u8], key: &TrustedKey) -> Result<Self, ProvenanceError> {
        let any: Statement<serde_json::Value> = intoto::open_statement(bytes, key, None)?;
        let payload = serde_json::to_vec(&any).map_err(|e| ProvenanceError::Invalid(e.to_string()))?;
        match any.predicate_type.as_str() {
            TEST_RESULT_V01 => Ok(Self::TestResult(intoto::parse_statement(&payload, Some(TEST_RESULT_V01))?)),
            EVALUATION_V1 => Ok(Self::Figures(intoto::parse_statement(&payload, Some(EVALUATION_V1))?)),
            other => Err(ProvenanceError::Invalid(format!("predicate type '{other}' is not an evaluation attestation ({TEST_RESULT_V01} or {EVALUATION_V1})"))),
        }
    }

    /// The (name, sha256) of its one subject.
    pub fn subject(&self) -> Vec<(Option<String>, Option<String>)> {
        let s = match self {
            Self::TestResult(s) => &s.subject,
            Self::Figures(s) => &s.subject,
        };
        s.iter().map(|d| (d.name.clone(), d.digest.get("sha256").cloned())).collect()
    }

    /// Short name for listings: `test-result PASSED`, `evaluation`.
    pub fn label(&self) -> String {
        match self {
            Self::TestResult(s) => format!("test-result {}", s.predicate.result),
            Self::Figures(_) => "evaluation".into(),
        }
    }

    /// Checks that it is about exactly `pkg`'s archive.
    pub fn check_subject(&self, pkg: &VerifiedPackage) -> Result<(), String> {
        let want = (Some(package_file_name(&pkg.manifest)), Some(pkg.archive_sha256.clone()));
        let got = self.subject();
        if got.len() != 1 || got[0] != want {
            let shown: Vec<String> = got.iter().map(|(n, d)| format!("{} sha256 {}", n.as_deref().unwrap_or("?"), d.as_deref().unwrap_or("?"))).collect();
            return Err(format!(
                "it is about {}, not this package ({} sha256 {})",
                shown.join(", "),
                want.0.unwrap_or_default(),
                pkg.archive_sha256
            ));
        }
        Ok(())
    }
}

/// Attestation files beside a package: `DIR/attestations/*.intoto.json` where DIR holds the
/// package (a registry version folder keeps them there; see `vqad publish --attestation`).
pub fn beside(package: &Path) -> Vec<PathBuf> {
    let dir = package.parent().unwrap_or(Path::new(".")).join(crate::registry::ATTESTATIONS_DIR);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.to_string_lossy().ends_with(".intoto.json")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_parse_and_compare() {
        let r = Requirement::parse("image_auroc>=0.95").unwrap();
        assert_eq!((r.metric.as_str(), r.op.as_str(), r.value), ("image_auroc", ">=", 0.95));
        assert!(r.met(Some(0.95)) && !r.met(Some(0.9499)) && !r.met(None));
        assert!(Requirement::parse("pro < 0.5").unwrap().met(Some(0.4)));
        assert_eq!(Requirement::parse("pixel_auroc>0.9").unwrap().to_string(), "pixel_auroc>0.9");
        for bad in ["image_auroc", "auc>=0.9", "image_auroc>=x", "image_auroc>=inf"] {
            assert!(Requirement::parse(bad).is_err(), "{bad}");
        }
    }
}
