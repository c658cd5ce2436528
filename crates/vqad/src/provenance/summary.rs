//! What an auditor asks first about a package, in a few lines (`vqad inspect` without
//! `--json`): data, split, preset and config, seed, source, tools, key, attestations.

use super::build::{DataAnnotations, SlsaProvenance, SourceAnnotations, DEP_DATA, DEP_SOURCE};
use crate::package::intoto::Statement;
use crate::package::Manifest;
use std::fmt::Write as _;

/// One attestation found for the package: its file, and its label or why it was refused.
pub type FoundAttestation = (std::path::PathBuf, Result<String, String>);

/// The summary. `provenance` is the statement as read (verified or not, the caller says so in
/// `trust`); `key` the fingerprint that verified the package, when one did.
pub fn auditor_summary(
    m: &Manifest,
    provenance: Option<&Result<Statement<serde_json::Value>, String>>,
    key: Option<&str>,
    attestations: &[FoundAttestation],
) -> String {
    let mut s = String::new();
    let p = &m.provenance;
    let cfg = &p.training_config;
    let prov: Option<Result<SlsaProvenance, String>> =
        provenance.map(|r| r.clone().and_then(|st| serde_json::from_value::<SlsaProvenance>(st.predicate).map_err(|e| e.to_string())));
    let ok = prov.as_ref().and_then(|r| r.as_ref().ok());
    let dep = |name: &str| ok.and_then(|pr| pr.build_definition.resolved_dependencies.iter().find(|d| d.name.as_deref() == Some(name)).cloned());
    let _ = writeln!(s, "auditor summary:");
    // Data and split.
    let data = dep(DEP_DATA);
    let ann: Option<DataAnnotations> = data.as_ref().and_then(|d| serde_json::from_value(serde_json::Value::Object(d.annotations.clone().unwrap_or_default())).ok());
    let _ = writeln!(s, "  dataset:      digest {} ({} images{})", p.dataset.digest, p.dataset.images, p.dataset.description.as_ref().map(|d| format!(", {d}")).unwrap_or_default());
    match (&data, &ann) {
        (Some(d), Some(a)) => {
            let _ = writeln!(
                s,
                "  split:        {} train / {} validation of {}; dirHash {}",
                a.train_images,
                a.validation_images,
                a.path,
                d.digest.get("dirHash").map(String::as_str).unwrap_or("(not recorded)")
            );
        }
        _ => {
            let _ = writeln!(s, "  split:        (no provenance)");
        }
    }
    // Preset, config, seed.
    let g = |ptr: &str| cfg.pointer(ptr).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    let _ = writeln!(
        s,
        "  training:     preset {}, kind {}, seed {}; {}² input, K={} D={}, {} + {} epochs, lr {}, batch {}/{}",
        cfg.get("preset").and_then(|v| v.as_str()).unwrap_or("?"),
        ok.map(|pr| pr.build_definition.external_parameters.kind.clone()).unwrap_or_else(|| cfg.get("kind").map(|v| v.to_string()).unwrap_or_else(|| "?".into())),
        p.seed,
        g("/model/image_size"),
        g("/model/num_codes"),
        g("/model/code_dim"),
        g("/train/vqvae_epochs"),
        g("/train/prior_epochs"),
        g("/train/lr"),
        g("/train/vqvae_batch"),
        g("/train/prior_batch"),
    );
    // Source.
    let src = dep(DEP_SOURCE);
    let sann: Option<SourceAnnotations> = src.as_ref().and_then(|d| serde_json::from_value(serde_json::Value::Object(d.annotations.clone().unwrap_or_default())).ok());
    let commit = src.as_ref().and_then(|d| d.digest.get("gitCommit").cloned()).or_else(|| p.software.git_commit.clone());
    let clean = match sann.as_ref().and_then(|a| a.clean) {
        Some(true) => "clean tree",
        Some(false) => "DIRTY tree",
        None => "cleanliness not recorded",
    };
    let _ = writeln!(s, "  source:       commit {} ({clean})", commit.as_deref().unwrap_or("unknown"));
    let v = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let sw = &p.software;
    let _ = writeln!(
        s,
        "  tools:        vqad {}, rustc {}, tch {}, libtorch {}, onnxruntime {}",
        sw.vqad_version,
        v(&sw.rustc),
        v(&sw.tch),
        v(&sw.libtorch),
        v(&sw.onnxruntime)
    );
    if let Some(pr) = ok {
        let i = &pr.build_definition.internal_parameters;
        let env: Vec<String> = i.environment.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "  platform:     {} with {} torch threads ({} inter-op), backends {}; {}",
            i.device,
            i.torch_threads,
            i.torch_interop_threads,
            if i.backends.is_empty() { "-".into() } else { i.backends.join("+") },
            if env.is_empty() { "no thread/ISA variables set".into() } else { env.join(" ") }
        );
        let md = &pr.run_details.metadata;
        let _ = writeln!(s, "  built by:     {} ({} → {})", pr.run_details.builder.id, md.started_on, md.finished_on);
    }
    let _ = writeln!(s, "  provenance:   {}", match &prov {
        None => format!("none (format {} package)", m.format_version),
        Some(Ok(_)) => "SLSA v1 (provenance.intoto.json)".into(),
        Some(Err(e)) => format!("unreadable: {e}"),
    });
    let _ = writeln!(s, "  signing key:  {}", key.map(|k| format!("fingerprint {k}")).unwrap_or_else(|| "(not verified: pass --pubkey)".into()));
    if attestations.is_empty() {
        let _ = writeln!(s, "  attestations: none found (vqad eval --attest; stored beside a published version)");
    } else {
        for (path, r) in attestations {
            let _ = writeln!(s, "  attestation:  {} — {}", path.display(), match r {
                Ok(l) => l.clone(),
                Err(e) => format!("REFUSED: {e}"),
            });
        }
    }
    s
}
