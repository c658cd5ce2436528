//! keygen, package, verify, inspect, unpack, publish, list.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use vqad::package::{self, TrustedKey, VerifiedPackage};

#[derive(Args)]
pub struct KeygenArgs {
    /// Writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM); refuses to overwrite.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn keygen(a: KeygenArgs) -> anyhow::Result<i32> {
    let (k, p) = package::keygen(&a.out)?;
    let fp = TrustedKey::load(&p)?.fingerprint();
    println!("private key: {}\npublic key:  {}\nfingerprint: {fp}", k.display(), p.display());
    Ok(0)
}

#[derive(Args)]
pub struct PackageArgs {
    /// Training run folder (from `vqad train`).
    pub run_dir: PathBuf,
    /// Category name stored in the manifest (e.g. bottle).
    #[arg(long)]
    pub name: String,
    /// Package version, semver (e.g. 1.0.0).
    #[arg(long)]
    pub version: String,
    /// Signing key (PREFIX.key from `vqad keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Output folder or file path (<name>-<version>.vqad); default: the current folder.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Path to libonnxruntime (for tuning when the run has not been tuned yet).
    #[arg(long, env = "VQAD_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Replace an existing file at the output path.
    #[arg(long)]
    pub overwrite: bool,
    /// Precisions to carry, comma separated (fp32 always): fp16 and int8 variants are written,
    /// run beside fp32 on the validation normals and synthetic defects, and their parity signed in.
    #[arg(long, default_value = "fp32")]
    pub precisions: String,
    /// Package a variant outside its parity bound anyway; REASON is recorded in the manifest.
    #[arg(long, value_name = "REASON")]
    pub parity_override: Option<String>,
    /// The least a variant must reach against fp32 on the validation normals and painted
    /// defects: decision agreement and mask IoU. Outside it, accuracy control keeps the
    /// costliest parts in fp32 and measures again before refusing.
    #[arg(long, value_name = "DECISIONS,IOU", default_value = "0.99,0.95")]
    pub parity_bound: vqad::package::ParityBound,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Trusted public key (PREFIX.pub).
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Also check the package sits where the registry says (`<registry>/<name>/<version>/`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let v = match &a.registry {
        Some(r) => vqad::registry::verify_in_registry(&a.file, r, &key),
        None => VerifiedPackage::open(&a.file, &key),
    }
    .with_context(|| format!("{}: verification failed", a.file.display()))?;
    if a.json {
        super::print_json(&serde_json::json!({
            "valid": true,
            "name": v.manifest.name,
            "version": v.manifest.version,
            "archive_sha256": v.archive_sha256,
            "key_fingerprint": v.key_fingerprint,
        }))?;
    } else {
        println!("{}", v.summary());
    }
    Ok(0)
}

#[derive(Args)]
pub struct InspectArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Verify with this public key as well (otherwise the report says it is unverified).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// An evaluation attestation to show (repeatable); those in `attestations/` beside the
    /// package (a registry version folder) are shown anyway.
    #[arg(long, value_name = "FILE")]
    pub attestation: Vec<PathBuf>,
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let key = a.pubkey.as_deref().map(TrustedKey::load).transpose()?;
    let r = package::inspect_with_key(&a.file, key.as_ref())?;
    if a.json {
        super::print_json(&r.to_json())?;
        return Ok(0);
    }
    print!("{r}");
    if let Ok(m) = &r.manifest {
        let verified = key.as_ref().and_then(|k| VerifiedPackage::open(&a.file, k).ok());
        let mut files = a.attestation.clone();
        files.extend(vqad::provenance::evaluation::beside(&a.file).into_iter().filter(|p| !a.attestation.contains(p)));
        let found: Vec<_> = files
            .into_iter()
            .map(|f| {
                let r = (|| -> anyhow::Result<String> {
                    let bytes = std::fs::read(&f)?;
                    match (&key, &verified) {
                        (Some(k), Some(p)) => {
                            let att = vqad::provenance::EvaluationAttestation::open(&bytes, k)?;
                            att.check_subject(p).map_err(anyhow::Error::msg)?;
                            Ok(format!("{} (verified, about this archive)", att.label()))
                        }
                        _ => {
                            let (_, payload) = vqad::package::dsse::read_envelope_unverified(&bytes)?;
                            let v: serde_json::Value = serde_json::from_slice(&payload)?;
                            Ok(format!("{} (NOT VERIFIED)", attestation_label(v["predicateType"].as_str().unwrap_or("?"))))
                        }
                    }
                })()
                .map_err(|e| e.to_string());
                (f, r)
            })
            .collect();
        let fp = verified.as_ref().map(|p| p.key_fingerprint.clone());
        print!("{}", vqad::provenance::summary::auditor_summary(m, r.provenance.as_ref(), fp.as_deref(), &found));
    }
    Ok(0)
}

#[derive(Args)]
pub struct UnpackArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Trusted public key; nothing is written unless the package verifies.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// Empty or new folder to unpack into.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn unpack(a: UnpackArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let v = VerifiedPackage::open(&a.file, &key).with_context(|| format!("{}: verification failed", a.file.display()))?;
    v.unpack(&a.out)?;
    println!("{}\nunpacked into {} (check it with: model_signing verify key {} --signature {} --public_key {})",
        v.summary(), a.out.display(), a.out.display(), a.out.join("model.sig").display(), a.pubkey.display());
    Ok(0)
}

#[derive(Args)]
pub struct PublishArgs {
    /// The .vqad package.
    pub file: PathBuf,
    /// Registry folder (packages go to REGISTRY/<name>/<version>/).
    #[arg(long, default_value = "model-packages")]
    pub registry: PathBuf,
    /// Trusted public key; the package is verified before it is copied.
    #[arg(long)]
    pub pubkey: PathBuf,
    /// An attestation about this archive to store beside it (repeatable), e.g. the two files
    /// `vqad eval --attest` writes. Each must verify with the trusted key and name this archive.
    /// Given for a version already published with the same bytes, only adds them.
    #[arg(long, value_name = "FILE")]
    pub attestation: Vec<PathBuf>,
    #[command(flatten)]
    pub lock: super::registry::LockFlags,
}

pub fn publish(a: PublishArgs) -> anyhow::Result<i32> {
    let key = TrustedKey::load(&a.pubkey)?;
    let opts = vqad::registry::PublishOptions { attestations: a.attestation.clone(), lock: a.lock.options() };
    let p = vqad::registry::publish_with(&a.file, &a.registry, &key, &opts)?;
    if p.completed_interrupted {
        println!("completed an interrupted publish of {}", p.path.display());
    }
    if p.attestations_only {
        println!("{} was already published; added {} attestation(s)", p.path.display(), a.attestation.len());
    } else {
        println!("published {}", p.path.display());
    }
    for e in &p.attestations {
        println!("  attestation {} ({})", e.file, e.predicate_type);
    }
    Ok(0)
}

#[derive(Args)]
pub struct ListArgs {
    /// Registry folder.
    #[arg(long, default_value = "model-packages")]
    pub registry: PathBuf,
    /// Only this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Verify every channel record with this public key (otherwise channels show unverified).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print as JSON: the index entries, each with the channels that run it.
    #[arg(long)]
    pub json: bool,
}

pub fn list(a: ListArgs) -> anyhow::Result<i32> {
    let entries = vqad::registry::list(&a.registry, a.category.as_deref())?;
    let key = a.pubkey.as_deref().map(TrustedKey::load).transpose()?;
    // A category whose channel records are refused is reported, not allowed to hide the rest.
    let (heads, refused) = if a.registry.is_dir() {
        vqad::registry::list_channels_lenient(&a.registry, a.category.as_deref(), key.as_ref())?
    } else {
        (vec![], vec![])
    };
    for (name, e) in &refused {
        eprintln!("warning: channels of '{name}' refused: {e}");
    }
    let channels_of = |name: &str, version: &str| -> Vec<String> {
        heads.iter().filter(|h| h.name == name && h.version == version).map(|h| h.channel.clone()).collect()
    };
    if a.json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut j = serde_json::to_value(e).unwrap_or_default();
                j["channels"] = serde_json::json!(channels_of(&e.name, &e.version));
                if let Some((_, err)) = refused.iter().find(|(n, _)| *n == e.name) {
                    j["channels_refused"] = serde_json::json!(err.to_string());
                }
                j
            })
            .collect();
        super::print_json(&v)?;
    } else if entries.is_empty() {
        println!("no packages in {}", a.registry.display());
    } else {
        for e in &entries {
            let ch = channels_of(&e.name, &e.version);
            let ch = if ch.is_empty() { String::new() } else { format!("  ← {}", ch.join(", ")) };
            let att = if e.attestations.is_empty() {
                String::new()
            } else {
                format!("  attested: {}", e.attestations.iter().map(|x| attestation_label(&x.predicate_type)).collect::<Vec<_>>().join(", "))
            };
            println!("{:<16} {:<10} {}  key {}…  sha256 {}…{ch}{att}", e.name, e.version, e.created, &e.key_fingerprint[..16.min(e.key_fingerprint.len())], &e.archive_sha256[..16.min(e.archive_sha256.len())]);
        }
        if !heads.is_empty() {
            println!("channels{}:", if key.is_some() { " (every record verified)" } else { " (NOT VERIFIED: pass --pubkey)" });
            for h in &heads {
                println!("  {}@{:<12} {:<10} sequence {:<4} expires {}", h.name, h.channel, h.version, h.sequence, h.expires);
            }
        }
    }
    // Exit 3, like a refused verification elsewhere, when any channel history was refused.
    Ok(if refused.is_empty() { 0 } else { 3 })
}

/// Short name of an attestation's predicate type for listings.
pub fn attestation_label(predicate_type: &str) -> String {
    use vqad::provenance::evaluation::{EVALUATION_V1, TEST_RESULT_V01};
    match predicate_type {
        TEST_RESULT_V01 => "test-result".into(),
        EVALUATION_V1 => "evaluation".into(),
        other => other.into(),
    }
}
