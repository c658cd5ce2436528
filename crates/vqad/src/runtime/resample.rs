//! Latent-space resampling (paper eq. 5), independent of the inference backend.
//!
//! The rule, exactly as DESIGN.md fixes it: visit (m, n) in raster order with the table as it
//! stands at that moment. `p` = P(Z_mn = z_mn | z_<mn). `I` = the minimum, over the neighbours
//! (m, n+1), (m+1, n−1), (m+1, n), (m+1, n+1) that lie inside the grid, of each neighbour's
//! conditional probability of its *current* code. Resample when `p < η` and `I < η` (a position
//! with none of those neighbours uses `p` alone; without the local constraint `p < η` alone
//! decides): z_mn ← argmax_k P(Z_mn = k | z_<mn), ties to the lowest k.
//!
//! Probabilities are compared in the log domain: `log_prob < ln η`, in f64. exp is monotone, so
//! this is the same rule without the underflow of `exp` for very unlikely codes; η ≤ 0 never
//! fires (ln 0 = −∞ and nothing is below it).
//!
//! Why incremental is exact: the prior is causal, so its output at q depends only on z_<q. A
//! change at c therefore invalidates only outputs at positions after c, and every neighbour used
//! for `I` lies after the visited position, i.e. it is read from a pass over the table as it
//! stands now. Hence one pass at the start plus one pass after each change equals the naive
//! definition (a fresh pass before every position).

use ndarray::{Array2, Array3, Array4, Axis};
use std::rc::Rc;

/// Errors of the prior backend or of the inputs to [`resample_batch`].
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    /// The backend itself failed (ONNX Runtime etc.).
    #[error("prior backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The prior returned an array of the wrong shape.
    #[error("prior returned log-probs of shape {got:?}, expected {expected:?}")]
    OutputShape { expected: Vec<usize>, got: Vec<usize> },
    /// The prior returned NaN or +∞ where the rule reads it (−∞ is a valid log 0).
    #[error("prior returned a non-finite log-prob {value} for code {code} at ({m}, {n}) of image {image}")]
    NonFinite { image: usize, m: usize, n: usize, code: usize, value: f32 },
    /// An index table holds a code outside 0..K.
    #[error("index table of image {image} holds code {code} at ({m}, {n}), outside 0..{num_codes}")]
    CodeOutOfRange { image: usize, m: usize, n: usize, code: i64, num_codes: usize },
    /// Options or inputs that make no sense (message says which).
    #[error("invalid resampling input: {0}")]
    InvalidInput(String),
}

/// An autoregressive prior over index tables (PixelSNAIL behind ONNX Runtime, or a test model).
pub trait Prior {
    /// log p(z_mn = k | z_<mn) for a batch of index tables [B, M, N] -> [B, K, M, N].
    /// Must be causal: output at (m,n) depends only on positions before (m,n) in raster order.
    fn log_probs(&mut self, tables: &Array3<i64>) -> Result<Array4<f32>, PriorError>;
    /// K, the number of codebook entries.
    fn num_codes(&self) -> usize;
}

/// Settings of the resampling rule.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResampleOptions {
    /// Probability threshold η (paper: 0.0005). Must be finite and ≥ 0.
    pub eta: f64,
    /// Require a low-probability bottom-half neighbour too (paper's local constraint, §3.3).
    pub local_constraint: bool,
}

impl Default for ResampleOptions {
    /// The paper's setting: η = 0.0005 with the local constraint.
    fn default() -> Self {
        Self { eta: 0.0005, local_constraint: true }
    }
}

/// Which code a position gets when the rule fires.
#[derive(Debug, Clone, Copy, Default)]
pub enum Restore<'a> {
    /// argmax_k P(Z_mn = k | z_<mn), ties to the lowest k (the paper).
    #[default]
    Argmax,
    /// Among the likely codes — at least [`LIKELY_RATIO`] times as probable as the argmax — the
    /// one nearest to the current code in codebook space (ties to the lowest k). A normal
    /// position the rule fires on by mistake then changes to a code that decodes alike, while a
    /// defect's code, far from every likely code, still changes visibly.
    NearestLikely(&'a CodeDistances),
}

/// A likely code is at least this fraction as probable as the most probable one.
pub const LIKELY_RATIO: f64 = 0.1;

/// Squared Euclidean distances between codebook entries, [K, K].
#[derive(Debug, Clone, PartialEq)]
pub struct CodeDistances(pub Array2<f32>);

impl CodeDistances {
    /// From a codebook [K, D].
    pub fn new(codebook: &Array2<f32>) -> Self {
        let k = codebook.nrows();
        CodeDistances(Array2::from_shape_fn((k, k), |(a, b)| {
            codebook.row(a).iter().zip(codebook.row(b)).map(|(x, y)| (x - y) * (x - y)).sum()
        }))
    }
}

/// How often the prior is run; both give identical tables for a causal prior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResampleMode {
    /// One pass at the start plus one after each changed code that has positions left after it.
    #[default]
    Incremental,
    /// A fresh pass before every position (M·N passes per image): the definition, for tests and
    /// benchmarks.
    Naive,
}

/// The result for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ResampleOutcome {
    /// The resampled index table [M, N].
    pub table: Array2<i64>,
    /// Positions whose code was changed, in raster order (the table differs from the input
    /// exactly there).
    pub resampled: Vec<(usize, usize)>,
    /// Positions where the rule fired but the argmax already was the current code (no change).
    pub fired_unchanged: usize,
    /// Prior passes in which this image took part. Incremental: 1 + number of changes, minus 1
    /// if the last position (M−1, N−1) changed (nothing is left to recompute for). Naive: M·N.
    pub prior_passes: usize,
    /// The first pass over the input table: log p(z_mn | z_<mn) of each input code and the
    /// entropy (nats) of each position's predictive distribution. Free by-products of the
    /// pass the rule needs anyway; they say how surprised the prior was by the input.
    pub input_log_prob: Array2<f32>,
    pub input_entropy: Array2<f32>,
}

/// Counters of one [`resample_batch`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Calls to [`Prior::log_probs`]. Incremental: the maximum of the images' `prior_passes`,
    /// because a call serves every image that needs a recomputation at that moment. Naive: M·N.
    pub prior_calls: usize,
    /// Tables sent through the prior over all calls (the sum of `prior_passes`): the real cost.
    pub rows_evaluated: usize,
    /// Positions whose code changed, over all images.
    pub codes_changed: usize,
    /// Positions visited, over all images (B·M·N).
    pub positions_visited: usize,
}

/// Log-probs of one image from some pass: the shared batch output and this image's row in it.
struct PassView {
    out: Rc<Array4<f32>>,
    row: usize,
}

impl PassView {
    #[inline]
    fn lp(&self, k: usize, m: usize, n: usize) -> f32 {
        self.out[[self.row, k, m, n]]
    }
}

struct ImageState {
    table: Array2<i64>,
    /// Next raster position to visit.
    cursor: usize,
    view: Option<PassView>,
    outcome_resampled: Vec<(usize, usize)>,
    fired_unchanged: usize,
    passes: usize,
    input_log_prob: Array2<f32>,
    input_entropy: Array2<f32>,
}

/// Resample a batch of index tables [B, M, N]; returns one outcome per image (input order) and
/// the batch counters. Output tables equal those of the naive sequential definition applied to
/// each image on its own, in either mode.
///
/// Batching: each prior call carries only the images that need a recomputation (they changed a
/// code and still have positions to visit); an image whose cursor reached the end leaves.
pub fn resample_batch(
    prior: &mut dyn Prior,
    tables: &Array3<i64>,
    opts: &ResampleOptions,
    mode: ResampleMode,
) -> Result<(Vec<ResampleOutcome>, BatchStats), PriorError> {
    resample_batch_with(prior, tables, opts, mode, Restore::Argmax)
}

/// [`resample_batch`] with a choice of the code a fired position gets.
pub fn resample_batch_with(
    prior: &mut dyn Prior,
    tables: &Array3<i64>,
    opts: &ResampleOptions,
    mode: ResampleMode,
    restore: Restore,
) -> Result<(Vec<ResampleOutcome>, BatchStats), PriorError> {
    if let Restore::NearestLikely(d) = restore {
        if d.0.dim() != (prior.num_codes(), prior.num_codes()) {
            return Err(PriorError::InvalidInput(format!("code distances are {:?}, the prior has K = {}", d.0.dim(), prior.num_codes())));
        }
    }
    if !opts.eta.is_finite() || opts.eta < 0.0 {
        return Err(PriorError::InvalidInput(format!("eta must be finite and >= 0, got {}", opts.eta)));
    }
    let k_codes = prior.num_codes();
    if k_codes == 0 {
        return Err(PriorError::InvalidInput("prior has no codes (K = 0)".into()));
    }
    let (b, rows, cols) = tables.dim();
    for ((i, m, n), &z) in tables.indexed_iter() {
        if z < 0 || z as u64 >= k_codes as u64 {
            return Err(PriorError::CodeOutOfRange { image: i, m, n, code: z, num_codes: k_codes });
        }
    }
    let ln_eta = opts.eta.ln();
    let total = rows * cols;
    let mut states: Vec<ImageState> = tables
        .outer_iter()
        .map(|t| ImageState {
            table: t.to_owned(),
            cursor: 0,
            view: None,
            outcome_resampled: Vec::new(),
            fired_unchanged: 0,
            passes: 0,
            input_log_prob: Array2::zeros((rows, cols)),
            input_entropy: Array2::zeros((rows, cols)),
        })
        .collect();
    let mut stats = BatchStats { positions_visited: b * total, ..Default::default() };

    // Images that need a fresh pass before they can continue.
    let mut pending: Vec<usize> = if total == 0 { vec![] } else { (0..b).collect() };
    while !pending.is_empty() {
        let mut batch = Array3::<i64>::zeros((pending.len(), rows, cols));
        for (row, &i) in pending.iter().enumerate() {
            batch.index_axis_mut(Axis(0), row).assign(&states[i].table);
        }
        let out = prior.log_probs(&batch)?;
        let expected = [pending.len(), k_codes, rows, cols];
        if out.shape() != expected {
            return Err(PriorError::OutputShape { expected: expected.to_vec(), got: out.shape().to_vec() });
        }
        stats.prior_calls += 1;
        stats.rows_evaluated += pending.len();
        let out = Rc::new(out);
        let mut next = Vec::new();
        for (row, &i) in pending.iter().enumerate() {
            let st = &mut states[i];
            st.passes += 1;
            let view = PassView { out: Rc::clone(&out), row };
            if st.passes == 1 {
                input_surprise(&view, &st.table, k_codes, &mut st.input_log_prob, &mut st.input_entropy);
            }
            st.view = Some(view);
            // Naive: visit exactly one position per pass. Incremental: run until a change.
            loop {
                let q = st.cursor;
                let (m, n) = (q / cols, q % cols);
                let view = st.view.as_ref().expect("set above");
                let new_code = decide(view, &st.table, m, n, rows, cols, k_codes, ln_eta, opts.local_constraint, restore)
                    .map_err(|(m, n, code, value)| PriorError::NonFinite { image: i, m, n, code, value })?;
                st.cursor += 1;
                let mut changed = false;
                match new_code {
                    Some(k) if k as i64 != st.table[[m, n]] => {
                        st.table[[m, n]] = k as i64;
                        st.outcome_resampled.push((m, n));
                        stats.codes_changed += 1;
                        changed = true;
                    }
                    Some(_) => st.fired_unchanged += 1,
                    None => {}
                }
                if st.cursor >= total {
                    st.view = None;
                    break;
                }
                if changed || mode == ResampleMode::Naive {
                    st.view = None;
                    next.push(i);
                    break;
                }
            }
        }
        pending = next;
    }
    let outcomes = states
        .into_iter()
        .map(|s| ResampleOutcome {
            table: s.table,
            resampled: s.outcome_resampled,
            fired_unchanged: s.fired_unchanged,
            prior_passes: s.passes,
            input_log_prob: s.input_log_prob,
            input_entropy: s.input_entropy,
        })
        .collect();
    Ok((outcomes, stats))
}

/// The bottom half of (m, n)'s 8-neighbourhood that lies inside the grid — (m, n+1),
/// (m+1, n−1), (m+1, n), (m+1, n+1) — the neighbours whose probabilities make `I(m, n)`. All
/// lie after (m, n) in raster order.
pub fn bottom_half(m: usize, n: usize, rows: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    let right = (n + 1 < cols).then_some((m, n + 1));
    let below = (m + 1 < rows).then_some(());
    let below_left = below.filter(|_| n >= 1).map(|_| (m + 1, n - 1));
    let below_mid = below.map(|_| (m + 1, n));
    let below_right = below.filter(|_| n + 1 < cols).map(|_| (m + 1, n + 1));
    [right, below_left, below_mid, below_right].into_iter().flatten()
}

/// Fills log p of each current code and the predictive entropy of each position from a pass.
fn input_surprise(view: &PassView, table: &Array2<i64>, k_codes: usize, log_prob: &mut Array2<f32>, entropy: &mut Array2<f32>) {
    for ((m, n), &z) in table.indexed_iter() {
        log_prob[[m, n]] = view.lp(z as usize, m, n);
        let mut h = 0.0f64;
        for k in 0..k_codes {
            let lp = view.lp(k, m, n) as f64;
            if lp.is_finite() {
                h -= lp.exp() * lp;
            }
        }
        entropy[[m, n]] = h as f32;
    }
}

/// Resample one table [M, N] (a batch of one).
pub fn resample(
    prior: &mut dyn Prior,
    table: &Array2<i64>,
    opts: &ResampleOptions,
    mode: ResampleMode,
) -> Result<ResampleOutcome, PriorError> {
    let batch = table.view().insert_axis(Axis(0)).to_owned();
    let (mut outs, _) = resample_batch(prior, &batch, opts, mode)?;
    outs.pop().ok_or_else(|| PriorError::InvalidInput("empty batch".into()))
}

/// The rule at (m, n): `Some(argmax)` if it fires, `None` otherwise. The error carries
/// (m, n, code, value) of a non-finite log-prob that the rule had to read.
#[allow(clippy::too_many_arguments)]
#[inline]
fn decide(
    view: &PassView,
    table: &Array2<i64>,
    m: usize,
    n: usize,
    rows: usize,
    cols: usize,
    k_codes: usize,
    ln_eta: f64,
    local: bool,
    restore: Restore,
) -> Result<Option<usize>, (usize, usize, usize, f32)> {
    let read = |mm: usize, nn: usize, k: usize| -> Result<f64, (usize, usize, usize, f32)> {
        let v = view.lp(k, mm, nn);
        if v.is_nan() || v == f32::INFINITY {
            Err((mm, nn, k, v))
        } else {
            Ok(v as f64)
        }
    };
    let own = read(m, n, table[[m, n]] as usize)?;
    // Neither side is NaN here (read() rejects NaN; eta is validated), so >= is the negation.
    if own >= ln_eta {
        return Ok(None);
    }
    if local {
        // Bottom half of the 8-neighbourhood, clipped to the grid; all lie after (m, n), so the
        // current pass is valid for them.
        let mut any = false;
        let mut min_lp = f64::INFINITY;
        for (mm, nn) in bottom_half(m, n, rows, cols) {
            any = true;
            min_lp = min_lp.min(read(mm, nn, table[[mm, nn]] as usize)?);
        }
        if any && min_lp >= ln_eta {
            return Ok(None);
        }
    }
    // argmax, ties to the lowest k (strict >, ascending scan).
    let mut best = 0usize;
    let mut best_v = read(m, n, 0)?;
    for k in 1..k_codes {
        let v = read(m, n, k)?;
        if v > best_v {
            best = k;
            best_v = v;
        }
    }
    if let Restore::NearestLikely(dist) = restore {
        let current = table[[m, n]] as usize;
        let floor = best_v + LIKELY_RATIO.ln();
        let mut pick = best;
        let mut pick_d = dist.0[[current, best]];
        for k in 0..k_codes {
            let d = dist.0[[current, k]];
            if read(m, n, k)? >= floor && (d < pick_d || (d == pick_d && k < pick)) {
                pick = k;
                pick_d = d;
            }
        }
        return Ok(Some(pick));
    }
    Ok(Some(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    /// A prior that ignores the table: fixed log-probs [K, M, N] (trivially causal).
    struct Fixed(Array3<f32>);
    impl Prior for Fixed {
        fn log_probs(&mut self, t: &Array3<i64>) -> Result<Array4<f32>, PriorError> {
            let (b, _, _) = t.dim();
            let v = self.0.view().insert_axis(Axis(0));
            Ok(v.broadcast((b, self.0.dim().0, self.0.dim().1, self.0.dim().2)).unwrap().to_owned())
        }
        fn num_codes(&self) -> usize {
            self.0.dim().0
        }
    }

    #[test]
    fn ties_go_to_the_lowest_code() {
        // K = 3, one position: code 0 is unlikely, codes 1 and 2 tie.
        let lp = Array3::from_shape_vec((3, 1, 1), vec![-20.0f32, -0.7, -0.7]).unwrap();
        let mut p = Fixed(lp);
        let t = Array2::zeros((1, 1));
        let o = resample(&mut p, &t, &ResampleOptions { eta: 0.01, local_constraint: true }, ResampleMode::Incremental)
            .unwrap();
        assert_eq!(o.table[[0, 0]], 1);
        assert_eq!(o.resampled, vec![(0, 0)]);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let lp = Array3::from_elem((2, 2, 2), -0.7f32);
        let mut p = Fixed(lp);
        let opts = ResampleOptions::default();
        let bad = Array3::from_elem((1, 2, 2), 5i64);
        assert!(matches!(
            resample_batch(&mut p, &bad, &opts, ResampleMode::Incremental),
            Err(PriorError::CodeOutOfRange { .. })
        ));
        let wrong_shape = Array3::zeros((1, 3, 2));
        assert!(matches!(
            resample_batch(&mut p, &wrong_shape, &opts, ResampleMode::Incremental),
            Err(PriorError::OutputShape { .. })
        ));
        let nan = ResampleOptions { eta: f64::NAN, local_constraint: true };
        assert!(matches!(
            resample_batch(&mut p, &Array3::zeros((1, 2, 2)), &nan, ResampleMode::Naive),
            Err(PriorError::InvalidInput(_))
        ));
        let mut q = Fixed(Array3::from_elem((2, 2, 2), f32::NAN));
        assert!(matches!(
            resample_batch(&mut q, &Array3::zeros((1, 2, 2)), &opts, ResampleMode::Naive),
            Err(PriorError::NonFinite { .. })
        ));
    }

    #[test]
    fn empty_batch_and_empty_grid_need_no_pass() {
        let mut p = Fixed(Array3::from_elem((2, 0, 3), 0.0f32));
        let (o, s) =
            resample_batch(&mut p, &Array3::zeros((2, 0, 3)), &ResampleOptions::default(), ResampleMode::Incremental)
                .unwrap();
        assert_eq!((o.len(), s.prior_calls), (2, 0));
        let mut p = Fixed(Array3::from_elem((2, 2, 2), 0.0f32));
        let (o, s) =
            resample_batch(&mut p, &Array3::zeros((0, 2, 2)), &ResampleOptions::default(), ResampleMode::Incremental)
                .unwrap();
        assert_eq!((o.len(), s.prior_calls), (0, 0));
    }
}
