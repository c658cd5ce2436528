//! in-toto Statement v1 and ResourceDescriptor v1, strictly: an unknown field anywhere in a
//! statement vqad reads back is refused, as in-toto's own protobuf bindings refuse it. The
//! package's build provenance (`provenance.intoto.json`) and evaluation attestations are such
//! statements in DSSE envelopes ([`super::dsse::sign_envelope`]); what their predicates hold is
//! [`crate::provenance`]'s business. This layer checks only what makes a statement belong to a
//! package: its signature, its type and its subjects.

use super::dsse::{self, EnvelopeError};
use super::keys::{SigningKey, TrustedKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::dsse::{PAYLOAD_TYPE, STATEMENT_TYPE};

/// SLSA build provenance v1, the predicate of a package's `provenance.intoto.json`.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// An in-toto Statement v1 with predicate `P` (`serde_json::Value` when not yet interpreted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement<P> {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

/// in-toto ResourceDescriptor v1: an artifact by name, URI and/or digests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm → lower-case hex (or another immutable reference, e.g. `gitCommit`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// Base64 bytes, when the resource is small enough to inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ResourceDescriptor {
    /// A named file with its sha256.
    pub fn file(name: &str, sha256: &str) -> Self {
        ResourceDescriptor { name: Some(name.into()), digest: BTreeMap::from([("sha256".into(), sha256.into())]), ..Default::default() }
    }
}

/// Why a signed statement was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatementError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("not an in-toto Statement v1: {0}")]
    Malformed(String),
    #[error("statement type is '{0}', expected {STATEMENT_TYPE}")]
    WrongType(String),
    #[error("predicate type is '{found}', expected {expected}")]
    WrongPredicate { found: String, expected: String },
    #[error("subjects do not match: {0}")]
    Subjects(String),
}

impl<P: Serialize> Statement<P> {
    /// A statement of `predicate_type` about `subject`.
    pub fn new(subject: Vec<ResourceDescriptor>, predicate_type: &str, predicate: P) -> Self {
        Statement { type_: STATEMENT_TYPE.into(), subject, predicate_type: predicate_type.into(), predicate }
    }

    /// The DSSE envelope (payload type `application/vnd.in-toto+json`, one ECDSA P-256
    /// signature, `keyid` = the key's fingerprint) of this statement.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        // Strings, numbers and maps only: serialising cannot fail.
        let payload = serde_json::to_vec_pretty(self).expect("statement serialises");
        dsse::sign_envelope(PAYLOAD_TYPE, &payload, key)
    }
}

/// Verifies a DSSE envelope holding an in-toto statement with `key` and parses it strictly,
/// requiring `predicate_type` (any when `None`). Signature first, then the statement.
pub fn open_statement<P: for<'de> Deserialize<'de>>(
    envelope: &[u8],
    key: &TrustedKey,
    predicate_type: Option<&str>,
) -> Result<Statement<P>, StatementError> {
    let payload = dsse::verify_envelope(envelope, PAYLOAD_TYPE, key)?;
    parse_statement(&payload, predicate_type)
}

/// Parses statement bytes strictly (no signature check: callers verify first, or say so).
pub fn parse_statement<P: for<'de> Deserialize<'de>>(payload: &[u8], predicate_type: Option<&str>) -> Result<Statement<P>, StatementError> {
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|e| StatementError::Malformed(e.to_string()))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("<missing>").to_string();
    if field("_type") != STATEMENT_TYPE {
        return Err(StatementError::WrongType(field("_type")));
    }
    if let Some(want) = predicate_type {
        if field("predicateType") != want {
            return Err(StatementError::WrongPredicate { found: field("predicateType"), expected: want.into() });
        }
    }
    let st: Statement<P> = serde_json::from_value(v).map_err(|e| StatementError::Malformed(e.to_string()))?;
    if st.subject.is_empty() {
        return Err(StatementError::Malformed("no subject".into()));
    }
    Ok(st)
}

/// Checks that `subjects` name exactly `files` (name → sha256 hex): the same names, each with
/// exactly its sha256 and no other digest.
pub fn check_subjects(subjects: &[ResourceDescriptor], files: &BTreeMap<String, String>) -> Result<(), StatementError> {
    let mut seen = BTreeMap::new();
    for s in subjects {
        let name = s.name.as_deref().ok_or_else(|| StatementError::Subjects("a subject has no name".into()))?;
        let sha = match (s.digest.len(), s.digest.get("sha256")) {
            (1, Some(d)) => d,
            _ => return Err(StatementError::Subjects(format!("subject '{name}' must carry exactly one sha256 digest"))),
        };
        if seen.insert(name.to_string(), sha.clone()).is_some() {
            return Err(StatementError::Subjects(format!("subject '{name}' is listed twice")));
        }
    }
    for (name, sha) in files {
        match seen.get(name) {
            None => return Err(StatementError::Subjects(format!("'{name}' is not a subject"))),
            Some(d) if d != sha => {
                return Err(StatementError::Subjects(format!("'{name}' is {sha} but the subject says {d}")))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().find(|n| !files.contains_key(*n)) {
        return Err(StatementError::Subjects(format!("subject '{extra}' is not a file of the package")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_statements_round_trip_and_refuse_unknown_fields() {
        let k = SigningKey::generate();
        let st = Statement::new(vec![ResourceDescriptor::file("a", &"0".repeat(64))], "https://example/p", serde_json::json!({"x": 1}));
        let env = st.sign(&k);
        let back: Statement<serde_json::Value> = open_statement(&env, &k.public(), Some("https://example/p")).unwrap();
        assert_eq!(back, st);
        let e = open_statement::<serde_json::Value>(&env, &k.public(), Some("https://example/q")).unwrap_err();
        assert!(matches!(e, StatementError::WrongPredicate { .. }), "{e}");
        let other = SigningKey::generate().public();
        assert!(matches!(open_statement::<serde_json::Value>(&env, &other, None), Err(StatementError::Envelope(_))));
        let mut v = serde_json::to_value(&st).unwrap();
        v["subject"][0]["colour"] = "red".into();
        let e = parse_statement::<serde_json::Value>(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn subjects_must_name_exactly_the_files() {
        let files = BTreeMap::from([("a".to_string(), "1".repeat(64)), ("b".to_string(), "2".repeat(64))]);
        let ok = vec![ResourceDescriptor::file("b", &"2".repeat(64)), ResourceDescriptor::file("a", &"1".repeat(64))];
        check_subjects(&ok, &files).unwrap();
        let cases: Vec<(Vec<ResourceDescriptor>, &str)> = vec![
            (ok[..1].to_vec(), "'a' is not a subject"),
            (vec![ok[0].clone(), ResourceDescriptor::file("a", &"3".repeat(64))], "subject says"),
            (vec![ok[0].clone(), ok[1].clone(), ResourceDescriptor::file("c", &"3".repeat(64))], "'c' is not a file"),
            (vec![ok[0].clone(), ok[1].clone(), ok[1].clone()], "twice"),
        ];
        for (s, why) in cases {
            let e = check_subjects(&s, &files).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
