//! Resampling (eq. 5): incremental and batched runs equal an independent, literal implementation
//! of the sequential definition on random causal priors; the neighbourhood rule at grid edges.

use ndarray::{Array2, Array3, Array4, Axis};
use vqad::runtime::resample::{resample, resample_batch, Prior, PriorError, ResampleMode, ResampleOptions, LIKELY_RATIO};

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A causal prior whose distribution at q is a pseudo-random function of (seed, q, z_<q): a
/// rolling hash of the prefix, so a change at c alters every later distribution. Logits are
/// coarse integer levels, so argmax ties happen often.
struct HashPrior {
    k: usize,
    seed: u64,
    calls: Vec<usize>,
}

impl Prior for HashPrior {
    fn log_probs(&mut self, tables: &Array3<i64>) -> Result<Array4<f32>, PriorError> {
        let (b, m, n) = tables.dim();
        self.calls.push(b);
        let mut out = Array4::<f32>::zeros((b, self.k, m, n));
        for i in 0..b {
            let mut h = mix(self.seed);
            for q in 0..m * n {
                let (r, c) = (q / n, q % n);
                let mut logits = vec![0f64; self.k];
                let mut s = mix(h ^ (q as u64) << 32);
                for l in logits.iter_mut() {
                    s = mix(s);
                    *l = 2.5 * (s % 5) as f64;
                }
                let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
                for (k, l) in logits.iter().enumerate() {
                    out[[i, k, r, c]] = (l - lse) as f32;
                }
                h = mix(h ^ mix(tables[[i, r, c]] as u64 + 1));
            }
        }
        Ok(out)
    }
    fn num_codes(&self) -> usize {
        self.k
    }
}

/// The bottom half of (m, n)'s 8-neighbourhood that lies inside the grid.
fn bottom_half(m: usize, n: usize, rows: usize, cols: usize) -> Vec<(usize, usize)> {
    [(0isize, 1isize), (1, -1), (1, 0), (1, 1)]
        .iter()
        .map(|&(dm, dn)| (m as isize + dm, n as isize + dn))
        .filter(|&(a, b)| a >= 0 && b >= 0 && (a as usize) < rows && (b as usize) < cols)
        .map(|(a, b)| (a as usize, b as usize))
        .collect()
}

/// The definition, literally: before every position, a fresh pass over the current table.
fn reference(prior: &mut dyn Prior, table: &Array2<i64>, eta: f64, local: bool) -> Array2<i64> {
    let (rows, cols) = table.dim();
    let mut z = table.clone();
    let ln_eta = eta.ln();
    for m in 0..rows {
        for n in 0..cols {
            let lp = prior.log_probs(&z.view().insert_axis(Axis(0)).to_owned()).unwrap();
            let prob_low = |mm: usize, nn: usize| (lp[[0, z[[mm, nn]] as usize, mm, nn]] as f64) < ln_eta;
            let mut fire = prob_low(m, n);
            if fire && local {
                let hood = bottom_half(m, n, rows, cols);
                if !hood.is_empty() {
                    fire = hood.iter().any(|&(a, b)| prob_low(a, b)); // min < η ⇔ some < η
                }
            }
            if fire {
                let k_best =
                    (0..prior.num_codes())
                        .fold(0usize, |best, k| if lp[[0, k, m, n]] > lp[[0, best, m, n]] { k } else { best });
                z[[m, n]] = k_best as i64;
            }
        }
    }
    z
}

fn random_tables(seed: u64, b: usize, m: usize, n: usize, k: usize) -> Array3<i64> {
    let mut s = mix(seed ^ 0xABCD);
    Array3::from_shape_fn((b, m, n), |_| {
        s = mix(s);
        (s % k as u64) as i64
    })
}

#[test]
fn the_test_prior_is_causal_and_propagates_changes() {
    let mut p = HashPrior { k: 5, seed: 3, calls: vec![] };
    let t = random_tables(1, 1, 4, 5, 5);
    let a = p.log_probs(&t).unwrap();
    let mut t2 = t.clone();
    t2[[0, 1, 2]] = (t2[[0, 1, 2]] + 1) % 5;
    let b = p.log_probs(&t2).unwrap();
    for q in 0..20 {
        let (r, c) = (q / 5, q % 5);
        let same = (0..5).all(|k| a[[0, k, r, c]] == b[[0, k, r, c]]);
        if q <= 7 {
            assert!(same, "output at {q} must not depend on position 7 or later");
        }
    }
    assert!((8..20).any(|q| (0..5).any(|k| a[[0, k, q / 5, q % 5]] != b[[0, k, q / 5, q % 5]])));
}

#[test]
fn incremental_naive_and_batched_equal_the_sequential_definition() {
    let shapes = [(1, 1), (1, 6), (6, 1), (2, 2), (4, 6), (7, 7)];
    let mut total_changes = 0;
    let mut local_mattered = false;
    for seed in 0..24u64 {
        for &(m, n) in &shapes {
            let k = 3 + (seed as usize % 6);
            let b = 5;
            let tables = random_tables(seed * 31 + m as u64 * 7 + n as u64, b, m, n, k);
            for &eta in &[0.002, 0.02, 0.08, 0.2, 0.5] {
                let mut by_local = vec![];
                for &local in &[true, false] {
                    let opts = ResampleOptions { eta, local_constraint: local };
                    let mut prior = HashPrior { k, seed, calls: vec![] };
                    let expected: Vec<Array2<i64>> =
                        tables.outer_iter().map(|t| reference(&mut prior, &t.to_owned(), eta, local)).collect();

                    // Batched, incremental.
                    let mut prior = HashPrior { k, seed, calls: vec![] };
                    let (outs, stats) = resample_batch(&mut prior, &tables, &opts, ResampleMode::Incremental).unwrap();
                    let mut passes = vec![];
                    for (i, o) in outs.iter().enumerate() {
                        let ctx = format!("seed {seed} {m}x{n} k {k} eta {eta} local {local} image {i}");
                        assert_eq!(o.table, expected[i], "{ctx}");
                        let input = tables.index_axis(Axis(0), i);
                        let diff: Vec<(usize, usize)> =
                            input.indexed_iter().filter(|&((r, c), &z)| o.table[[r, c]] != z).map(|(p, _)| p).collect();
                        assert_eq!(o.resampled, diff, "{ctx}: resampled = changed positions, raster order");
                        let last_changed = o.resampled.last() == Some(&(m - 1, n - 1));
                        assert_eq!(o.prior_passes, 1 + o.resampled.len() - usize::from(last_changed), "{ctx}");
                        passes.push(o.prior_passes);
                        total_changes += o.resampled.len();
                    }
                    // Counters agree with what the prior actually saw.
                    assert_eq!(stats.prior_calls, prior.calls.len());
                    assert_eq!(stats.prior_calls, *passes.iter().max().unwrap());
                    assert_eq!(stats.rows_evaluated, prior.calls.iter().sum::<usize>());
                    assert_eq!(stats.rows_evaluated, passes.iter().sum::<usize>());
                    assert!(prior.calls.windows(2).all(|w| w[0] >= w[1]), "finished images leave the batch");

                    // One at a time, incremental, equals batched.
                    for (i, t) in tables.outer_iter().enumerate() {
                        let mut prior = HashPrior { k, seed, calls: vec![] };
                        let single = resample(&mut prior, &t.to_owned(), &opts, ResampleMode::Incremental).unwrap();
                        assert_eq!(single, outs[i]);
                        assert!(prior.calls.iter().all(|&c| c == 1));
                    }

                    // Naive mode: M·N passes per image, same tables.
                    let mut prior = HashPrior { k, seed, calls: vec![] };
                    let (naive, nstats) = resample_batch(&mut prior, &tables, &opts, ResampleMode::Naive).unwrap();
                    assert_eq!(nstats.prior_calls, m * n);
                    assert_eq!(nstats.rows_evaluated, b * m * n);
                    for (i, o) in naive.iter().enumerate() {
                        assert_eq!(o.table, expected[i]);
                        assert_eq!(o.resampled, outs[i].resampled);
                        assert_eq!(o.prior_passes, m * n);
                    }
                    by_local.push(expected);
                }
                local_mattered |= by_local[0] != by_local[1];
            }
        }
    }
    assert!(total_changes > 2000, "the property test must exercise many changes, saw {total_changes}");
    assert!(local_mattered, "the local constraint must change some outcome");
}

/// A prior that ignores the table: code 0 is likely (0.99) everywhere except at the `low`
/// positions, where it has probability 1e-4 (code 1 takes the rest).
struct Spots {
    rows: usize,
    cols: usize,
    low: Vec<(usize, usize)>,
}

impl Prior for Spots {
    fn log_probs(&mut self, t: &Array3<i64>) -> Result<Array4<f32>, PriorError> {
        let b = t.dim().0;
        let mut out = Array4::<f32>::zeros((b, 2, self.rows, self.cols));
        for i in 0..b {
            for r in 0..self.rows {
                for c in 0..self.cols {
                    let p0: f64 = if self.low.contains(&(r, c)) { 1e-4 } else { 0.99 };
                    out[[i, 0, r, c]] = p0.ln() as f32;
                    out[[i, 1, r, c]] = (1.0 - p0).ln() as f32;
                }
            }
        }
        Ok(out)
    }
    fn num_codes(&self) -> usize {
        2
    }
}

fn fires(rows: usize, cols: usize, target: (usize, usize), low_neighbour: Option<(usize, usize)>, local: bool) -> bool {
    let mut low = vec![target];
    low.extend(low_neighbour);
    let mut p = Spots { rows, cols, low };
    let opts = ResampleOptions { eta: 1e-3, local_constraint: local };
    for mode in [ResampleMode::Incremental, ResampleMode::Naive] {
        let o = resample(&mut p, &Array2::zeros((rows, cols)), &opts, mode).unwrap();
        assert_eq!(o.table[target] == 1, o.resampled.contains(&target));
        if mode == ResampleMode::Naive {
            return o.table[target] == 1;
        }
    }
    unreachable!()
}

#[test]
fn neighbourhood_rule_at_edges_and_corners() {
    let (rows, cols) = (4, 5);
    let bottom_half = [(0isize, 1isize), (1, -1), (1, 0), (1, 1)];
    let targets = [
        (0, 0), // first row, first column (top-left corner)
        (0, 2), // first row
        (0, 4), // top-right corner
        (2, 0), // first column
        (1, 4), // last column
        (3, 0), // bottom-left corner
        (3, 2), // last row
        (2, 2), // interior
        (1, 1), // second column: below-left is column 0
        (3, 1), // last row, second column
        (3, 4), // last position
    ];
    for &t in &targets {
        let has_bottom = bottom_half.iter().any(|&(dm, dn)| {
            let (a, b) = (t.0 as isize + dm, t.1 as isize + dn);
            a >= 0 && b >= 0 && (a as usize) < rows && (b as usize) < cols
        });
        // No low neighbour: fires only where no bottom-half neighbour exists (last position).
        assert_eq!(fires(rows, cols, t, None, true), !has_bottom, "{t:?} alone");
        assert!(fires(rows, cols, t, None, false), "{t:?} without the local constraint");
        // Exactly one low neighbour, each of the 8 that lie in the grid.
        for dm in -1isize..=1 {
            for dn in -1isize..=1 {
                if (dm, dn) == (0, 0) {
                    continue;
                }
                let (a, b) = (t.0 as isize + dm, t.1 as isize + dn);
                if a < 0 || b < 0 || a as usize >= rows || b as usize >= cols {
                    continue;
                }
                let u = (a as usize, b as usize);
                let expect = bottom_half.contains(&(dm, dn)) || !has_bottom;
                assert_eq!(fires(rows, cols, t, Some(u), true), expect, "target {t:?}, low neighbour {u:?}");
            }
        }
    }
    // Named cases, spelled out.
    assert!(fires(4, 5, (0, 0), Some((1, 0)), true), "top-left uses the neighbour below");
    assert!(fires(4, 5, (0, 4), Some((1, 3)), true), "top-right uses below-left");
    assert!(!fires(4, 5, (0, 4), Some((0, 3)), true), "left neighbour is not in the bottom half");
    assert!(fires(4, 5, (3, 2), Some((3, 3)), true), "last row uses only the right neighbour");
    assert!(!fires(4, 5, (3, 2), Some((2, 3)), true), "last row: the row above does not count");
    assert!(!fires(4, 5, (2, 0), Some((3, 4)), true), "far positions do not count");
    assert!(fires(4, 5, (2, 0), Some((3, 1)), true), "first column uses below-right");
    assert!(fires(4, 5, (1, 4), Some((2, 3)), true), "last column uses below-left");
    assert!(!fires(4, 5, (1, 4), Some((1, 3)), true), "last column: the left neighbour does not count");
    assert!(fires(4, 5, (3, 4), None, true), "last position decides by p alone");
    assert!(fires(1, 1, (0, 0), None, true), "a 1x1 grid decides by p alone");
    assert!(fires(1, 3, (0, 1), Some((0, 2)), true) && !fires(1, 3, (0, 1), None, true), "single row");
    assert!(fires(3, 1, (1, 0), Some((2, 0)), true) && !fires(3, 1, (1, 0), None, true), "single column");
}

#[test]
fn a_low_neighbour_is_read_with_its_current_code() {
    // (0,0) low; (0,1) low for code 0. If (0,1) already holds code 1 (probability ~1), the
    // neighbour is not low and (0,0) must stay.
    let mut p = Spots { rows: 1, cols: 2, low: vec![(0, 0), (0, 1)] };
    let opts = ResampleOptions { eta: 1e-3, local_constraint: true };
    let t = ndarray::array![[0i64, 1]];
    let o = resample(&mut p, &t, &opts, ResampleMode::Incremental).unwrap();
    assert_eq!(o.table, t);
    let t = ndarray::array![[0i64, 0]];
    let o = resample(&mut p, &t, &opts, ResampleMode::Incremental).unwrap();
    assert_eq!(o.table, ndarray::array![[1i64, 1]]);
    assert_eq!(o.resampled, vec![(0, 0), (0, 1)]);
    assert_eq!(o.prior_passes, 2, "no pass after a change at the last position");
}

/// The nearest-likely restoration, literally: before every position a fresh pass; where the
/// rule fires, the code nearest (squared distance, ties to the lowest k) to the current one
/// among those at least `LIKELY_RATIO` times as probable as the most probable code.
fn reference_nearest(prior: &mut dyn Prior, table: &Array2<i64>, eta: f64, codebook: &Array2<f32>) -> Array2<i64> {
    let (rows, cols) = table.dim();
    let mut z = table.clone();
    for m in 0..rows {
        for n in 0..cols {
            let lp = prior.log_probs(&z.view().insert_axis(Axis(0)).to_owned()).unwrap();
            let p = |mm: usize, nn: usize, k: usize| (lp[[0, k, mm, nn]] as f64).exp();
            let low = |mm: usize, nn: usize| p(mm, nn, z[[mm, nn]] as usize) < eta;
            let hood = bottom_half(m, n, rows, cols);
            let fire = low(m, n) && (hood.is_empty() || hood.iter().any(|&(a, b)| low(a, b)));
            if !fire {
                continue;
            }
            let k_codes = prior.num_codes();
            let pmax = (0..k_codes).map(|k| p(m, n, k)).fold(0.0, f64::max);
            let cur = z[[m, n]] as usize;
            let dist = |k: usize| -> f32 { (0..codebook.ncols()).map(|d| (codebook[[cur, d]] - codebook[[k, d]]).powi(2)).sum() };
            let mut likely: Vec<usize> = (0..k_codes).filter(|&k| p(m, n, k) >= LIKELY_RATIO * pmax * (1.0 - 1e-9)).collect();
            likely.sort_by(|&a, &b| dist(a).partial_cmp(&dist(b)).unwrap().then(a.cmp(&b)));
            z[[m, n]] = likely[0] as i64;
        }
    }
    z
}

#[test]
fn nearest_likely_restoration_equals_its_sequential_definition() {
    use vqad::runtime::resample::{resample_batch_with, CodeDistances, Restore};
    let mut changed_differently = 0;
    for seed in 0..16u64 {
        let (m, n, k) = (5, 6, 4 + (seed as usize % 5));
        // A 2-D codebook on a line with a little jitter: distances are distinct and meaningful.
        let codebook = Array2::from_shape_fn((k, 2), |(i, d)| if d == 0 { i as f32 } else { (mix(seed + i as u64) % 7) as f32 * 0.01 });
        let dist = CodeDistances::new(&codebook);
        let tables = random_tables(seed * 13 + 5, 4, m, n, k);
        let opts = ResampleOptions { eta: 0.2, local_constraint: true };
        for mode in [ResampleMode::Incremental, ResampleMode::Naive] {
            let mut p = HashPrior { k, seed, calls: vec![] };
            let (outs, _) = resample_batch_with(&mut p, &tables, &opts, mode, Restore::NearestLikely(&dist)).unwrap();
            for (i, o) in outs.iter().enumerate() {
                let t = tables.index_axis(Axis(0), i).to_owned();
                let mut q = HashPrior { k, seed, calls: vec![] };
                assert_eq!(o.table, reference_nearest(&mut q, &t, opts.eta, &codebook), "seed {seed} image {i} {mode:?}");
                let mut r = HashPrior { k, seed, calls: vec![] };
                let argmax = resample(&mut r, &t, &opts, mode).unwrap().table;
                if argmax != o.table {
                    changed_differently += 1;
                }
            }
        }
    }
    assert!(changed_differently > 0, "the two restoration rules never differed: the test proves nothing");
}

#[test]
fn nearest_likely_refuses_a_codebook_of_the_wrong_size() {
    use vqad::runtime::resample::{resample_batch_with, CodeDistances, Restore};
    let dist = CodeDistances::new(&Array2::zeros((3, 2)));
    let mut p = HashPrior { k: 5, seed: 1, calls: vec![] };
    let e = resample_batch_with(&mut p, &random_tables(1, 1, 2, 2, 5), &ResampleOptions::default(), ResampleMode::Incremental, Restore::NearestLikely(&dist))
        .unwrap_err()
        .to_string();
    assert!(e.contains("K = 5"), "{e}");
}
