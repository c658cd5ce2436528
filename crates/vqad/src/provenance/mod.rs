//! What made a package and how it performed, as signed claims in standard forms that an
//! auditor can check without vqad: in-toto Statements v1 in DSSE envelopes, signed with the
//! package's P-256 key.
//!
//! - [`build`]: the SLSA build provenance v1 a package carries (`provenance.intoto.json`), of
//!   vqad's build type [`build::BUILD_TYPE`]: training config, seed, data (vqad's dataset
//!   digest and the in-toto `dirHash` anyone can recompute with coreutils), source commit,
//!   tool versions and the settings that decide whether training is bit-reproducible.
//! - [`builder`]: who ran the build (this host, or a Kubernetes Job).
//! - [`evaluation`]: `vqad eval --attest`: an in-toto test-result statement (pass/fail against
//!   stated thresholds) and the figures themselves, both about the package's archive digest.
//! - [`audit`]: `vqad audit`, the checklist that holds every claim against the world;
//!   [`rebuild`]: its retrain-and-compare check.
//! - [`summary`]: what `vqad inspect` tells an auditor first.
//!
//! The package layer ([`crate::package::intoto`]) checks that a provenance belongs to its
//! package (signature, subjects); this layer reads what it says, refusing unknown fields.

pub mod audit;
pub mod build;
pub mod builder;
pub mod evaluation;
pub mod rebuild;
pub mod summary;

pub use audit::{AuditOptions, AuditReport, Check, CheckStatus};
pub use rebuild::{RebuildRequest, Rebuilt};
pub use build::{BuildFacts, BuildProvenance, BUILD_TYPE};
pub use evaluation::{EvaluationAttestation, Requirement};

use crate::package::intoto::StatementError;

/// Why a provenance or attestation could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

impl ProvenanceError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        ProvenanceError::Io { path: path.into(), source }
    }
}

/// RFC 8785 (JSON Canonicalization Scheme) bytes of a JSON value: two values are the same
/// configuration exactly when these bytes are equal, whatever their key order or spacing.
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    // A serde_json::Value always serialises.
    serde_json_canonicalizer::to_vec(v).expect("JSON value canonicalises")
}

/// Now, RFC 3339 UTC with second precision.
pub(crate) fn now_rfc3339() -> String {
    crate::package::manifest::format_rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_json_ignores_order_and_spacing_but_not_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": [1, 2.50], "a": {"y": "é", "x": 1e2}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":{"x":100,"y":"\u00e9"},"b":[1,2.5]}"#).unwrap();
        assert_eq!(super::canonical_json(&a), super::canonical_json(&b));
        assert_eq!(String::from_utf8(super::canonical_json(&a)).unwrap(), r#"{"a":{"x":100,"y":"é"},"b":[1,2.5]}"#);
        let c: serde_json::Value = serde_json::from_str(r#"{"a":{"x":101,"y":"é"},"b":[1,2.5]}"#).unwrap();
        assert_ne!(super::canonical_json(&a), super::canonical_json(&c));
    }
}
