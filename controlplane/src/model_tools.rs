//! Bulk changes to models, each one write transaction (one configuration
//! version): importing a provider's upstream models as models
//! (`ImportModels`, `llmgw model import`) and renaming a target across
//! every model that uses it (`RetargetModels`, `llmgw model retarget`).
//! Both plan first, so a dry run shows exactly what the write would do;
//! the admin service rolls the transaction back on a dry run or when there
//! is nothing to do.

use std::collections::BTreeSet;

use llmgw_core::table::ModelType;
use sqlx::AnyConnection;

use crate::store::{ModelSpec, Result, Store, StoreError, TargetSpec};
use crate::upstream_models::UpstreamModel;

/// What an import does with one upstream model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub upstream_model: String,
    /// "create", "exists" or "invalid".
    pub action: &'static str,
    pub reason: String,
}

/// Whether `text` matches `pattern`: `*` any run of characters, `?` one;
/// an empty pattern matches everything.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point (the last `*`).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The import of the upstream models matching `pattern`, each named
/// `prefix` + its id, against the model names that exist.
pub fn import_plan(
    listed: &[UpstreamModel],
    existing: &BTreeSet<String>,
    pattern: &str,
    prefix: &str,
) -> Vec<Imported> {
    let mut out: Vec<Imported> = listed
        .iter()
        .filter(|m| glob_match(pattern, &m.id))
        .map(|m| {
            let name = format!("{prefix}{}", m.id);
            let (action, reason) = if existing.contains(&name) {
                ("exists", format!("model '{name}' already exists"))
            } else if let Err(e) = llmgw_core::validate::name("model", &name) {
                ("invalid", e.to_string())
            } else {
                ("create", String::new())
            };
            Imported {
                name,
                upstream_model: m.id.clone(),
                action,
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Creates the models `plan` says to create, each with one target
/// (`provider`, its upstream model) and the defaults `llmgw model add`
/// gives.
pub async fn import(
    store: &Store,
    tx: &mut AnyConnection,
    provider: &str,
    model_type: ModelType,
    plan: &[Imported],
) -> Result<()> {
    for m in plan.iter().filter(|m| m.action == "create") {
        let spec = ModelSpec {
            name: m.name.clone(),
            strategy: Default::default(),
            max_attempts: 0,
            retry_delay_ms: None,
            prices: Default::default(),
            enabled: true,
            targets: vec![TargetSpec {
                provider: provider.to_string(),
                upstream_model: m.upstream_model.clone(),
                priority: 0,
                weight: 1,
                rules: String::new(),
                enabled: true,
                prices: None,
                default_params: Default::default(),
            }],
            default_max_tokens: None,
            translation: Default::default(),
            model_type,
            limits: None,
        };
        store.insert_model(tx, &spec).await?;
    }
    Ok(())
}

/// A target: a provider and an upstream model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub provider: String,
    pub upstream_model: String,
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.upstream_model)
    }
}

/// One target renamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retargeted {
    pub model: String,
    pub priority: i32,
    pub from: TargetRef,
    pub to: TargetRef,
}

/// Renames every target `from` to `to` in the stored models, and returns
/// the changes, by model then priority (none when no model uses `from`).
/// Both providers must exist; a broken model that uses `from` is refused,
/// since writing it back would store defaults for what could not be read.
pub async fn retarget(
    store: &Store,
    tx: &mut AnyConnection,
    from: &TargetRef,
    to: &TargetRef,
) -> Result<Vec<Retargeted>> {
    for (side, t) in [("--from", from), ("--to", to)] {
        if t.upstream_model.trim().is_empty() {
            return Err(StoreError::Invalid(format!(
                "{side} needs PROVIDER:UPSTREAM_MODEL, got '{t}'"
            )));
        }
        match store.provider(tx, &t.provider).await {
            Err(StoreError::NotFound(_)) => {
                return Err(StoreError::NotFound(format!(
                    "{side}: provider '{}' not found",
                    t.provider
                )))
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    let mut changes = Vec::new();
    if from == to {
        return Ok(changes);
    }
    for row in store.models(tx).await? {
        let uses =
            |t: &TargetSpec| t.provider == from.provider && t.upstream_model == from.upstream_model;
        if !row.spec.targets.iter().any(uses) {
            continue;
        }
        if !row.broken.is_empty() {
            let what: Vec<String> = row.broken.iter().map(ToString::to_string).collect();
            return Err(StoreError::InUse(format!(
                "model '{}' uses {from} but is broken ({}); fix it with `llmgw model update` first",
                row.spec.name,
                what.join("; ")
            )));
        }
        let mut spec = row.spec;
        let before = spec.targets.clone();
        for t in spec.targets.iter_mut().filter(|t| uses(t)) {
            t.provider.clone_from(&to.provider);
            t.upstream_model.clone_from(&to.upstream_model);
            changes.push(Retargeted {
                model: spec.name.clone(),
                priority: t.priority,
                from: from.clone(),
                to: to.clone(),
            });
        }
        store.update_model(tx, &spec).await?;
        // Scheduled target prices follow the renamed targets.
        store
            .rename_scheduled_targets(tx, &spec.name, &before, &spec.targets)
            .await?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_match("", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("gpt-4*", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4*", "gpt-3.5"));
        assert!(glob_match("*-mini", "gpt-4o-mini"));
        assert!(glob_match("claude-?-*", "claude-3-haiku"));
        assert!(!glob_match("claude-?-*", "claude-35-haiku"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYYb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn a_plan_creates_skips_existing_and_refuses_invalid_names() {
        let listed: Vec<UpstreamModel> = ["m-b", "m-a", "org/m-c", "other"]
            .iter()
            .map(|id| UpstreamModel {
                id: (*id).into(),
                display_name: String::new(),
                created_unix: None,
            })
            .collect();
        let existing = BTreeSet::from(["up-m-b".to_string()]);
        let plan = import_plan(&listed, &existing, "*m-*", "up-");
        let got: Vec<(&str, &str, &str)> = plan
            .iter()
            .map(|m| (m.name.as_str(), m.upstream_model.as_str(), m.action))
            .collect();
        assert_eq!(
            got,
            [
                ("up-m-a", "m-a", "create"),
                ("up-m-b", "m-b", "exists"),
                ("up-org/m-c", "org/m-c", "invalid"),
            ]
        );
        assert!(plan[2].reason.contains("contains '/'"), "{:?}", plan[2]);
    }
}
