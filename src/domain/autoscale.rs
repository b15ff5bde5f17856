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

/// Decides one auto-scaling step.
///
/// - Scale up when utilisation (`viewers / (stages × scale-up threshold)`) reaches
///   `scale_up_utilisation`, or no stage is below the threshold, and fewer than `max_stages` exist.
/// - Otherwise remove at most one auto-created stage that is past its warm-up and holds no more
///   than `scale_down_threshold` viewers, provided the remaining stages would not immediately
///   call for a new one (no flapping).
pub fn decide(stages: &[StageLoad], cap: &Capacity) -> ScaleDecision {
    if stages.is_empty() {
        return ScaleDecision::Hold;
    }
    let total: u64 = stages.iter().map(|s| u64::from(s.viewers)).sum();
    let crowded = stages.iter().all(|s| s.viewers >= cap.scale_up_threshold);
    let hot = utilisation(total, stages.len(), cap) >= cap.scale_up_utilisation || crowded;
    if hot {
        return if (stages.len() as u64) < u64::from(cap.max_stages) {
            ScaleDecision::ScaleUp
        } else {
            ScaleDecision::Hold
        };
    }
    let candidate = stages
        .iter()
        .filter(|s| {
            s.auto_scaled && !s.is_master && s.viewers <= cap.scale_down_threshold && s.age_secs >= cap.warmup_secs
        })
        .min_by_key(|s| (s.viewers, std::cmp::Reverse(s.age_secs)));
    match candidate {
        Some(s) if utilisation(total, stages.len() - 1, cap) < cap.scale_up_utilisation => {
            ScaleDecision::ScaleDown(s.arn.clone())
        }
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
    fn scales_up_at_eighty_percent_of_the_threshold() {
        let cap = Capacity::default(); // 45 × 0.8 = 36
        assert_eq!(decide(&[stage("m", 35, true, 9999)], &cap), ScaleDecision::Hold);
        assert_eq!(decide(&[stage("m", 36, true, 9999)], &cap), ScaleDecision::ScaleUp);
    }

    #[test]
    fn does_not_exceed_max_stages() {
        let cap = Capacity { max_stages: 2, ..Capacity::default() };
        let stages = [stage("m", 50, true, 9999), stage("a", 50, false, 9999)];
        assert_eq!(decide(&stages, &cap), ScaleDecision::Hold);
    }

    #[test]
    fn removes_a_quiet_auto_stage_after_warmup_only() {
        let cap = Capacity::default();
        let young = [stage("m", 10, true, 9999), stage("a", 2, false, 100)];
        assert_eq!(decide(&young, &cap), ScaleDecision::Hold);
        let old = [stage("m", 10, true, 9999), stage("a", 2, false, 300)];
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
        // 40 + 5 viewers on two stages: removing one would leave 45 on one stage (≥ 36) → keep it.
        let stages = [stage("m", 40, true, 9999), stage("a", 5, false, 9999)];
        assert_eq!(decide(&stages, &cap), ScaleDecision::Hold);
    }

    #[test]
    fn decisions_are_consistent_over_a_grid() {
        let cap = Capacity::default();
        for m in (0..=50).step_by(5) {
            for a in 0..=50 {
                for age in [0, 299, 300, 10_000] {
                    let stages = [stage("m", m, true, 99_999), stage("a", a, false, age)];
                    match decide(&stages, &cap) {
                        ScaleDecision::ScaleUp => assert!(u64::from(m + a) >= 72 || (m >= 45 && a >= 45)),
                        ScaleDecision::ScaleDown(arn) => {
                            assert_eq!(arn, stages[1].arn);
                            assert!(a <= 5 && age >= 300);
                            // the survivor must not be hot immediately
                            assert!(decide(&stages[..1], &cap) != ScaleDecision::ScaleUp || m + a < 36);
                            assert!(m + a < 36);
                        }
                        ScaleDecision::Hold => {}
                    }
                }
            }
        }
    }
}
