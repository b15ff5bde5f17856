//! Which stage a new viewer joins.

use super::StageArn;

/// A stage and how many viewers it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct StageLoad {
    pub arn: StageArn,
    pub viewers: u32,
    pub is_master: bool,
    pub auto_scaled: bool,
    /// Seconds since the stage was created.
    pub age_secs: i64,
}

/// Capacity settings that the assignment and auto-scaling rules share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub max_viewers_per_stage: u32,
    pub scale_up_threshold: u32,
    pub scale_down_threshold: u32,
    pub max_stages: u32,
    pub warmup_secs: i64,
    /// Scale up when `viewers / (stages * scale_up_threshold)` reaches this.
    pub scale_up_utilisation: f64,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_viewers_per_stage: 50,
            scale_up_threshold: 45,
            scale_down_threshold: 5,
            max_stages: 20,
            warmup_secs: 300,
            scale_up_utilisation: 0.8,
        }
    }
}

/// Picks the stage for a new viewer: the least-loaded stage below the scale-up threshold
/// (the master stage wins ties), else the master stage while it has room, else the
/// least-loaded other stage that still has room. `None` means every stage is at capacity.
pub fn choose_stage<'a>(stages: &'a [StageLoad], cap: &Capacity) -> Option<&'a StageArn> {
    let least_loaded =
        |limit: u32| stages.iter().filter(|s| s.viewers < limit).min_by_key(|s| (s.viewers, !s.is_master)).map(|s| &s.arn);
    let master_with_room = || stages.iter().find(|s| s.is_master && s.viewers < cap.max_viewers_per_stage).map(|s| &s.arn);
    least_loaded(cap.scale_up_threshold.min(cap.max_viewers_per_stage))
        .or_else(master_with_room)
        .or_else(|| least_loaded(cap.max_viewers_per_stage))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn stage(id: &str, viewers: u32, is_master: bool) -> StageLoad {
        StageLoad {
            arn: StageArn::from_parts("us-east-1", "000000000000", id).unwrap(),
            viewers,
            is_master,
            auto_scaled: !is_master,
            age_secs: 0,
        }
    }

    #[test]
    fn empty_master_takes_the_first_viewer() {
        let stages = [stage("master", 0, true)];
        assert_eq!(choose_stage(&stages, &Capacity::default()), Some(&stages[0].arn));
    }

    #[test]
    fn least_loaded_below_threshold_wins() {
        let stages = [stage("master", 30, true), stage("a", 10, false), stage("b", 20, false)];
        assert_eq!(choose_stage(&stages, &Capacity::default()).unwrap().stage_id(), "a");
    }

    #[test]
    fn ties_go_to_the_master() {
        let stages = [stage("a", 10, false), stage("master", 10, true)];
        assert_eq!(choose_stage(&stages, &Capacity::default()).unwrap().stage_id(), "master");
    }

    #[test]
    fn above_threshold_the_master_takes_the_viewer_then_another_stage_with_room() {
        // "least-loaded stage below the threshold (45), else the master stage"
        let cap = Capacity::default();
        let stages = [stage("master", 47, true), stage("a", 46, false)];
        assert_eq!(choose_stage(&stages, &cap).unwrap().stage_id(), "master");
        let stages = [stage("a", 45, false), stage("master", 49, true), stage("b", 46, false)];
        assert_eq!(choose_stage(&stages, &cap).unwrap().stage_id(), "master");
        // STAGE_FULL only when "no other stage can take the viewer": a full master passes it on
        let stages = [stage("master", 50, true), stage("a", 48, false), stage("b", 47, false)];
        assert_eq!(choose_stage(&stages, &cap).unwrap().stage_id(), "b");
        let full = [stage("master", 50, true), stage("a", 50, false)];
        assert_eq!(choose_stage(&full, &cap), None);
        assert_eq!(choose_stage(&[], &cap), None);
    }

    #[test]
    fn never_assigns_to_a_full_stage() {
        let cap = Capacity::default();
        for a in 0..=50 {
            for b in 0..=50 {
                let stages = [stage("master", a, true), stage("x", b, false)];
                if let Some(arn) = choose_stage(&stages, &cap) {
                    let chosen = stages.iter().find(|s| &s.arn == arn).unwrap();
                    assert!(chosen.viewers < cap.max_viewers_per_stage, "a={a} b={b}");
                    // never picks a stage over the threshold while one under it exists
                    if stages.iter().any(|s| s.viewers < cap.scale_up_threshold) {
                        assert!(chosen.viewers < cap.scale_up_threshold, "a={a} b={b}");
                    }
                } else {
                    assert!(a >= 50 && b >= 50);
                }
            }
        }
    }
}
