//! A CycloneDX 1.6 ML-BOM of a verified package.
//!
//! The model is `metadata.component` (type `machine-learning-model`, with a `modelCard`); the
//! training set is a `data` component carrying its digest and size; every file of the archive
//! is a `file` component with its SHA-256; the tools that made it (vqad, and rustc, tch,
//! libtorch, ONNX Runtime where the manifest records them) are `metadata.tools`; `dependencies`
//! link the model to its data and files. Everything comes from the signed manifest and the
//! verified bytes, so the same package always gives the same BOM: `serialNumber` is derived
//! from the archive's sha256 and `metadata.timestamp` is the manifest's creation time.

use crate::package::{Manifest, VerifiedPackage, GRAPH_FILES, SIGNATURE_FILE};
use serde_json::{json, Value};

/// The CycloneDX spec version written.
pub const SPEC_VERSION: &str = "1.6";

/// `urn:uuid:` from the archive digest: the first 16 bytes of sha256("vqad-bom:" + digest)
/// with the RFC 9562 version-8 (custom) and variant bits set. Deterministic, unlike the
/// random UUIDs CycloneDX tools usually write, so a BOM can be regenerated and compared.
pub fn serial_number(archive_sha256: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("vqad-bom:{archive_sha256}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

fn prop(name: &str, value: impl ToString) -> Value {
    json!({ "name": name, "value": value.to_string() })
}

fn sha256(content: &str) -> Value {
    json!([{ "alg": "SHA-256", "content": content }])
}

/// What the model is for and where it stops, in the words of DESIGN.md; shown to auditors
/// beside the numbers.
fn considerations(m: &Manifest) -> Value {
    let d = &m.detection;
    json!({
        "users": ["quality engineers and MLOps teams running visual inspection of one product category"],
        "useCases": [format!(
            "flag images of '{}' that differ from the normal training images, with a per-pixel anomaly map and mask",
            m.name
        )],
        "technicalLimitations": [
            "trained on normal images of a single category only; other products, cameras or lighting are out of scope",
            format!(
                "the image decision depends on the packaged pixel threshold {} and minimum area {} px, chosen on {} without test labels",
                d.pixel_threshold, d.min_area, d.tuned_on.source
            ),
            "the method relies on a confident prior: where the prior's validation NLL stays near log K, resampling fires on normal positions and detection degrades",
        ],
        "performanceTradeoffs": [
            format!("a lower η (now {}) resamples less: fewer false alarms on normal texture, more missed defects", d.eta),
            "every resampled position costs a further prior pass at inference",
        ],
        "ethicalConsiderations": [{
            "name": "decisions on products, not people; a missed defect can reach a customer",
            "mitigationStrategy": "keep a human review for flagged and borderline parts; re-tune when the process or camera changes",
        }],
    })
}

/// The CycloneDX 1.6 JSON BOM of a verified package.
pub fn cyclonedx(p: &VerifiedPackage) -> Value {
    let m = &p.manifest;
    let prov = &m.provenance;
    let sw = &prov.software;
    let model_ref = format!("model:{}@{}", m.name, m.version);
    let data_ref = format!("dataset:sha256:{}", prov.dataset.digest);

    // Every file of the archive, model.sig included (it is what an auditor checks offline).
    let mut files: Vec<(String, usize, String)> =
        p.files.iter().map(|(n, b)| (n.clone(), b.len(), crate::fsutil::sha256_hex(b))).collect();
    files.push((SIGNATURE_FILE.to_string(), p.signature.len(), crate::fsutil::sha256_hex(&p.signature)));
    let file_ref = |n: &str| format!("file:{}@{}/{n}", m.name, m.version);
    let file_components: Vec<Value> = files
        .iter()
        .map(|(n, size, digest)| {
            let role = if GRAPH_FILES.contains(&n.as_str()) {
                "ONNX graph"
            } else if n == SIGNATURE_FILE {
                "OpenSSF model-signing v1.0 signature (Sigstore bundle)"
            } else if n.ends_with(".npy") {
                "codebook (NumPy array)"
            } else {
                "signed package manifest"
            };
            let mut props = vec![prop("vqad:file:size", size)];
            if let Some(signed) = p.statement.digest_of(n) {
                props.push(prop("vqad:file:signed_sha256", signed));
            }
            json!({
                "type": "file",
                "bom-ref": file_ref(n),
                "name": n,
                "description": role,
                "hashes": sha256(digest),
                "properties": props,
            })
        })
        .collect();

    let ds = &prov.dataset;
    let data_name = ds.description.clone().unwrap_or_else(|| format!("{} training images", m.name));
    let dataset = json!({
        "type": "data",
        "bom-ref": data_ref,
        "name": data_name,
        "hashes": sha256(&ds.digest),
        "properties": [prop("vqad:dataset:images", ds.images), prop("vqad:dataset:digest", &ds.digest)],
        "data": [{
            "type": "dataset",
            "name": data_name,
            "description": format!(
                "{} normal training images; sha256 {} over their sorted relative paths and contents",
                ds.images, ds.digest
            ),
            "contents": { "properties": [prop("vqad:dataset:images", ds.images)] },
        }],
    });

    let sh = &m.model;
    let d = &m.detection;
    let mut model_props = vec![
        prop("vqad:format_version", m.format_version),
        prop("vqad:model:image_size", sh.image_size),
        prop("vqad:model:channels", sh.channels),
        prop("vqad:model:grid", format!("{}x{}", sh.grid_m, sh.grid_n)),
        prop("vqad:model:num_codes", sh.num_codes),
        prop("vqad:model:code_dim", sh.code_dim),
        prop("vqad:model:opset", sh.opset),
        prop("vqad:detection:eta", d.eta),
        prop("vqad:detection:local_constraint", d.local_constraint),
        prop("vqad:detection:pixel_threshold", d.pixel_threshold),
        prop("vqad:detection:min_area", d.min_area),
        prop("vqad:detection:bilateral", format!("d={} sigma_color={} sigma_space={}", d.bilateral_d, d.sigma_color, d.sigma_space)),
        prop("vqad:detection:score", d.to_config().score.name()),
        prop("vqad:detection:restore", d.to_config().restore.name()),
        prop("vqad:detection:tuned_on", &d.tuned_on.source),
        prop("vqad:training:seed", prov.seed),
        prop("vqad:training:epochs", format!("vqvae={} prior={}", prov.epochs.vqvae, prov.epochs.prior)),
        prop("vqad:training:used_codes", prov.codebook_usage.used_codes),
        prop("vqad:signature:root_sha256", &p.statement.root_digest),
        prop("vqad:signature:key_fingerprint", &p.key_fingerprint),
    ];
    for (k, v) in &prov.final_losses {
        model_props.push(prop(&format!("vqad:training:final_loss:{k}"), v));
    }
    if let Some(c) = &sw.git_commit {
        model_props.push(prop("vqad:software:git_commit", c));
    }

    let mut card = json!({
        "bom-ref": format!("model-card:{}@{}", m.name, m.version),
        "modelParameters": {
            "approach": { "type": "unsupervised" },
            "task": "anomaly-detection",
            "architectureFamily": "vector-quantised variational autoencoder with an autoregressive prior",
            "modelArchitecture": format!(
                "VQ-VAE ({0}x{0}x{1} image -> {2}x{3} grid of {4} codes of dimension {5}) + PixelSNAIL prior; latent space resampling (Wang et al., Applied Sciences 2020)",
                sh.image_size, sh.channels, sh.grid_m, sh.grid_n, sh.num_codes, sh.code_dim
            ),
            "datasets": [{ "ref": data_ref }],
            "inputs": [{ "format": format!("image, float32 [B, {}, {1}, {1}] in [0, 1]", sh.channels, sh.image_size) }],
            "outputs": [
                { "format": "per-pixel anomaly map (float32) and binary mask" },
                { "format": "image anomaly score and decision (anomalous or normal)" },
            ],
        },
        "considerations": considerations(m),
    });
    if let Some(metrics) = m.metrics.as_ref().filter(|x| !x.is_empty()) {
        let list: Vec<Value> = metrics.iter().map(|(k, v)| json!({ "type": k, "value": v.to_string() })).collect();
        card["quantitativeAnalysis"] = json!({ "performanceMetrics": list });
    }

    let model = json!({
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": m.name,
        "version": m.version,
        "description": format!("vqad anomaly detection package {}-{}", m.name, m.version),
        "hashes": sha256(&p.archive_sha256),
        "properties": model_props,
        "modelCard": card,
    });

    let mut tools = vec![json!({
        "type": "application",
        "name": "vqad",
        "version": sw.vqad_version,
        "description": "trained, exported and packaged this model",
    })];
    for (name, kind, version, what) in [
        ("rustc", "application", &sw.rustc, "compiled vqad"),
        ("tch", "library", &sw.tch, "Rust bindings to libtorch used for training"),
        ("libtorch", "framework", &sw.libtorch, "trained the networks"),
        ("onnxruntime", "framework", &sw.onnxruntime, "checked the exported graphs"),
    ] {
        if let Some(v) = version {
            tools.push(json!({ "type": kind, "name": name, "version": v, "description": what }));
        }
    }
    // This BOM's own writer, when it is another vqad build than the one that packaged.
    if sw.vqad_version != crate::VERSION {
        tools.push(json!({ "type": "application", "name": "vqad", "version": crate::VERSION, "description": "wrote this BOM" }));
    }

    let mut components = vec![dataset];
    components.extend(file_components);
    let mut depends: Vec<String> = vec![data_ref.clone()];
    depends.extend(files.iter().map(|(n, _, _)| file_ref(n)));
    let mut dependencies = vec![json!({ "ref": model_ref, "dependsOn": depends })];
    dependencies.push(json!({ "ref": data_ref, "dependsOn": [] }));
    for (n, _, _) in &files {
        dependencies.push(json!({ "ref": file_ref(n), "dependsOn": [] }));
    }

    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(&p.archive_sha256),
        "version": 1,
        "metadata": {
            "timestamp": prov.created,
            "tools": { "components": tools },
            "component": model,
        },
        "components": components,
        "dependencies": dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_uuids_and_deterministic() {
        let s = serial_number(&"ab".repeat(32));
        assert_eq!(s, serial_number(&"ab".repeat(32)));
        assert_ne!(s, serial_number(&"ac".repeat(32)));
        let u = s.strip_prefix("urn:uuid:").unwrap();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('8'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    }
}
