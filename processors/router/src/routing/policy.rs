//! Which models a turn may try, in which order. The first attempt goes to a
//! candidate picked by weight; the pick hashes the user message id, so a
//! redelivered message routes the same way. The other candidates follow in
//! their configured order as fallbacks. The allowlist filters them all.
use chatstream_config::models::RoutingPolicyConfig;
use sha2::{Digest, Sha256};

/// One candidate of a turn's plan and why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCandidate {
    /// Catalog id.
    pub model: String,
    /// `primary`, `weighted` or `fallback`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no model is both a routing candidate and allowed for this tenant")]
    NoAllowedModel,
    #[error("model {0:?} is not available to this tenant")]
    NotAllowed(String),
}

/// The plan of a turn whose client asked for `model` by name: that model
/// alone (retried, never swapped for another), when the tenant may use it.
pub fn plan_requested(
    policy: &RoutingPolicyConfig,
    model: &str,
) -> Result<Vec<PlannedCandidate>, PlanError> {
    if !policy.usable_models().contains(&model) {
        return Err(PlanError::NotAllowed(model.to_owned()));
    }
    Ok(vec![PlannedCandidate {
        model: model.to_owned(),
        reason: "requested",
    }])
}

/// The order in which a turn caused by `event_id` tries the candidates.
pub fn plan(
    policy: &RoutingPolicyConfig,
    event_id: &str,
) -> Result<Vec<PlannedCandidate>, PlanError> {
    let allowed = |model: &str| {
        policy.allowed_models.is_empty() || policy.allowed_models.iter().any(|m| m == model)
    };
    let candidates: Vec<_> = policy
        .candidates
        .iter()
        .filter(|c| allowed(&c.model))
        .collect();
    let weighted: Vec<_> = candidates.iter().filter(|c| c.weight > 0).collect();
    let Some(first) = candidates.first() else {
        return Err(PlanError::NoAllowedModel);
    };
    // When the allowlist leaves only fallbacks, the first of them leads.
    let total: u64 = weighted.iter().map(|c| u64::from(c.weight)).sum();
    let mut ticket = stable_hash(event_id) % total.max(1);
    let mut primary = first.model.as_str();
    for candidate in &weighted {
        if ticket < u64::from(candidate.weight) {
            primary = &candidate.model;
            break;
        }
        ticket -= u64::from(candidate.weight);
    }
    let first_reason = if weighted.len() > 1 {
        "weighted"
    } else {
        "primary"
    };
    let mut plan = vec![PlannedCandidate {
        model: primary.to_owned(),
        reason: first_reason,
    }];
    plan.extend(
        candidates
            .iter()
            .filter(|c| c.model != primary)
            .map(|c| PlannedCandidate {
                model: c.model.clone(),
                reason: "fallback",
            }),
    );
    Ok(plan)
}

fn stable_hash(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use chatstream_config::models::RoutingCandidate;

    use super::*;

    fn policy(candidates: &[(&str, u32)]) -> RoutingPolicyConfig {
        RoutingPolicyConfig {
            candidates: candidates
                .iter()
                .map(|(model, weight)| RoutingCandidate {
                    model: (*model).into(),
                    weight: *weight,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn weights_split_first_attempts_and_the_rest_follow_in_order() {
        let policy = policy(&[("a", 3), ("b", 1), ("c", 0)]);
        let mut firsts = std::collections::HashMap::new();
        for i in 0..4000 {
            let plan = plan(&policy, &format!("event-{i}")).unwrap();
            assert_eq!(plan.len(), 3);
            assert_eq!(plan[0].reason, "weighted");
            assert!(plan[1..].iter().all(|c| c.reason == "fallback"));
            *firsts.entry(plan[0].model.clone()).or_insert(0) += 1;
        }
        assert!(!firsts.contains_key("c"), "weight 0 is fallback only");
        let share_a = f64::from(firsts["a"]) / 4000.0;
        assert!((0.70..0.80).contains(&share_a), "{share_a}");
    }

    #[test]
    fn a_requested_model_is_used_alone_when_the_tenant_may_use_it() {
        let mut policy = policy(&[("a", 1), ("b", 0)]);
        assert_eq!(
            plan_requested(&policy, "b").unwrap(),
            vec![PlannedCandidate {
                model: "b".into(),
                reason: "requested"
            }]
        );
        assert_eq!(
            plan_requested(&policy, "z"),
            Err(PlanError::NotAllowed("z".into()))
        );
        // The allowlist decides when there is one, candidate or not.
        policy.allowed_models = vec!["c".into()];
        assert!(plan_requested(&policy, "c").is_ok());
        assert!(plan_requested(&policy, "a").is_err());
    }

    #[test]
    fn the_same_event_routes_the_same_way() {
        let policy = policy(&[("a", 1), ("b", 1)]);
        assert_eq!(plan(&policy, "e1").unwrap(), plan(&policy, "e1").unwrap());
    }

    #[test]
    fn the_allowlist_filters_candidates() {
        let mut policy = policy(&[("a", 1), ("b", 0)]);
        policy.allowed_models = vec!["b".into()];
        policy.allowed_models = vec!["z".into()];
        assert_eq!(plan(&policy, "e"), Err(PlanError::NoAllowedModel));
        policy.allowed_models = vec!["b".into()];
        let plan = plan(&policy, "e").unwrap();
        assert_eq!(
            plan,
            vec![PlannedCandidate {
                model: "b".into(),
                reason: "primary"
            }]
        );
    }
}
