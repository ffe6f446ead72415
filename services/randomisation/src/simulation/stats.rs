//! The small amount of distribution theory the bias assessment needs:
//! normal deviates from the simulation stream (written here, so the
//! simulated responses stay a function of the seed alone, like every other
//! draw) and the two-sample t-test, with Student's t from `statrs`.

use equipoise_stream::{ChaCha20Rng, unit_interval};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A standard normal deviate by Box–Muller from two unit draws (one is
/// discarded: simpler than carrying the pair, and the stream is cheap).
pub fn standard_normal(rng: &mut ChaCha20Rng) -> f64 {
    // unit_interval is in [0, 1); 1 − u is in (0, 1], so the log is finite.
    let u = 1.0 - unit_interval(rng);
    let v = unit_interval(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Running sums of one arm's responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArmSums {
    pub n: f64,
    pub sum: f64,
    pub squares: f64,
}

impl ArmSums {
    pub fn add(&mut self, y: f64) {
        self.n += 1.0;
        self.sum += y;
        self.squares += y * y;
    }

    fn mean(&self) -> f64 {
        self.sum / self.n
    }

    /// Sum of squared deviations from the arm's mean.
    fn deviations(&self) -> f64 {
        (self.squares - self.sum * self.sum / self.n).max(0.0)
    }
}

/// The pooled-variance two-sample t statistic and its degrees of freedom;
/// `None` when an arm has no subject or there is no degree of freedom.
pub fn t_statistic(a: &ArmSums, b: &ArmSums) -> Option<(f64, f64)> {
    let df = a.n + b.n - 2.0;
    if a.n < 1.0 || b.n < 1.0 || df < 1.0 {
        return None;
    }
    let pooled = (a.deviations() + b.deviations()) / df;
    let se = (pooled * (1.0 / a.n + 1.0 / b.n)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    Some(((a.mean() - b.mean()) / se, df))
}

/// The two-sided critical value t_{1−α/2, df}, by bisection on the CDF:
/// statrs's own `inverse_cdf` drifts for large df (1.8266 at df = 10⁷,
/// where the value is 1.95996), and a trial may have that many subjects.
pub fn t_critical(alpha: f64, df: f64) -> f64 {
    let target = 1.0 - alpha / 2.0;
    let (mut low, mut high) = (0.0, 1.0);
    while t_cdf(high, df) < target && high < 1e6 {
        high *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if t_cdf(mid, df) < target {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// Student's t CDF.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    students_t(df).map_or(f64::NAN, |distribution| distribution.cdf(t))
}

/// `None` for degrees of freedom that are not positive and finite: the
/// bias assessment asks only for n − 2 with n ≥ 3.
fn students_t(df: f64) -> Option<StudentsT> {
    StudentsT::new(0.0, 1.0, df).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_stream::simulation_stream;

    /// Critical values from standard tables (R's qt).
    #[test]
    fn t_critical_values_match_the_tables() {
        for (alpha, df, expected) in [
            (0.05, 1.0, 12.706_204_736_174_7),
            (0.05, 10.0, 2.228_138_851_986_274),
            (0.05, 98.0, 1.984_467_454_763_4),
            (0.01, 20.0, 2.845_339_709_785_1),
            (0.05, 1e7, 1.959_964_3),
        ] {
            let value = t_critical(alpha, df);
            assert!(
                (value - expected).abs() < 1e-6,
                "t({alpha}, {df}) = {value}"
            );
        }
    }

    #[test]
    fn t_cdf_is_symmetric_and_half_at_zero() {
        assert!((t_cdf(0.0, 5.0) - 0.5).abs() < 1e-15);
        assert!((t_cdf(1.3, 7.0) + t_cdf(-1.3, 7.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pooled_t_statistic_by_hand() {
        let (mut a, mut b) = (ArmSums::default(), ArmSums::default());
        [1.0, 2.0, 3.0].iter().for_each(|y| a.add(*y));
        [4.0, 5.0, 6.0, 7.0].iter().for_each(|y| b.add(*y));
        // Means 2 and 5.5; pooled variance (2 + 5) / 5 = 1.4.
        let (t, df) = t_statistic(&a, &b).expect("defined");
        let expected = -3.5 / (1.4f64 * (1.0 / 3.0 + 1.0 / 4.0)).sqrt();
        assert!((t - expected).abs() < 1e-12, "{t}");
        assert_eq!(df, 5.0);
        assert!(t_statistic(&a, &ArmSums::default()).is_none());
    }

    #[test]
    fn normal_deviates_have_unit_variance() {
        let mut rng = simulation_stream(3, "normal");
        let mut sums = ArmSums::default();
        (0..200_000).for_each(|_| sums.add(standard_normal(&mut rng)));
        // Standard errors: mean 0.0022, variance 0.0032.
        assert!(sums.mean().abs() < 0.01, "{}", sums.mean());
        let variance = sums.deviations() / (sums.n - 1.0);
        assert!((variance - 1.0).abs() < 0.015, "{variance}");
    }
}
