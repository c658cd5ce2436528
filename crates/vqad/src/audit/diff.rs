//! What changed between two verified packages, field by field.
//!
//! The manifests are compared generically, as JSON leaves with dotted paths
//! (`detection.pixel_threshold`, `provenance.training_config.train.lr`), so a field added to
//! the manifest later is compared without touching this code; each signed file is compared by
//! its sha256 and size. Every field carries a group (model shape, detection, dataset, …) so a
//! reader sees at once whether a change is in the data, the code or only the weights.

use crate::package::{VerifiedPackage, MANIFEST_FILE};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// How one field differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Same,
    Changed,
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
}

/// One compared field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Dotted path in the manifest (`detection.eta`), or `files["encoder.onnx"].sha256`.
    pub field: String,
    /// What the field belongs to: identity, model, detection, dataset, training, training
    /// config, software, metrics, files.
    pub group: &'static str,
    pub change: Change,
    /// The value in A (`null` when only B has it).
    pub a: Option<Value>,
    /// The value in B (`null` when only A has it).
    pub b: Option<Value>,
}

/// Which package a side of the diff is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub path: String,
    pub name: String,
    pub version: String,
    pub archive_sha256: String,
    pub key_fingerprint: String,
}

impl Side {
    fn of(p: &VerifiedPackage) -> Self {
        Side {
            path: p.path.display().to_string(),
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            archive_sha256: p.archive_sha256.clone(),
            key_fingerprint: p.key_fingerprint.clone(),
        }
    }
}

/// Every field of two packages, compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageDiff {
    pub a: Side,
    pub b: Side,
    /// All fields, sorted by group order then path; [`Change::Same`] ones included.
    pub fields: Vec<FieldChange>,
}

/// Group order in reports: identity first, what was trained on and with before the weights.
const GROUPS: [&str; 10] =
    ["identity", "model", "detection", "dataset", "training", "training config", "software", "metrics", "files", "other"];

fn group_of(path: &str) -> &'static str {
    let first = path.split(['.', '[']).next().unwrap_or("");
    match first {
        "name" | "version" | "format_version" => "identity",
        "model" => "model",
        "detection" => "detection",
        "metrics" => "metrics",
        "files" => "files",
        "provenance" => {
            let rest = &path["provenance.".len().min(path.len())..];
            let second = rest.split(['.', '[']).next().unwrap_or("");
            match second {
                "dataset" => "dataset",
                "training_config" => "training config",
                "software" => "software",
                _ => "training",
            }
        }
        _ => "other",
    }
}

/// Leaves of a JSON value with dotted paths; arrays index as `[i]`. Empty objects and arrays
/// are leaves themselves, so "absent" and "empty" stay distinguishable.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// A package's comparable fields: manifest leaves plus each signed file's digest and size.
fn fields_of(p: &VerifiedPackage) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    // The manifest is compared field by field; its own digest would only repeat that.
    flatten("", &serde_json::to_value(&p.manifest).unwrap_or(Value::Null), &mut out);
    for (name, bytes) in &p.files {
        if name == MANIFEST_FILE {
            continue;
        }
        out.insert(format!("files[\"{name}\"].sha256"), Value::from(crate::fsutil::sha256_hex(bytes)));
        out.insert(format!("files[\"{name}\"].size"), Value::from(bytes.len() as u64));
    }
    out
}

impl PackageDiff {
    /// Compares two verified packages (verification is the caller's: see
    /// [`VerifiedPackage::open`]).
    pub fn between(a: &VerifiedPackage, b: &VerifiedPackage) -> Self {
        let (fa, fb) = (fields_of(a), fields_of(b));
        let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut fields: Vec<FieldChange> = keys
            .into_iter()
            .map(|k| {
                let (va, vb) = (fa.get(k).cloned(), fb.get(k).cloned());
                let change = match (&va, &vb) {
                    (Some(x), Some(y)) if x == y => Change::Same,
                    (Some(_), Some(_)) => Change::Changed,
                    (None, _) => Change::Added,
                    (_, None) => Change::Removed,
                };
                FieldChange { field: k.clone(), group: group_of(k), change, a: va, b: vb }
            })
            .collect();
        fields.sort_by_key(|f| (GROUPS.iter().position(|g| *g == f.group), f.field.clone()));
        PackageDiff { a: Side::of(a), b: Side::of(b), fields }
    }

    /// True when every field (files included) is the same.
    pub fn identical(&self) -> bool {
        self.fields.iter().all(|f| f.change == Change::Same)
    }

    /// The fields that differ.
    pub fn differing(&self) -> impl Iterator<Item = &FieldChange> {
        self.fields.iter().filter(|f| f.change != Change::Same)
    }

    /// `vqad diff --json` (schema: `schemas/diff.schema.json`); `all` keeps unchanged fields.
    pub fn to_json(&self, all: bool) -> Value {
        let fields: Vec<&FieldChange> = self.fields.iter().filter(|f| all || f.change != Change::Same).collect();
        serde_json::json!({
            "a": self.a,
            "b": self.b,
            "identical": self.identical(),
            "differences": self.differing().count(),
            "fields": fields,
        })
    }

    /// A readable table: group, field, A, B; only differing fields unless `all`.
    pub fn table(&self, all: bool) -> String {
        let show = |v: &Option<Value>| match v {
            None => "(absent)".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(x) => x.to_string(),
        };
        let mut s = format!(
            "A: {} ({} {}, sha256 {})\nB: {} ({} {}, sha256 {})\n",
            self.a.path, self.a.name, self.a.version, self.a.archive_sha256, self.b.path, self.b.name, self.b.version,
            self.b.archive_sha256
        );
        let rows: Vec<(&str, &str, String, String, Change)> = self
            .fields
            .iter()
            .filter(|f| all || f.change != Change::Same)
            .map(|f| (f.group, f.field.as_str(), show(&f.a), show(&f.b), f.change))
            .collect();
        let n = self.differing().count();
        if rows.is_empty() {
            s += "identical: every manifest field and every file digest is the same\n";
            return s;
        }
        let w = |i: usize| {
            rows.iter().map(|r| [r.0.chars().count(), r.1.chars().count(), r.2.chars().count()][i]).max().unwrap_or(0)
        };
        let (w0, w1, w2) = (w(0).max(5), w(1).max(5), w(2).max(1));
        s += &format!("  {:<w0$}  {:<w1$}  {:<w2$}  {}\n", "GROUP", "FIELD", "A", "B");
        for (g, f, a, b, c) in &rows {
            let mark = if *c == Change::Same { ' ' } else { '*' };
            s += &format!("{mark} {g:<w0$}  {f:<w1$}  {a:<w2$}  {b}\n");
        }
        s += &format!("{n} field(s) differ\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_names_every_leaf() {
        let mut out = BTreeMap::new();
        flatten("", &serde_json::json!({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": {}, "f": []}), &mut out);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a.b", "a.c[0]", "a.c[1].d", "e", "f"]);
    }

    #[test]
    fn groups() {
        assert_eq!(group_of("detection.eta"), "detection");
        assert_eq!(group_of("provenance.dataset.digest"), "dataset");
        assert_eq!(group_of("provenance.training_config.train.lr"), "training config");
        assert_eq!(group_of("provenance.seed"), "training");
        assert_eq!(group_of("provenance.software.git_commit"), "software");
        assert_eq!(group_of("files[\"encoder.onnx\"].sha256"), "files");
        assert_eq!(group_of("metrics.image_auroc"), "metrics");
        assert_eq!(group_of("version"), "identity");
    }
}
