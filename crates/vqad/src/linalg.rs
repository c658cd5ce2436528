//! The little dense linear algebra the texture density needs (features number at most a few
//! dozen), kept here so the manifest check and the runtime share one definition.

/// ln det of a symmetric positive definite matrix (rows first) by Cholesky; `None` when it is
/// not positive definite (or not square).
pub fn log_det_spd(a: &[Vec<f64>]) -> Option<f64> {
    let n = a.len();
    if a.iter().any(|r| r.len() != n) {
        return None;
    }
    let mut l = vec![vec![0f64; n]; n];
    let mut log_det = 0.0;
    for i in 0..n {
        for j in 0..=i {
            let s = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i][i] = s.sqrt();
                log_det += s.ln();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(log_det)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_det_matches_hand_computed_cases() {
        // [[4, 2], [2, 3]]: det 8.
        assert!((log_det_spd(&[vec![4.0, 2.0], vec![2.0, 3.0]]).unwrap() - 8f64.ln()).abs() < 1e-12);
        assert!((log_det_spd(&[vec![2.0, 0.0, 0.0], vec![0.0, 3.0, 0.0], vec![0.0, 0.0, 0.5]]).unwrap() - 3f64.ln()).abs() < 1e-12);
        // Indefinite (det −3), singular, and not square.
        assert_eq!(log_det_spd(&[vec![1.0, 2.0], vec![2.0, 1.0]]), None);
        assert_eq!(log_det_spd(&[vec![1.0, 1.0], vec![1.0, 1.0]]), None);
        assert_eq!(log_det_spd(&[vec![1.0, 0.0]]), None);
    }
}
