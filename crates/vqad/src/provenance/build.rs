//! The SLSA build provenance v1 of a package, of vqad's build type [`BUILD_TYPE`]
//! (`schemas/build-type-v1.md` says what it means; `schemas/provenance.schema.json` is its
//! shape). Every struct refuses unknown fields, so what vqad reads back is exactly what this
//! build type defines.

use super::builder::Builder;
use super::ProvenanceError;
use crate::package::intoto::{self, ResourceDescriptor, Statement, SLSA_PROVENANCE_V1};
use crate::package::{Manifest, SigningKey, VerifiedPackage, PROVENANCE_FILE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a vqad build is: train a VQ-VAE and a PixelSNAIL prior on a category's normal images
/// with the recorded config and seed, export the three graphs and the codebook, tune η and
/// the thresholds on the validation normals, and package them.
pub const BUILD_TYPE: &str = "https://vqad.invalid/build-types/train-package/v1";
/// `resolvedDependencies` names.
pub const DEP_DATA: &str = "training-data";
pub const DEP_SOURCE: &str = "source";
pub const DEP_LIBTORCH: &str = "libtorch";
pub const DEP_ONNXRUNTIME: &str = "onnxruntime";
pub const DEP_RUSTC: &str = "rustc";
/// The digest key of vqad's own dataset digest (`data::dataset_digest`) in a DigestSet, beside
/// the in-toto `dirHash`.
pub const VQAD_DATASET_DIGEST: &str = "vqadDataset";
/// The folder of a category the training data is, relative to the category folder.
pub const TRAIN_PATH: &str = "train/good";

/// The SLSA provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlsaProvenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// What the user asked for: everything that decides the weights, given the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalParameters {
    /// Package name and version (`vqad package --name --version`).
    pub name: String,
    pub version: String,
    /// The category folder's name the data came from.
    pub category: String,
    /// `texture` or `object`: the augmentation that was applied.
    pub kind: String,
    pub preset: String,
    pub seed: u64,
    /// The exact training config (`vqad::config::Config` as JSON; compared in RFC 8785 form).
    pub config: serde_json::Value,
}

/// Settings of the build platform that decide whether a rebuild is bit-identical.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InternalParameters {
    /// libtorch device of training (`cpu`, `cuda:0`).
    pub device: String,
    /// libtorch intra-op and inter-op threads during training.
    pub torch_threads: i64,
    pub torch_interop_threads: i64,
    /// libtorch's compute backends in this build (`openmp`, `mkl`, `mkldnn` = oneDNN).
    #[serde(default)]
    pub backends: Vec<String>,
    /// The environment variables that steer libtorch, OpenMP, MKL and oneDNN (threads,
    /// instruction set, conditional numerical reproducibility) as they were set; unset ones
    /// are absent. A rebuild runs with exactly these.
    pub environment: BTreeMap<String, String>,
    /// CPU model of the training machine (`/proc/cpuinfo`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// The builder that trained, when training and packaging ran apart (e.g. deploy/train/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_builder: Option<String>,
}

/// The variables recorded in [`InternalParameters::environment`].
pub const DETERMINISM_VARS: [&str; 9] = [
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "CUBLAS_WORKSPACE_CONFIG",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: BuilderInfo,
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildMetadata {
    pub invocation_id: String,
    /// Training start, RFC 3339.
    pub started_on: String,
    /// Packaging end, RFC 3339.
    pub finished_on: String,
}

/// The annotations of the [`DEP_DATA`] dependency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataAnnotations {
    /// Folder of the category the digests cover ([`TRAIN_PATH`]).
    pub path: String,
    /// Images digested by vqad (`train/good`), and how they were split.
    pub images: u64,
    pub train_images: u64,
    pub validation_images: u64,
    /// The validation images (paths relative to the category folder), in byte order.
    pub validation_files: Vec<String>,
}

/// The annotations of the [`DEP_SOURCE`] dependency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAnnotations {
    /// Whether the whole checkout was clean when the trainer was built (`None`: unknown).
    pub clean: Option<bool>,
    /// Why the commit is unknown, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The training data as measured when training started.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFacts {
    /// `data::dataset_digest` over train/good.
    pub digest: String,
    /// `data::dir_hash` of train/good; `None` for runs trained before it was recorded.
    pub dir_hash: Option<String>,
    pub annotations: DataAnnotations,
    /// Where the data was (a `file:` URI is written when absolute).
    pub location: String,
}

/// Everything the packager knows about a build, to be written as provenance.
#[derive(Debug, Clone)]
pub struct BuildFacts {
    pub category: String,
    pub kind: String,
    pub seed: u64,
    pub config: serde_json::Value,
    pub data: DataFacts,
    pub source: crate::source::SourceState,
    pub libtorch: Option<String>,
    pub tch: Option<String>,
    pub onnxruntime: Option<String>,
    pub rustc: Option<String>,
    pub internal: InternalParameters,
    /// Training start (RFC 3339).
    pub started: String,
    /// Packaging end (RFC 3339; the manifest's `created`, which honours SOURCE_DATE_EPOCH).
    pub finished: String,
    /// The training run's id: the invocation id where the builder names none.
    pub run_id: String,
    pub builder: Builder,
    pub byproducts: Vec<ResourceDescriptor>,
}

fn purl(name: &str, kind: &str, version: &Option<String>) -> Option<ResourceDescriptor> {
    version.as_ref().map(|v| ResourceDescriptor { name: Some(name.into()), uri: Some(format!("pkg:{kind}/{name}@{v}")), ..Default::default() })
}

/// Builds the provenance statement of a package whose other files have `subjects` (see
/// [`crate::package::subject_digests`]).
pub fn statement(manifest: &Manifest, subjects: &BTreeMap<String, String>, f: &BuildFacts) -> Result<Statement<SlsaProvenance>, ProvenanceError> {
    let preset = f.config.get("preset").and_then(|p| p.as_str()).unwrap_or_default().to_string();
    let mut data = ResourceDescriptor {
        name: Some(DEP_DATA.into()),
        uri: Some(if f.data.location.starts_with('/') { format!("file://{}", f.data.location) } else { f.data.location.clone() }),
        digest: BTreeMap::from([(VQAD_DATASET_DIGEST.to_string(), f.data.digest.clone())]),
        annotations: Some(as_map(&f.data.annotations)),
        ..Default::default()
    };
    if let Some(h) = &f.data.dir_hash {
        data.digest.insert("dirHash".into(), h.clone());
    }
    let source = ResourceDescriptor {
        name: Some(DEP_SOURCE.into()),
        uri: Some(format!("pkg:generic/vqad@{}", crate::VERSION)),
        digest: f.source.commit.iter().map(|c| ("gitCommit".to_string(), c.clone())).collect(),
        annotations: Some(as_map(&SourceAnnotations { clean: f.source.clean, note: f.source.note.clone() })),
        ..Default::default()
    };
    let mut deps = vec![data, source];
    deps.extend(purl(DEP_LIBTORCH, "pypi", &f.libtorch).map(|mut d| {
        d.uri = d.uri.map(|u| u.replace("/libtorch@", "/torch@"));
        if let Some(t) = &f.tch {
            d.annotations = Some(serde_json::Map::from_iter([("tch".to_string(), serde_json::json!(t))]));
        }
        d
    }));
    deps.extend(purl(DEP_ONNXRUNTIME, "pypi", &f.onnxruntime));
    deps.extend(purl(DEP_RUSTC, "generic", &f.rustc.as_ref().map(|r| r.split_whitespace().nth(1).unwrap_or(r).to_string())));
    let predicate = SlsaProvenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: ExternalParameters {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                category: f.category.clone(),
                kind: f.kind.clone(),
                preset,
                seed: f.seed,
                config: f.config.clone(),
            },
            internal_parameters: f.internal.clone(),
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: BuilderInfo { id: f.builder.id.clone(), version: BTreeMap::from([("vqad".to_string(), crate::VERSION.to_string())]) },
            metadata: BuildMetadata {
                invocation_id: f.builder.invocation_id.clone().unwrap_or_else(|| f.run_id.clone()),
                started_on: f.started.clone(),
                finished_on: f.finished.clone(),
            },
            byproducts: f.byproducts.clone(),
        },
    };
    let subject = subjects.iter().map(|(n, d)| ResourceDescriptor::file(n, d)).collect();
    Ok(Statement::new(subject, SLSA_PROVENANCE_V1, predicate))
}

fn as_map<T: Serialize>(v: &T) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Signs the provenance of a package about to be built from `manifest` and `files` (the
/// bytes that go into [`PROVENANCE_FILE`]).
pub fn sign(manifest: &Manifest, files: &BTreeMap<String, Vec<u8>>, facts: &BuildFacts, key: &SigningKey) -> Result<Vec<u8>, ProvenanceError> {
    let subjects = crate::package::subject_digests(manifest, files)?;
    Ok(statement(manifest, &subjects, facts)?.sign(key))
}

/// A package's provenance, read strictly (already verified with the package).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildProvenance {
    pub statement: Statement<SlsaProvenance>,
}

impl BuildProvenance {
    /// The provenance of a verified package: `Ok(None)` when it carries none (formats 1–5);
    /// an error when its predicate is not vqad's build type or has fields this build type
    /// does not define.
    pub fn of(p: &VerifiedPackage) -> Result<Option<Self>, ProvenanceError> {
        let Some(st) = &p.provenance else { return Ok(None) };
        let bytes = serde_json::to_vec(st).map_err(|e| ProvenanceError::Invalid(e.to_string()))?;
        let statement: Statement<SlsaProvenance> = intoto::parse_statement(&bytes, Some(SLSA_PROVENANCE_V1))
            .map_err(|e| ProvenanceError::Invalid(format!("{PROVENANCE_FILE}: {e}")))?;
        let bt = &statement.predicate.build_definition.build_type;
        if bt != BUILD_TYPE {
            return Err(ProvenanceError::Invalid(format!("{PROVENANCE_FILE}: build type '{bt}' is not {BUILD_TYPE}")));
        }
        Ok(Some(BuildProvenance { statement }))
    }

    pub fn predicate(&self) -> &SlsaProvenance {
        &self.statement.predicate
    }

    pub fn external(&self) -> &ExternalParameters {
        &self.predicate().build_definition.external_parameters
    }

    pub fn internal(&self) -> &InternalParameters {
        &self.predicate().build_definition.internal_parameters
    }

    /// A resolved dependency by name.
    pub fn dependency(&self, name: &str) -> Option<&ResourceDescriptor> {
        self.predicate().build_definition.resolved_dependencies.iter().find(|d| d.name.as_deref() == Some(name))
    }

    /// The training data: vqad digest, dirHash, and split.
    pub fn data(&self) -> Result<(String, Option<String>, DataAnnotations), ProvenanceError> {
        let d = self.dependency(DEP_DATA).ok_or_else(|| ProvenanceError::Invalid(format!("no '{DEP_DATA}' dependency")))?;
        let digest = d.digest.get(VQAD_DATASET_DIGEST).cloned().ok_or_else(|| ProvenanceError::Invalid(format!("'{DEP_DATA}' has no {VQAD_DATASET_DIGEST} digest")))?;
        let ann: DataAnnotations = serde_json::from_value(serde_json::Value::Object(d.annotations.clone().unwrap_or_default()))
            .map_err(|e| ProvenanceError::Invalid(format!("'{DEP_DATA}' annotations: {e}")))?;
        Ok((digest, d.digest.get("dirHash").cloned(), ann))
    }

    /// The source commit (when known) and whether its checkout was clean.
    pub fn source(&self) -> Result<(Option<String>, SourceAnnotations), ProvenanceError> {
        let d = self.dependency(DEP_SOURCE).ok_or_else(|| ProvenanceError::Invalid(format!("no '{DEP_SOURCE}' dependency")))?;
        let ann: SourceAnnotations = serde_json::from_value(serde_json::Value::Object(d.annotations.clone().unwrap_or_default()))
            .map_err(|e| ProvenanceError::Invalid(format!("'{DEP_SOURCE}' annotations: {e}")))?;
        Ok((d.digest.get("gitCommit").cloned(), ann))
    }

    /// `name@version` of a tool dependency (from its purl).
    pub fn tool(&self, name: &str) -> Option<String> {
        self.dependency(name).and_then(|d| d.uri.as_deref()).and_then(|u| u.rsplit('/').next()).map(str::to_string)
    }
}

/// The settings of this process that [`InternalParameters::environment`] records.
pub fn determinism_environment() -> BTreeMap<String, String> {
    DETERMINISM_VARS.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect()
}

/// The CPU model (`model name` of `/proc/cpuinfo`), when readable.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}
