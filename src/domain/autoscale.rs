//! The auto-scaling rule: a pure function of the stages' loads and the capacity settings.

use super::assignment::{Capacity, StageLoad};
use super::StageArn;

#[derive(Debug, Clone, PartialEq)]
pub enum ScaleDecision {
    /// Create one more stage and make the publisher visible in it.
    ScaleUp,
    /// Remove this auto-created stage.
    ScaleDown(StageArn),
    Hold,
}

fn utilisation(total: u64, stages: usize, cap: &Capacity) -> f64 {
    if stages == 0 || cap.scale_up_threshold == 0 {
        return f64::INFINITY;
    }
    total as f64 / (stages as f64 * cap.scale_up_threshold as f64)
}

/// Whether `total` viewers on `stages` stages pass the scale-up utilisation.
fn passes(total: u64, stages: usize, cap: &Capacity) -> bool {
    utilisation(total, stages, cap) > cap.scale_up_utilisation
}

/// Decides one auto-scaling step.
///
/// - Scale up when utilisation (`viewers / (stages × scale-up threshold)`) passes
///   `scale_up_utilisation`, or no stage is below the threshold, and fewer than `max_stages` exist.
/// - Otherwise remove at most one auto-created stage that has been up for longer than its
///   warm-up and holds no more than `scale_down_threshold` viewers, provided the remaining
///   stages would not immediately call for a new one (no flapping).
pub fn decide(stages: &[StageLoad], cap: &Capacity) -> ScaleDecision {
    if stages.is_empty() {
        return ScaleDecision::Hold;
    }
    let total: u64 = stages.iter().map(|s| u64::from(s.viewers)).sum();
    let crowded = stages.iter().all(|s| s.viewers >= cap.scale_up_threshold);
    let hot = passes(total, stages.len(), cap) || crowded;
    if hot {
        return if (stages.len() as u64) < u64::from(cap.max_stages) { ScaleDecision::ScaleUp } else { ScaleDecision::Hold };
    }
    let candidate = stages
        .iter()
        .filter(|s| s.auto_scaled && !s.is_master && s.viewers <= cap.scale_down_threshold && s.age_secs > cap.warmup_secs)
        .min_by_key(|s| (s.viewers, std::cmp::Reverse(s.age_secs)));
    match candidate {
        Some(s) if !passes(total, stages.len() - 1, cap) => ScaleDecision::ScaleDown(s.arn.clone()),
        _ => ScaleDecision::Hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: &str, viewers: u32, is_master: bool, age_secs: i64) -> StageLoad {
        StageLoad {
            arn: StageArn::from_parts("us-east-1", "000000000000", id).unwrap(),
            viewers,
            is_master,
            auto_scaled: !is_master,
            age_secs,
        }
    }

    #[test]
    fn scales_up_when_utilisation_passes_eighty_percent() {
        // One stage below the threshold of 45: 36 viewers are exactly 80 %, which does not pass it.
        let cap = Capacity::default();
        assert_eq!(decide(&[stage("m", 36, true, 9999)], &cap), ScaleDecision::Hold);
        assert_eq!(decide(&[stage("m", 37, true, 9999)], &cap), ScaleDecision::ScaleUp);
    }

    #[test]
    fn does_not_exceed_max_stages() {
        let cap = Capacity { max_stages: 2, ..Capacity::default() };
        let stages = [stage("m", 50, true, 9999), stage("a", 50, false, 9999)];
        assert_eq!(decide(&stages, &cap), ScaleDecision::Hold);
    }

    #[test]
    fn removes_a_quiet_auto_stage_only_after_longer_than_the_warmup() {
        let cap = Capacity::default();
        let young = [stage("m", 10, true, 9999), stage("a", 2, false, 100)];
        assert_eq!(decide(&young, &cap), ScaleDecision::Hold);
        let exactly = [stage("m", 10, true, 9999), stage("a", 2, false, 300)];
        assert_eq!(decide(&exactly, &cap), ScaleDecision::Hold, "5 minutes is not longer than the warm-up");
        let old = [stage("m", 10, true, 9999), stage("a", 2, false, 301)];
        assert_eq!(decide(&old, &cap), ScaleDecision::ScaleDown(old[1].arn.clone()));
    }

    #[test]
    fn never_removes_the_master_or_manual_stages() {
        let cap = Capacity::default();
        let mut manual = stage("manual", 0, false, 9999);
        manual.auto_scaled = false;
        let stages = [stage("m", 0, true, 9999), manual];
        assert_eq!(decide(&stages, &cap), ScaleDecision::Hold);
    }

    #[test]
    fn does_not_flap() {
        let cap = Capacity::default();
        // 40 + 5 viewers on two stages: removing one would leave 45 on one stage (> 36) → keep it.
        let stages = [stage("m", 40, true, 9999), stage("a", 5, false, 9999)];
        assert_eq!(decide(&stages, &cap), ScaleDecision::Hold);
    }

    /// The contract's rules for the master and one auto-created stage, with the defaults
    /// (threshold 45, utilisation 0.8, scale-down at 5 viewers, 5-minute warm-up, 20 stages):
    /// - two stages hold 2 × 45 = 90 viewers below the threshold; utilisation passes 80 % of
    ///   that above 72 viewers → scale up;
    /// - else the auto stage goes when it has at most 5 viewers, has been up for longer than
    ///   300 s, and the master alone would not pass 80 % of 45 = 36 viewers with all of them;
    /// - else hold.
    fn expected(m: u32, a: u32, age: i64) -> &'static str {
        if m + a > 72 {
            "up"
        } else if a <= 5 && age > 300 && m + a <= 36 {
            "down"
        } else {
            "hold"
        }
    }

    #[test]
    fn decisions_follow_the_contract_over_a_grid() {
        let cap = Capacity::default();
        let mut seen = std::collections::HashSet::new();
        for m in 0..=50 {
            for a in 0..=50 {
                for age in [0, 299, 300, 301, 10_000] {
                    let stages = [stage("m", m, true, 99_999), stage("a", a, false, age)];
                    let got = match decide(&stages, &cap) {
                        ScaleDecision::ScaleUp => "up",
                        ScaleDecision::ScaleDown(arn) => {
                            assert_eq!(arn, stages[1].arn, "m={m} a={a} age={age}");
                            "down"
                        }
                        ScaleDecision::Hold => "hold",
                    };
                    assert_eq!(got, expected(m, a, age), "m={m} a={a} age={age}");
                    seen.insert(got);
                }
            }
        }
        assert_eq!(seen.len(), 3, "the grid reaches every decision");
    }
}
