//! Straight-line fits of a memory series.

/// Least-squares line through `(t, y)` points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// dy/dt, bytes per second.
    pub slope: f64,
    /// The line's value at the last point's time.
    pub at_end: f64,
    /// Share of the variance the line explains (R²), 0 to 1; 0 when `y`
    /// does not vary.
    pub r2: f64,
    pub points: usize,
    pub span_s: f64,
}

/// Fits a line; None with fewer than two points or no time between them.
pub fn fit<'a>(points: impl Iterator<Item = &'a (f64, f64)> + Clone) -> Option<Fit> {
    let n = points.clone().count();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let (st, sy) = points.clone().fold((0.0, 0.0), |(a, b), &(t, y)| (a + t, b + y));
    let (mt, my) = (st / nf, sy / nf);
    let (mut stt, mut sty, mut syy) = (0.0, 0.0, 0.0);
    let (mut first, mut last) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(t, y) in points {
        let (dt, dy) = (t - mt, y - my);
        stt += dt * dt;
        sty += dt * dy;
        syy += dy * dy;
        first = first.min(t);
        last = last.max(t);
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = sty / stt;
    let r2 = if syy > 0.0 { (sty * sty / (stt * syy)).clamp(0.0, 1.0) } else { 0.0 };
    Some(Fit { slope, at_end: my + slope * (last - mt), r2, points: n, span_s: last - first })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_fitted_exactly() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 100.0 + 3.0 * i as f64)).collect();
        let f = fit(pts.iter()).unwrap();
        assert!((f.slope - 3.0).abs() < 1e-9);
        assert!((f.at_end - 127.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert_eq!((f.points, f.span_s), (10, 9.0));
    }

    #[test]
    fn flat_and_degenerate_series() {
        let flat: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 7.0)).collect();
        let f = fit(flat.iter()).unwrap();
        assert_eq!((f.slope, f.r2), (0.0, 0.0));
        assert!(fit([(1.0, 2.0)].iter()).is_none());
        assert!(fit([(1.0, 2.0), (1.0, 3.0)].iter()).is_none());
    }
}
