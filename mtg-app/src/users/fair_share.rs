//! The max-min fair-share throttle of mtg-multi (reference §5.3): when all users together hold
//! more connections than the limit, the heaviest users get caps so the budget is shared fairly.

/// Caps for a snapshot of per-user connection counts under `limit`, by position in `counts`;
/// `None` means uncapped. No caps at all when the total is within the limit.
///
/// Budget = limit; repeatedly, fair = ⌊budget / remaining users⌋; every remaining user at or
/// below `fair` leaves (its connections are subtracted from the budget); when a pass removes
/// nobody, every remaining user is capped at `fair`.
pub fn fair_share(counts: &[u64], limit: u64) -> Vec<Option<u64>> {
    let total: u64 = counts.iter().sum();
    let mut caps = vec![None; counts.len()];
    if total <= limit {
        return caps;
    }
    let mut budget = limit;
    let mut remaining: Vec<usize> = (0..counts.len()).collect();
    while !remaining.is_empty() {
        let fair = budget / remaining.len() as u64;
        let before = remaining.len();
        remaining.retain(|&i| {
            if counts[i] <= fair {
                budget -= counts[i];
                false
            } else {
                true
            }
        });
        if remaining.len() == before {
            for &i in &remaining {
                caps[i] = Some(fair);
            }
            break;
        }
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_examples() {
        assert_eq!(fair_share(&[1, 1, 90, 110], 100), [None, None, Some(49), Some(49)]);
        assert_eq!(fair_share(&[100, 100], 50), [Some(25), Some(25)]);
        assert_eq!(fair_share(&[5, 200], 100), [None, Some(95)]);
        assert_eq!(fair_share(&[50, 50], 100), [None, None]);
        assert_eq!(fair_share(&[10, 20], 100), [None, None]);
    }

    #[test]
    fn ties_zero_users_and_zero_caps() {
        // The example: limit 10 with users at 1, 1, 5, 6 → fair 2 then 4: both heavy at 4.
        assert_eq!(fair_share(&[1, 1, 5, 6], 10), [None, None, Some(4), Some(4)]);
        // A user exactly at the fair share is not capped.
        assert_eq!(fair_share(&[5, 10], 10), [None, Some(5)]);
        // Zero-connection users only widen the first divisor.
        assert_eq!(fair_share(&[0, 0, 30], 10), [None, None, Some(10)]);
        // Budget smaller than the number of heavy users: caps of 0.
        assert_eq!(fair_share(&[5, 5, 5], 2), [Some(0), Some(0), Some(0)]);
    }

    proptest! {
        #[test]
        fn caps_fit_the_budget_and_spare_the_small(counts in prop::collection::vec(0u64..500, 0..20), limit in 0u64..2000) {
            let caps = fair_share(&counts, limit);
            let total: u64 = counts.iter().sum();
            if total <= limit {
                prop_assert!(caps.iter().all(Option::is_none));
            } else {
                let used: u64 = counts.iter().zip(&caps).map(|(&c, cap)| cap.unwrap_or(c)).sum();
                prop_assert!(used <= limit, "caps {:?} over {}", caps, limit);
                // Nobody at or below the final fair share is capped; every cap is below the
                // user's own count and all caps are equal.
                let capped: Vec<u64> = caps.iter().flatten().copied().collect();
                prop_assert!(!capped.is_empty());
                prop_assert!(capped.windows(2).all(|w| w[0] == w[1]));
                for (&c, cap) in counts.iter().zip(&caps) {
                    match cap {
                        Some(cap) => prop_assert!(c > *cap),
                        None => prop_assert!(c <= capped[0] || capped.is_empty()),
                    }
                }
            }
        }

        #[test]
        fn independent_of_user_order(counts in prop::collection::vec(0u64..300, 0..15), limit in 0u64..1000, seed in any::<u64>()) {
            let caps = fair_share(&counts, limit);
            let mut order: Vec<usize> = (0..counts.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let shuffled: Vec<u64> = order.iter().map(|&i| counts[i]).collect();
            let shuffled_caps = fair_share(&shuffled, limit);
            for (pos, &i) in order.iter().enumerate() {
                prop_assert_eq!(shuffled_caps[pos], caps[i]);
            }
        }
    }
}
