//! The Weibull delay model: sampling `λ·(−ln U)^(1/k)` and the maximum-likelihood fit of
//! `k` (bisection) and `λ` from observed inter-record durations.

use core::time::Duration;

use rand_core::RngCore;

/// Longest delay a single draw may give. The default model's tail is long (one draw in about
/// 60 000 exceeds 1 s, the rare extreme reaches tens of seconds); a cap keeps a session from
/// stalling on one unlucky draw while changing the distribution below it not at all.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Fewest positive durations [`Weibull::fit`] accepts.
pub const MIN_FIT_SAMPLES: usize = 100;
/// The bisection interval of the shape parameter.
const SHAPE_RANGE: (f64, f64) = (0.01, 10.0);
/// Bisection steps (the interval shrinks by 2^70: far below f64 resolution of the result).
const BISECTION_STEPS: u32 = 70;

/// A Weibull distribution of delays in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weibull {
    /// Shape `k`.
    pub shape: f64,
    /// Scale `λ`, in milliseconds.
    pub scale_ms: f64,
}

impl Default for Weibull {
    /// The built-in statistics, measured by mtg from ok.ru.
    fn default() -> Self {
        Self::BUILT_IN
    }
}

impl Weibull {
    /// mtg's built-in statistics (measured from ok.ru): mean ≈ 6.76 ms, median ≈ 0.66 ms.
    pub const BUILT_IN: Self = Self { shape: 0.378_463_738_957_853_35, scale_ms: 1.731_770_860_154_85 };

    /// One draw in milliseconds, uncapped: `λ·(−ln U)^(1/k)` with `U` uniform in the open
    /// interval (0, 1), so neither end (an infinite or a zero `−ln U`) can occur.
    pub fn sample_ms(&self, rng: &mut (impl RngCore + ?Sized)) -> f64 {
        // 52 random bits, shifted by half a step: U ∈ [2^-53, 1 − 2^-53], both exact in f64.
        let u = ((rng.next_u64() >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64);
        self.scale_ms * (-u.ln()).powf(1.0 / self.shape)
    }

    /// One delay, capped at [`MAX_DELAY`]; a model with non-finite or negative parameters
    /// gives the cap or zero rather than a panic.
    pub fn delay(&self, rng: &mut (impl RngCore + ?Sized)) -> Duration {
        let ms = self.sample_ms(rng);
        if ms.is_nan() || ms <= 0.0 {
            return Duration::ZERO;
        }
        let cap_ms = MAX_DELAY.as_secs_f64() * 1000.0;
        Duration::from_secs_f64(ms.min(cap_ms) / 1000.0)
    }

    /// The maximum-likelihood fit of `durations_ms`.
    ///
    /// Durations that are zero, negative or not finite are left out (a zero is two records
    /// seen in one read: a gap below the measurement's resolution, and `ln 0` is undefined).
    /// `None` with fewer than [`MIN_FIT_SAMPLES`] durations left. The shape is found by 70
    /// bisection steps over [0.01, 10] on the likelihood equation
    /// `Σxᵏ·ln x / Σxᵏ − 1/k − mean(ln x) = 0`; then `λ = (Σxᵏ/n)^(1/k)`.
    pub fn fit(durations_ms: &[f64]) -> Option<Self> {
        let usable = || durations_ms.iter().copied().filter(|x| x.is_finite() && *x > 0.0);
        let n = usable().count();
        if n < MIN_FIT_SAMPLES {
            return None;
        }
        // Work on x / max ∈ (0, 1]: the equation is scale-free and xᵏ cannot overflow.
        let max = usable().fold(0.0_f64, f64::max);
        let mean_ln = usable().map(|x| (x / max).ln()).sum::<f64>() / n as f64;
        let equation = |k: f64| {
            let (mut sum, mut sum_ln) = (0.0, 0.0);
            for x in usable() {
                let y = x / max;
                let yk = y.powf(k);
                sum += yk;
                sum_ln += yk * y.ln();
            }
            // The largest sample contributes 1 to `sum`, so it is never zero.
            sum_ln / sum - 1.0 / k - mean_ln
        };
        let (mut lo, mut hi) = SHAPE_RANGE;
        for _ in 0..BISECTION_STEPS {
            let mid = (lo + hi) / 2.0;
            // The left side grows with k: a positive value means the root is below `mid`.
            if equation(mid) > 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let shape = (lo + hi) / 2.0;
        let mean_pow = usable().map(|x| (x / max).powf(shape)).sum::<f64>() / n as f64;
        let scale_ms = max * mean_pow.powf(1.0 / shape);
        (shape.is_finite() && scale_ms.is_finite() && scale_ms > 0.0).then_some(Self { shape, scale_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// An RNG that returns one fixed word.
    struct Fixed(u64);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(0);
        }
    }

    #[test]
    fn extreme_words_give_finite_positive_draws() {
        let model = Weibull::BUILT_IN;
        let smallest = model.sample_ms(&mut Fixed(0));
        let largest = model.sample_ms(&mut Fixed(u64::MAX));
        assert!(smallest.is_finite() && smallest > 1000.0, "U≈0 is the long tail: {smallest}");
        assert!(largest > 0.0 && largest < 1e-30, "U≈1 is a near-zero delay: {largest}");
        assert_eq!(model.delay(&mut Fixed(0)), MAX_DELAY);
        assert!(model.delay(&mut Fixed(u64::MAX)) < Duration::from_nanos(1));
    }

    #[test]
    fn median_draw_matches_the_closed_form() {
        // U = 1/2 + 2^-53: λ·(ln 2)^(1/k) to 1e-9.
        let model = Weibull { shape: 2.0, scale_ms: 10.0 };
        let half = 1u64 << 63;
        let want = 10.0 * core::f64::consts::LN_2.sqrt();
        assert!((model.sample_ms(&mut Fixed(half)) - want).abs() < 1e-9);
    }

    #[test]
    fn broken_parameters_do_not_panic() {
        let mut rng = SmallRng::seed_from_u64(1);
        for model in [
            Weibull { shape: 0.0, scale_ms: 1.0 },
            Weibull { shape: f64::NAN, scale_ms: 1.0 },
            Weibull { shape: 1.0, scale_ms: -1.0 },
            Weibull { shape: 1.0, scale_ms: f64::INFINITY },
        ] {
            assert!(model.delay(&mut rng) <= MAX_DELAY);
        }
    }

    #[test]
    fn built_in_draws_have_the_documented_median() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut draws: Vec<f64> = (0..20_001).map(|_| Weibull::BUILT_IN.sample_ms(&mut rng)).collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[10_000];
        // Closed form: λ·(ln 2)^(1/k) = 0.6615 ms.
        assert!((median - 0.6615).abs() < 0.05, "median {median}");
    }

    #[test]
    fn fit_needs_one_hundred_positive_durations() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut xs: Vec<f64> = (0..99).map(|_| Weibull::BUILT_IN.sample_ms(&mut rng)).collect();
        xs.extend([0.0; 50]);
        xs.extend([f64::NAN, -1.0, f64::INFINITY]);
        assert_eq!(Weibull::fit(&xs), None);
        xs.push(1.0);
        assert!(Weibull::fit(&xs).is_some());
        assert_eq!(Weibull::fit(&[]), None);
    }

    #[test]
    fn fit_of_equal_durations_is_a_steep_shape_at_that_scale() {
        let fit = Weibull::fit(&[5.0; 200]).unwrap();
        assert!(fit.shape > 9.99, "all-equal samples push k to the top: {}", fit.shape);
        assert!((fit.scale_ms - 5.0).abs() < 1e-9);
    }

    #[test]
    fn fit_recovers_the_built_in_statistics() {
        let mut rng = SmallRng::seed_from_u64(11);
        let xs: Vec<f64> = (0..50_000).map(|_| Weibull::BUILT_IN.sample_ms(&mut rng)).collect();
        let fit = Weibull::fit(&xs).unwrap();
        assert!((fit.shape / Weibull::BUILT_IN.shape - 1.0).abs() < 0.02, "{fit:?}");
        assert!((fit.scale_ms / Weibull::BUILT_IN.scale_ms - 1.0).abs() < 0.05, "{fit:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn fit_recovers_known_parameters(shape in 0.5f64..6.0, scale_ms in 0.2f64..200.0, seed: u64) {
            let model = Weibull { shape, scale_ms };
            let mut rng = SmallRng::seed_from_u64(seed);
            let xs: Vec<f64> = (0..40_000).map(|_| model.sample_ms(&mut rng)).collect();
            let fit = Weibull::fit(&xs).unwrap();
            prop_assert!((fit.shape / shape - 1.0).abs() < 0.05, "{:?} vs {:?}", fit, model);
            prop_assert!((fit.scale_ms / scale_ms - 1.0).abs() < 0.05, "{:?} vs {:?}", fit, model);
        }

        #[test]
        fn delays_never_exceed_the_cap(shape in 0.01f64..10.0, scale_ms in 0.0f64..1e6, seed: u64) {
            let model = Weibull { shape, scale_ms };
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..64 {
                prop_assert!(model.delay(&mut rng) <= MAX_DELAY);
            }
        }
    }
}
