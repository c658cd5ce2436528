//! The OpenSSF model-signing v1.0 signature: a Sigstore bundle (v0.3, public-key
//! verification material) around a DSSE envelope around an in-toto Statement v1.
//!
//! Matches what `model_signing` 1.1.1 `sign key` writes and what its `verify key` checks
//! (`_signing/sign_ec_key.py`, `_signing/signing.py`): payload type
//! `application/vnd.in-toto+json`; PAE = `DSSEv1 SP len(type) SP type SP len(body) SP body`;
//! ECDSA with SHA-256 for P-256, DER; `hint` = sha256 of the public key's PEM text; predicate
//! `https://model_signing/signature/v1.0` with `serialization` and `resources`, and a single
//! subject whose sha256 is taken over the resource digests in their listed (sorted) order.
//!
//! Verification here is stricter than model_signing's: exactly one DSSE signature (it just
//! takes the first), the payload type checked before PAE is built, the hint never used to
//! decide anything, only `files`/`sha256`/no-symlink serialization, hex digests checked.

use super::keys::{SigningKey, TrustedKey};
use super::{sha256_hex, PackageError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Paths `model_signing sign` leaves out of the manifest by default (the signature itself
/// and git metadata); recorded so that `model_signing verify` skips `model.sig` in an
/// unpacked package. Sorted so the statement is deterministic (model_signing writes them in
/// set order).
pub const IGNORE_PATHS: [&str; 5] = [".git", ".gitattributes", ".github", ".gitignore", "model.sig"];

#[derive(Serialize, Deserialize)]
struct Bundle {
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "verificationMaterial")]
    verification_material: VerificationMaterial,
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: Envelope,
}

#[derive(Serialize, Deserialize)]
struct VerificationMaterial {
    #[serde(rename = "publicKey")]
    public_key: Option<PublicKeyId>,
    #[serde(rename = "tlogEntries", default)]
    tlog_entries: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct PublicKeyId {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeSignature {
    sig: String,
    /// Written empty like model_signing; never read for any decision.
    #[serde(default)]
    keyid: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Serialize, Deserialize)]
struct Subject {
    name: String,
    digest: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Serialize, Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
    allow_symlinks: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ignore_paths: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

/// DSSE pre-authentication encoding: binds the payload type into what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// sha256 over the raw 32-byte digests, in the given order: model_signing's root digest.
pub fn root_digest<'a>(digests_hex: impl IntoIterator<Item = &'a str>) -> Result<String, PackageError> {
    let mut h = sha2::Sha256::new();
    for d in digests_hex {
        h.update(decode_digest(d)?);
    }
    Ok(hex::encode(h.finalize()))
}

fn decode_digest(d: &str) -> Result<[u8; 32], PackageError> {
    let bad = || PackageError::MalformedStatement(format!("digest '{d}' is not 64 lower-case hex digits"));
    if d.len() != 64 || d.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(d, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// Builds `model.sig` for `files` (name → sha256 hex), subject `subject_name`.
pub fn sign(subject_name: &str, files: &BTreeMap<String, String>, key: &SigningKey) -> Result<Vec<u8>, PackageError> {
    if files.is_empty() {
        return Err(PackageError::EmptyFileList);
    }
    // BTreeMap iteration is byte order of the names: the order model_signing sorts into for
    // flat names, and the order the root digest is taken in.
    let resources: Vec<Resource> = files
        .iter()
        .map(|(name, digest)| Resource { name: name.clone(), algorithm: "sha256".into(), digest: digest.clone() })
        .collect();
    let root = root_digest(resources.iter().map(|r| r.digest.as_str()))?;
    let statement = Statement {
        type_: STATEMENT_TYPE.into(),
        subject: vec![Subject { name: subject_name.into(), digest: BTreeMap::from([("sha256".into(), root)]) }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            serialization: Serialization {
                method: "files".into(),
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths: IGNORE_PATHS.iter().map(|s| s.to_string()).collect(),
            },
            resources,
        },
    };
    // Two-space indented like model_signing's protobuf JSON; any JSON verifies the same.
    let payload = serde_json::to_vec_pretty(&statement).map_err(|e| PackageError::MalformedStatement(e.to_string()))?;
    bundle_for_payload(PAYLOAD_TYPE, &payload, key)
}

/// Wraps any payload in a signed bundle. Public for tests that need validly signed but
/// otherwise hostile statements (empty lists, other payload types); packages use [`sign`].
#[doc(hidden)]
pub fn bundle_for_payload(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, PackageError> {
    let sig = key.sign_der(&pae(payload_type, payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle = Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: Some(PublicKeyId { hint: Some(key.public().model_signing_hint()) }),
            tlog_entries: vec![],
        },
        dsse_envelope: Envelope {
            payload: b64.encode(payload),
            payload_type: payload_type.into(),
            signatures: vec![EnvelopeSignature { sig: b64.encode(sig), keyid: Some(String::new()) }],
        },
    };
    serde_json::to_vec(&bundle).map_err(|e| PackageError::MalformedSignature(e.to_string()))
}

/// Why a bare DSSE envelope (see [`sign_envelope`]) was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("malformed DSSE envelope: {0}")]
    Malformed(String),
    #[error("DSSE payload type is '{found}', expected {expected}")]
    WrongPayloadType { found: String, expected: String },
    #[error("DSSE envelope has {0} signatures; exactly one is required")]
    SignatureCount(usize),
    #[error("signed by another key (keyid {found}…), not the trusted key {expected}…")]
    WrongKey { found: String, expected: String },
    #[error("signature does not verify with the trusted key (tampered payload or signature)")]
    BadSignature,
}

/// A bare DSSE envelope (`{"payload", "payloadType", "signatures": [{"keyid", "sig"}]}`, the
/// JSON form of the DSSE spec) over any payload, for small signed records that are not
/// packages (registry channel assignments). `keyid` is the signer's fingerprint, written to
/// word errors only.
pub fn sign_envelope(payload_type: &str, payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign_der(&pae(payload_type, payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Envelope {
        payload: b64.encode(payload),
        payload_type: payload_type.into(),
        signatures: vec![EnvelopeSignature { sig: b64.encode(sig), keyid: Some(key.public().fingerprint()) }],
    };
    // Plain strings and a vector: serialising cannot fail.
    let mut out = serde_json::to_vec_pretty(&env).expect("envelope serialises");
    out.push(b'\n');
    out
}

/// Checks a bare DSSE envelope against `key` and the expected payload type (checked before
/// PAE is built, and bound by it) and returns the payload. Exactly one signature; `keyid`
/// only words the error.
pub fn verify_envelope(bytes: &[u8], payload_type: &str, key: &TrustedKey) -> Result<Vec<u8>, EnvelopeError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if env.payload_type != payload_type {
        return Err(EnvelopeError::WrongPayloadType { found: env.payload_type, expected: payload_type.into() });
    }
    if env.signatures.len() != 1 {
        return Err(EnvelopeError::SignatureCount(env.signatures.len()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&env.payload).map_err(|e| EnvelopeError::Malformed(format!("payload is not base64: {e}")))?;
    let sig = b64.decode(&env.signatures[0].sig).map_err(|e| EnvelopeError::Malformed(format!("signature is not base64: {e}")))?;
    if !key.verify_der(&pae(&env.payload_type, &payload), &sig) {
        let fp = key.fingerprint();
        return Err(match env.signatures[0].keyid.as_deref() {
            Some(k) if !k.is_empty() && k != fp => {
                EnvelopeError::WrongKey { found: k.chars().take(16).collect(), expected: fp[..16].to_string() }
            }
            _ => EnvelopeError::BadSignature,
        });
    }
    Ok(payload)
}

/// Reads a bare envelope's payload without checking the signature (for listings that say
/// so); never use it to decide anything.
pub fn read_envelope_unverified(bytes: &[u8]) -> Result<(String, Vec<u8>), EnvelopeError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .map_err(|e| EnvelopeError::Malformed(format!("payload is not base64: {e}")))?;
    Ok((env.payload_type, payload))
}

/// Refuses a `model.sig` that verified but is not byte for byte the bundle vqad writes for
/// the trusted key: its unsigned parts (the key hint, `keyid`, JSON spacing, escapes, extra
/// fields) could otherwise change freely under a valid signature. Decides nothing about
/// trust, which [`verify_signature`] already did; it keeps one package one file.
pub(crate) fn check_bundle_form(bundle_bytes: &[u8], key: &TrustedKey) -> Result<(), PackageError> {
    let bundle: Bundle =
        serde_json::from_slice(bundle_bytes).map_err(|e| PackageError::MalformedSignature(e.to_string()))?;
    let hint = bundle.verification_material.public_key.as_ref().and_then(|k| k.hint.as_deref());
    if hint != Some(key.model_signing_hint().as_str()) {
        return Err(PackageError::NonCanonical(format!(
            "model.sig names key hint {}, not the trusted key's",
            hint.unwrap_or("(none)")
        )));
    }
    if bundle.dsse_envelope.signatures.iter().any(|s| s.keyid.as_deref() != Some("")) {
        return Err(PackageError::NonCanonical("model.sig has a keyid; vqad writes it empty (it is not signed)".into()));
    }
    let again = serde_json::to_vec(&bundle).map_err(|e| PackageError::MalformedSignature(e.to_string()))?;
    if again != bundle_bytes {
        return Err(PackageError::NonCanonical(
            "model.sig is not in the form vqad writes (extra fields, spacing or escapes outside the signed payload)".into(),
        ));
    }
    Ok(())
}

/// What a verified signature says: the subject and the signed file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatement {
    /// Subject name (for vqad packages `<name>-<version>`; for model_signing, the folder).
    pub subject_name: String,
    /// sha256 over the resource digests, as signed.
    pub root_digest: String,
    /// (name, sha256 hex) in the signed order.
    pub resources: Vec<(String, String)>,
    /// `ignore_paths` as signed (informational; vqad refuses any unlisted entry anyway).
    pub ignore_paths: Vec<String>,
}

impl SignedStatement {
    /// Digest of a listed file.
    pub fn digest_of(&self, name: &str) -> Option<&str> {
        self.resources.iter().find(|(n, _)| n == name).map(|(_, d)| d.as_str())
    }
}

/// Checks a `model.sig` bundle against `key` and returns the signed statement. The
/// signature is checked before the statement is parsed; the root digest is recomputed from
/// the listed digests. Says nothing about files: the caller must re-hash every one.
pub fn verify_signature(bundle_bytes: &[u8], key: &TrustedKey) -> Result<SignedStatement, PackageError> {
    let bad = |s: String| PackageError::MalformedSignature(s);
    let bundle: Bundle = serde_json::from_slice(bundle_bytes).map_err(|e| bad(e.to_string()))?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(PackageError::WrongMediaType(bundle.media_type));
    }
    let env = &bundle.dsse_envelope;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(PackageError::WrongPayloadType(env.payload_type.clone()));
    }
    if env.signatures.len() != 1 {
        return Err(PackageError::SignatureCount(env.signatures.len()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&env.payload).map_err(|e| bad(format!("payload is not base64: {e}")))?;
    let sig = b64.decode(&env.signatures[0].sig).map_err(|e| bad(format!("signature is not base64: {e}")))?;
    // The type we check is the type we sign over: PAE binds it.
    if !key.verify_der(&pae(&env.payload_type, &payload), &sig) {
        let hint = bundle.verification_material.public_key.as_ref().and_then(|k| k.hint.clone());
        return Err(match hint {
            // Only words the error: the decision was the failed verification above.
            Some(h) if h != key.model_signing_hint() => {
                PackageError::WrongKey { found: format!("hint {h}"), expected: format!("hint {}", key.model_signing_hint()) }
            }
            _ => PackageError::BadSignature,
        });
    }
    parse_statement(&payload)
}

/// Parses and checks a signed in-toto statement.
fn parse_statement(payload: &[u8]) -> Result<SignedStatement, PackageError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| PackageError::MalformedStatement(e.to_string()))?;
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or("<missing>").to_string();
    if field("_type") != STATEMENT_TYPE {
        return Err(PackageError::WrongStatementType(field("_type")));
    }
    if field("predicateType") != PREDICATE_TYPE {
        return Err(PackageError::WrongPredicateType(field("predicateType")));
    }
    let st: Statement = serde_json::from_value(value).map_err(|e| PackageError::MalformedStatement(e.to_string()))?;
    let s = &st.predicate.serialization;
    if s.method != "files" || s.hash_type != "sha256" || s.allow_symlinks {
        return Err(PackageError::UnsupportedSerialization(format!(
            "method={} hash_type={} allow_symlinks={} (vqad needs files/sha256/false)",
            s.method, s.hash_type, s.allow_symlinks
        )));
    }
    if st.subject.len() != 1 {
        return Err(PackageError::MalformedStatement(format!("{} subjects, expected exactly one", st.subject.len())));
    }
    let subject = &st.subject[0];
    let expected_root = subject
        .digest
        .get("sha256")
        .ok_or_else(|| PackageError::MalformedStatement("subject has no sha256 digest".into()))?;
    if st.predicate.resources.is_empty() {
        return Err(PackageError::EmptyFileList);
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &st.predicate.resources {
        if r.algorithm != "sha256" {
            return Err(PackageError::UnsupportedSerialization(format!("resource '{}' uses {}", r.name, r.algorithm)));
        }
        decode_digest(&r.digest)?;
        if !seen.insert(r.name.as_str()) {
            return Err(PackageError::DuplicateSignedName(r.name.clone()));
        }
    }
    let root = root_digest(st.predicate.resources.iter().map(|r| r.digest.as_str()))?;
    if &root != expected_root {
        return Err(PackageError::RootDigestMismatch { expected: expected_root.clone(), actual: root });
    }
    Ok(SignedStatement {
        subject_name: subject.name.clone(),
        root_digest: root,
        resources: st.predicate.resources.into_iter().map(|r| (r.name, r.digest)).collect(),
        ignore_paths: s.ignore_paths.clone(),
    })
}

/// Reads a bundle without checking the signature, for [`super::inspect`]: the statement
/// as claimed, and the key hint.
pub(crate) fn read_unverified(bundle_bytes: &[u8]) -> Result<(SignedStatement, Option<String>, usize), PackageError> {
    let bundle: Bundle =
        serde_json::from_slice(bundle_bytes).map_err(|e| PackageError::MalformedSignature(e.to_string()))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&bundle.dsse_envelope.payload)
        .map_err(|e| PackageError::MalformedSignature(format!("payload is not base64: {e}")))?;
    let hint = bundle.verification_material.public_key.and_then(|k| k.hint);
    Ok((parse_statement(&payload)?, hint, bundle.dsse_envelope.signatures.len()))
}

#[doc(hidden)]
/// For tests: the sha256 of `bytes` as the statement records it.
pub fn file_digest(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, String> {
        BTreeMap::from([("a".to_string(), sha256_hex(b"a")), ("b".to_string(), sha256_hex(b"b"))])
    }

    #[test]
    fn sign_then_verify() {
        let k = SigningKey::generate();
        let sig = sign("x-1.0.0", &files(), &k).unwrap();
        let st = verify_signature(&sig, &k.public()).unwrap();
        assert_eq!(st.subject_name, "x-1.0.0");
        assert_eq!(st.resources.len(), 2);
        assert_eq!(sign("x-1.0.0", &files(), &k).unwrap(), sig, "deterministic");
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let k = SigningKey::generate();
        let sig = sign("x", &files(), &k).unwrap();
        let other = SigningKey::generate().public();
        assert!(matches!(verify_signature(&sig, &other), Err(PackageError::WrongKey { .. })));
        let mut v: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        v["dsseEnvelope"]["payloadType"] = "text/plain".into();
        let e = verify_signature(&serde_json::to_vec(&v).unwrap(), &k.public()).unwrap_err();
        assert!(matches!(e, PackageError::WrongPayloadType(_)), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        let s = v["dsseEnvelope"]["signatures"][0].clone();
        v["dsseEnvelope"]["signatures"] = serde_json::json!([s.clone(), s]);
        let e = verify_signature(&serde_json::to_vec(&v).unwrap(), &k.public()).unwrap_err();
        assert!(matches!(e, PackageError::SignatureCount(2)), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        v["dsseEnvelope"]["signatures"] = serde_json::json!([]);
        let e = verify_signature(&serde_json::to_vec(&v).unwrap(), &k.public()).unwrap_err();
        assert!(matches!(e, PackageError::SignatureCount(0)), "{e}");
    }

    #[test]
    fn pae_matches_the_dsse_spec() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }
}
