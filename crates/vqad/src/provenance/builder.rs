//! Who ran a build: the SLSA `builder.id` and `invocationId`.
//!
//! On a workstation the builder is this host. In a Kubernetes Job (deploy/train/,
//! deploy/release/) the pod says which Job it is through these variables, set from the
//! downward API and the pinned image (see deploy/release/job.yaml):
//!
//! | variable | from |
//! |---|---|
//! | `VQAD_K8S_NAMESPACE` | `metadata.namespace` |
//! | `VQAD_K8S_JOB` | the `batch.kubernetes.io/job-name` label |
//! | `VQAD_K8S_POD_UID` | `metadata.uid` |
//! | `VQAD_IMAGE` | the container image, pinned by digest (`…@sha256:…`) |
//!
//! Once any of them is set, all must be, and the image must be pinned by digest: a builder id
//! that silently fell back to "some host" would name nobody.

use super::ProvenanceError;

/// Prefix of every builder id vqad writes (`.invalid`: the project owns no domain; the
/// meaning is documented in `schemas/build-type-v1.md`).
pub const BUILDER_PREFIX: &str = "https://vqad.invalid/builders/";

/// The variables a Kubernetes Job sets, in the order the id names them.
pub const K8S_VARS: [&str; 4] = ["VQAD_K8S_NAMESPACE", "VQAD_K8S_JOB", "VQAD_K8S_POD_UID", "VQAD_IMAGE"];

/// The builder of this process, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    /// SLSA `runDetails.builder.id`.
    pub id: String,
    /// `<namespace>/<job>/<pod uid>` in Kubernetes; on a workstation `None`, and the caller
    /// names the invocation (packaging uses the training run's id, so that packaging the same
    /// run twice gives the same bytes).
    pub invocation_id: Option<String>,
}

impl Builder {
    /// Reads the environment (see the module doc).
    pub fn from_env() -> Result<Self, ProvenanceError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Builder::from_env`] over any variable source (tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ProvenanceError> {
        let vals: Vec<Option<String>> = K8S_VARS.iter().map(|k| get(k)).collect();
        if vals.iter().all(Option::is_none) {
            let host = hostname();
            return Ok(Builder { id: format!("{BUILDER_PREFIX}local?host={}", escape(&host)), invocation_id: None });
        }
        if let Some(i) = vals.iter().position(Option::is_none) {
            let set: Vec<&str> = K8S_VARS.iter().zip(&vals).filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
            return Err(ProvenanceError::Invalid(format!(
                "{} is set, so this is a Kubernetes build, but {} is not; set all of {} (deploy/release/job.yaml shows how)",
                set.join(", "),
                K8S_VARS[i],
                K8S_VARS.join(", ")
            )));
        }
        let [ns, job, uid, image] = [0, 1, 2, 3].map(|i| vals[i].clone().unwrap_or_default());
        if !image.contains("@sha256:") {
            return Err(ProvenanceError::Invalid(format!(
                "VQAD_IMAGE '{image}' is not pinned by digest (…@sha256:…); the builder id must name the exact image"
            )));
        }
        Ok(Builder {
            id: format!(
                "{BUILDER_PREFIX}kubernetes-job?namespace={}&job={}&pod={}&image={}",
                escape(&ns),
                escape(&job),
                escape(&uid),
                escape(&image)
            ),
            invocation_id: Some(format!("{ns}/{job}/{uid}")),
        })
    }
}

/// Percent-encodes what a URI query value may not hold as is.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// This host's name (the kernel's), or `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// 128 random bits in hex.
pub fn random_id() -> String {
    use rand::TryRngCore;
    let mut b = [0u8; 16];
    // No entropy source at all: nothing sensible can continue.
    rand::rngs::OsRng.try_fill_bytes(&mut b).expect("operating system random source");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(v: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn local_and_kubernetes_builders() {
        let b = Builder::from_vars(vars(&[])).unwrap();
        assert!(b.id.starts_with("https://vqad.invalid/builders/local?host="), "{}", b.id);
        assert_eq!(b.invocation_id, None);
        let k = [
            ("VQAD_K8S_NAMESPACE", "ml"),
            ("VQAD_K8S_JOB", "release-bottle"),
            ("VQAD_K8S_POD_UID", "0d2f-11"),
            ("VQAD_IMAGE", "registry.example.com/vqad-train@sha256:abcd"),
        ];
        let b = Builder::from_vars(vars(&k)).unwrap();
        assert_eq!(
            b.id,
            "https://vqad.invalid/builders/kubernetes-job?namespace=ml&job=release-bottle&pod=0d2f-11&image=registry.example.com/vqad-train@sha256:abcd"
        );
        assert_eq!(b.invocation_id.as_deref(), Some("ml/release-bottle/0d2f-11"));
        let e = Builder::from_vars(vars(&k[..2])).unwrap_err().to_string();
        assert!(e.contains("VQAD_K8S_POD_UID is not"), "{e}");
        let mut unpinned = k;
        unpinned[3].1 = "registry.example.com/vqad-train:1.0";
        assert!(Builder::from_vars(vars(&unpinned)).unwrap_err().to_string().contains("not pinned by digest"));
    }
}
