//! Accuracy control of reduced-precision variants: when a variant is outside its parity bound,
//! keep in float32 the part whose reduced precision costs the most and measure again, for a
//! bounded number of steps (the idea of accuracy-controlled post-training quantization, as in
//! OpenVINO NNCF). What was kept is recorded in the signed manifest ([`Controlled::float32`]).
//!
//! INT8 ranks the prior's convolutions once by the log-prob SQNR each one alone restores
//! ([`Int8Writer::sensitivity`], cheap), then keeps them in that order. FP16 has three graphs:
//! each candidate is measured end to end and the best one kept.

use super::parity::{ParityError, Reference};
use crate::onnx::{precision, Precision};
use crate::package::{Parity, ParityBound, GRAPH_FILES};
use crate::runtime::session::SessionOptions;
use crate::runtime::variant::{Int8Writer, VariantError};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many of the prior's convolutions are kept in float32 by INT8 accuracy control
/// (each one kept gives back part of INT8's speed).
pub const MAX_INT8_KEPT: usize = 3;
/// At most this many of the three graphs are kept in float32 by FP16 accuracy control.
pub const MAX_FP16_KEPT: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Parity(#[from] ParityError),
    #[error(transparent)]
    Variant(#[from] VariantError),
    #[error(transparent)]
    Precision(#[from] precision::PrecisionError),
}

/// A variant as it will be packaged.
pub struct Controlled {
    /// Archive entries written for this precision (entry name → bytes).
    pub entries: BTreeMap<String, Vec<u8>>,
    /// Graph → archive entry that runs it in this variant (the FP32 entry where it is kept).
    pub files: BTreeMap<String, String>,
    /// Graphs or convolution nodes kept in float32, in the order they were kept.
    pub float32: Vec<String>,
    pub parity: Parity,
}

/// Orders parity records: within bound first, then decision agreement, mask IoU, SQNR.
fn better(a: &Parity, b: &Parity) -> bool {
    let key = |p: &Parity| (p.within_bound, p.decision_agreement, p.mask_iou.unwrap_or(1.0), p.prior_logprob_sqnr_db);
    key(a).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Greater)
}

/// The FP16 variant of the FP32 `graphs` (plain names), within `bound` if keeping at most
/// [`MAX_FP16_KEPT`] graph in float32 gets it there; otherwise the best one tried.
pub fn fp16(reference: &Reference, graphs: &BTreeMap<String, Vec<u8>>, bound: ParityBound, progress: &dyn Fn(&str)) -> Result<Controlled, ControlError> {
    let mut half = BTreeMap::new();
    for g in GRAPH_FILES {
        let fp32 = graphs.get(g).ok_or_else(|| ParityError::Invalid(format!("the fp32 graphs lack {g}")))?;
        half.insert(g.to_string(), precision::to_fp16(fp32)?);
    }
    let assemble = |kept: &BTreeSet<String>| -> BTreeMap<String, Vec<u8>> {
        let mut out = graphs.clone();
        for (g, b) in &half {
            if !kept.contains(g) {
                out.insert(g.clone(), b.clone());
            }
        }
        out
    };
    let mut kept = BTreeSet::new();
    let mut order = vec![];
    let mut parity = reference.compare(&assemble(&kept), "fp16", bound, progress)?;
    while let Some(why) = parity.violation().filter(|_| kept.len() < MAX_FP16_KEPT) {
        progress(&format!("fp16: outside its bound ({why}); trying each graph in float32"));
        let mut best: Option<(String, Parity)> = None;
        for g in GRAPH_FILES.iter().filter(|g| !kept.contains(**g)) {
            let mut k = kept.clone();
            k.insert(g.to_string());
            let p = reference.compare(&assemble(&k), &format!("fp16 with {g} in float32"), bound, progress)?;
            if best.as_ref().is_none_or(|(_, b)| better(&p, b)) {
                best = Some((g.to_string(), p));
            }
        }
        let Some((g, p)) = best else { break };
        if !better(&p, &parity) {
            progress("fp16: keeping a graph in float32 does not improve it; left as it is");
            break;
        }
        progress(&format!("fp16: keeping {g} in float32"));
        kept.insert(g.clone());
        order.push(g);
        parity = p;
    }
    let entries = half.into_iter().filter(|(g, _)| !kept.contains(g)).map(|(g, b)| (Precision::Fp16.file_name(&g), b)).collect();
    let files = GRAPH_FILES.iter().map(|g| (g.to_string(), if kept.contains(*g) { g.to_string() } else { Precision::Fp16.file_name(g) })).collect();
    Ok(Controlled { entries, files, float32: order, parity })
}

/// The INT8 variant (the prior quantized, see [`crate::runtime::variant::INT8_GRAPHS`]),
/// within `bound` if keeping at most [`MAX_INT8_KEPT`] convolutions in float32 gets it there;
/// otherwise the last one tried (the most accurate).
pub fn int8(
    reference: &Reference,
    graphs: &BTreeMap<String, Vec<u8>>,
    writer: &Int8Writer,
    session: &SessionOptions,
    bound: ParityBound,
    progress: &dyn Fn(&str),
) -> Result<Controlled, ControlError> {
    let [g] = crate::runtime::variant::INT8_GRAPHS;
    // The FP32 graphs with the prior replaced by its INT8 graph keeping `kept` in float32.
    let compare = |kept: &BTreeSet<String>, label: &str| -> Result<Parity, ControlError> {
        let mut all = graphs.clone();
        all.insert(g.to_string(), writer.write(kept)?.1);
        Ok(reference.compare(&all, label, bound, progress)?)
    };
    let mut kept = BTreeSet::new();
    let mut order: Vec<String> = vec![];
    let mut parity = compare(&kept, "int8")?;
    if parity.violation().is_some() {
        progress("int8: ranking the prior's convolutions by what keeping each in float32 gives back…");
        let ranked = writer.sensitivity(session)?;
        progress(&format!(
            "int8: log-prob SQNR with one convolution in float32: {}",
            ranked.iter().take(4).map(|(c, db)| format!("{c} {db:.1} dB")).collect::<Vec<_>>().join(", ")
        ));
        for (conv, _) in ranked.into_iter().take(MAX_INT8_KEPT) {
            let Some(why) = parity.violation() else { break };
            progress(&format!("int8: outside its bound ({why}); keeping {conv} in float32"));
            kept.insert(conv.clone());
            order.push(conv);
            parity = compare(&kept, &format!("int8 with {} in float32", order.join(", ")))?;
        }
    }
    let (entry, bytes) = writer.write(&kept)?;
    let files = crate::runtime::variant::variant_files(Precision::Int8);
    Ok(Controlled { entries: BTreeMap::from([(entry, bytes)]), files, float32: order, parity })
}
