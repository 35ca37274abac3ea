use std::time::Duration;

use plinth_control::contract::{KIND_ATTRIBUTE, OWNER_ATTRIBUTE, RESOURCE_MEMO};
use plinth_proto::v1::{Policy, Rule};
use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::audit::{self, By};
use crate::contracts::{TriggerAccessRun, ValidateRule};
use crate::handover::hand_over_when_long;
use crate::provision_namespace::{UpdateError, local_activity};

/// A policy already shown in its memo is neither published nor propagated again, so a
/// seeded policy's first task schedules nothing (the seeder runs the access run, once for
/// both policies); histories recorded before did both.
const QUIET_PATCH: &str = "policy-quiet-when-shown";

/// What a rule update answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleChange {
    /// False when the policy already was as asked (rule present, or absent).
    pub changed: bool,
    /// The policy after the update.
    pub policy: Policy,
}

/// One access policy, for its whole life: workflow id `policy/<name>`. Its rules change only
/// through the `add_rule` and `remove_rule` updates; each change publishes the policy to the
/// memo and runs the namespace's access schedule at once.
#[workflow]
#[derive(Debug)]
pub struct PolicyWorkflow {
    policy: Policy,
    /// Changes not yet published and propagated.
    pending: bool,
}

#[workflow_methods]
impl PolicyWorkflow {
    /// Starts from a seeded policy, or from the state a previous run handed over.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, policy: Policy) -> Self {
        Self {
            policy,
            pending: true,
        }
    }

    /// Publishes and propagates each change; never returns on its own.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Policy> {
        loop {
            ctx.wait_condition(|s| s.pending).await?;
            ctx.state_mut(|s| s.pending = false);
            let policy = ctx.state(|s| s.policy.clone());
            // The memo shows the policy as last published and propagated: by the seeder that
            // started this run, by the run that handed over, or by this one.
            let shown = ctx.memo().get::<Policy>(RESOURCE_MEMO).ok().flatten();
            if shown.as_ref() == Some(&policy) && ctx.patched(QUIET_PATCH) {
                continue;
            }
            ctx.upsert_search_attributes([
                KIND_ATTRIBUTE.value_set(plinth_proto::KIND_POLICY.to_owned()),
                OWNER_ATTRIBUTE.value_set(policy.owner.clone()),
            ]);
            let _ = ctx.upsert_memo([(
                RESOURCE_MEMO,
                Some(temporalio_common::MemoValue::new(policy.clone())),
            )]);
            ctx.execute_activity(
                TriggerAccessRun,
                policy.namespace,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(20)),
            )
            .await?;
            hand_over_when_long(ctx, |s| s.policy.clone()).await?;
        }
    }

    /// Adds a rule (validated by the worker, groups against its directory), as `adding.by`
    /// asks; answers once the change is in the audit trail.
    #[update]
    pub async fn add_rule(
        ctx: &mut WorkflowContext<Self>,
        adding: By<Rule>,
    ) -> Result<RuleChange, UpdateError> {
        let By { input: rule, by } = adding;
        let rule = ctx
            .execute_local_activity(ValidateRule, rule, local_activity())
            .await??;
        let shown = rule.to_string();
        let before = ctx.state(PolicyWorkflow::rules);
        let change = ctx.state_mut(|s| s.add(rule));
        // A rule the policy already held changes nothing, and is not recorded.
        if change.changed {
            record_rule(ctx, by, "policy.rule_added", "added", shown, before).await?;
        }
        Ok(change)
    }

    /// Removes a rule, as `removing.by` asks; one the policy does not hold is refused, naming
    /// it. Answers once the change is in the audit trail.
    #[update]
    pub async fn remove_rule(
        ctx: &mut WorkflowContext<Self>,
        removing: By<Rule>,
    ) -> Result<RuleChange, UpdateError> {
        let By { input: rule, by } = removing;
        let rule = rule.canonical();
        let before = ctx.state(PolicyWorkflow::rules);
        let change = ctx.state_mut(|s| s.remove(&rule))?;
        record_rule(
            ctx,
            by,
            "policy.rule_removed",
            "removed",
            rule.to_string(),
            before,
        )
        .await?;
        Ok(change)
    }

    /// Replaces the editor groups (Plinth keeps a seeded policy's editors on the namespace's
    /// owner group). Rules are untouched.
    #[update]
    pub fn set_editors(
        &mut self,
        _ctx: &mut temporalio_sdk::SyncWorkflowContext<Self>,
        editors: Vec<String>,
    ) -> Result<RuleChange, UpdateError> {
        let changed = self.policy.editors != editors;
        if changed {
            self.policy.editors = editors;
            self.pending = true;
        }
        Ok(self.answer(changed))
    }

    /// The policy.
    #[query]
    pub fn policy(&self, _ctx: &WorkflowContextView) -> Policy {
        self.policy.clone()
    }
}

/// Records a change of `rule` in the audit trail, with the rules `before` and after.
async fn record_rule(
    ctx: &mut WorkflowContext<PolicyWorkflow>,
    by: Option<String>,
    action: &str,
    outcome: &str,
    rule: String,
    before: Vec<String>,
) -> Result<(), UpdateError> {
    if !audit::records(ctx, by.as_deref()) {
        return Ok(());
    }
    let (name, namespace, after) =
        ctx.state(|s| (s.policy.name.clone(), s.policy.namespace.clone(), s.rules()));
    let actor = audit::actor(ctx, by.as_deref());
    let record = audit::new_record(ctx, actor, action, format!("policy/{name}"), outcome)
        .in_namespace(namespace)
        .change(
            Some(serde_json::json!({ "rules": before })),
            Some(serde_json::json!({ "rules": after })),
        )
        .detail(rule);
    audit::record(ctx, vec![record]).await?;
    Ok(())
}

impl PolicyWorkflow {
    /// The rules, as written in messages.
    fn rules(&self) -> Vec<String> {
        self.policy.rules.iter().map(ToString::to_string).collect()
    }

    fn add(&mut self, rule: Rule) -> RuleChange {
        let changed = !self.policy.rules.contains(&rule);
        if changed {
            self.policy.rules.push(rule);
            self.pending = true;
        }
        self.answer(changed)
    }

    fn remove(&mut self, rule: &Rule) -> Result<RuleChange, String> {
        if !self.policy.rules.contains(rule) {
            return Err(format!("policy {:?} has no rule {rule}", self.policy.name));
        }
        self.policy.rules.retain(|r| r != rule);
        self.pending = true;
        Ok(self.answer(true))
    }

    fn answer(&self, changed: bool) -> RuleChange {
        RuleChange {
            changed,
            policy: self.policy.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PolicyWorkflow {
        let [writers, _] = plinth_proto::policy::seeded_policies("ns", "admins", "owners");
        PolicyWorkflow {
            policy: writers,
            pending: false,
        }
    }

    fn group(name: &str) -> Rule {
        Rule {
            group: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn adding_twice_changes_once() {
        let mut state = policy();
        assert!(state.add(group("a")).changed);
        assert!(state.pending);
        state.pending = false;
        assert!(!state.add(group("a")).changed);
        assert!(!state.pending, "no change, nothing to propagate");
        assert_eq!(state.policy.rules, [group("a")]);
    }

    #[test]
    fn removing_an_absent_rule_names_it() {
        let mut state = policy();
        let err = state.remove(&group("nobody")).unwrap_err();
        assert!(err.contains("group:nobody"), "{err}");
        state.add(group("a"));
        assert!(state.remove(&group("a")).unwrap().policy.rules.is_empty());
    }
}
