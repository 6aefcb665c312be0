//! `llmgw model ...`

use anyhow::{bail, Result};
use llmgw_proto::v1::{
    CreateModelRequest, DeleteModelRequest, GetModelRequest, ListModelsRequest, Model, ModelTarget,
    Prices, Targets, UpdateModelRequest,
};

use crate::args::{GlobalOpts, ModelAddArgs, ModelCmd, ModelUpdateArgs};
use crate::client::Client;
use crate::commands::limits::{limits_pb, reset_spend, summary};
use crate::output::{broken_detail, status, yes_no, Out, Table};

pub async fn run(cmd: ModelCmd, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    match cmd {
        ModelCmd::Add(a) => {
            let req = create_request(a)?;
            let c = Client::connect(g).await?;
            let m = c
                .api()
                .create_model(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &m)
        }
        ModelCmd::List => {
            let c = Client::connect(g).await?;
            let r = c
                .api()
                .list_models(ListModelsRequest {})
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            list(out, &r.models)
        }
        ModelCmd::Get(n) => {
            let c = Client::connect(g).await?;
            let m = c
                .api()
                .get_model(GetModelRequest { name: n.name })
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &m)
        }
        ModelCmd::Update(a) => {
            let (mut req, retune) = update_request(a)?;
            let c = Client::connect(g).await?;
            if let Some(retune) = retune {
                // Weights or target defaults without targets: change the
                // current targets.
                let current = c
                    .api()
                    .get_model(GetModelRequest {
                        name: req.name.clone(),
                    })
                    .await
                    .map_err(|s| c.fail(s))?
                    .into_inner();
                req.targets = Some(Targets {
                    items: retuned(current.targets, &retune)?,
                });
            }
            let m = c
                .api()
                .update_model(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &m)
        }
        ModelCmd::Delete(n) => {
            let c = Client::connect(g).await?;
            c.api()
                .delete_model(DeleteModelRequest {
                    name: n.name.clone(),
                })
                .await
                .map_err(|s| c.fail(s))?;
            super::deleted(out, "model", &n.name)
        }
        ModelCmd::ResetSpend(n) => reset_spend("model", n.name, g, out).await,
        ModelCmd::Test(a) => super::model_tools::test(a, g, out).await,
        ModelCmd::Import(a) => super::model_tools::import(a, g, out).await,
        ModelCmd::Retarget(a) => super::model_tools::retarget(a, g, out).await,
        ModelCmd::Prices(a) => super::prices::run(a, g, out).await,
    }
}

/// `PROVIDER[:UPSTREAM_MODEL]` as (provider, upstream model). The upstream
/// model is everything after the first ':' (it may hold ':' and '/'), and
/// the model's own name without one.
pub fn parse_target(spec: &str, model: &str) -> Result<(String, String)> {
    let (provider, upstream) = match spec.split_once(':') {
        Some((p, u)) => (p.trim(), u.trim()),
        None => (spec.trim(), model),
    };
    if provider.is_empty() {
        bail!("target `{spec}` names no provider; use PROVIDER[:UPSTREAM_MODEL]");
    }
    if upstream.is_empty() {
        bail!("target `{spec}` has an empty upstream model after ':'");
    }
    Ok((provider.to_string(), upstream.to_string()))
}

/// Targets in the order given: target i gets priority i, and weight i of
/// `weights` (1 when no weights are given; 0 drains the target).
pub fn build_targets(
    model: &str,
    specs: &[String],
    weights: Option<&[u32]>,
) -> Result<Vec<ModelTarget>> {
    if let Some(w) = weights {
        check_weight_count(w.len(), specs.len())?;
    }
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (provider, upstream_model) = parse_target(spec, model)?;
            Ok(ModelTarget {
                provider,
                upstream_model,
                priority: i32::try_from(i)?,
                weight: Some(weights.map_or(1, |w| w[i])),
                rules: String::new(),
                enabled: true,
                prices: None,
                default_params: Default::default(),
            })
        })
        .collect()
}

fn check_weight_count(weights: usize, targets: usize) -> Result<()> {
    if weights != targets {
        bail!(
            "--weights gives {weights} weight{} but there {} {targets} target{}; give one weight per target",
            plural(weights),
            if targets == 1 { "is" } else { "are" },
            plural(targets)
        );
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The current targets, in priority order, with new weights (when given)
/// and the target defaults and prices given.
fn retuned(mut targets: Vec<ModelTarget>, r: &Retune) -> Result<Vec<ModelTarget>> {
    targets.sort_by_key(|t| t.priority);
    if let Some(weights) = r.weights.as_deref() {
        check_weight_count(weights.len(), targets.len())?;
        for (t, w) in targets.iter_mut().zip(weights) {
            t.weight = Some(*w);
        }
    }
    super::default_params::apply_to_targets(&mut targets, &r.params)?;
    r.prices.apply_to_targets(&mut targets)?;
    Ok(targets)
}

fn create_request(a: ModelAddArgs) -> Result<CreateModelRequest> {
    let o = a.common;
    let mut targets = build_targets(&a.name, &a.targets, o.weights.as_deref())?;
    super::default_params::apply_to_targets(&mut targets, &o.target_default_params)?;
    o.target_prices.apply_to_targets(&mut targets)?;
    Ok(CreateModelRequest {
        limits: limits_pb(&a.limits),
        strategy: o
            .strategy
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        max_attempts: o.max_attempts.unwrap_or(0),
        retry_delay_ms: o.retry_delay_ms,
        prices: o.prices.prices()?,
        enabled: Some(!a.disabled),
        targets,
        name: a.name,
        default_max_tokens: o.default_max_tokens,
        translation: o
            .translation
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        r#type: o
            .model_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
    })
}

/// What to change on the current targets when no targets are given.
#[derive(Debug, Default)]
struct Retune {
    weights: Option<Vec<u32>>,
    /// `--target-default-param` arguments.
    params: Vec<String>,
    /// The `--target-price*` flags.
    prices: super::TargetPriceArgs,
}

/// The request, and the weights and target defaults to put on the current
/// targets when they come without targets.
fn update_request(a: ModelUpdateArgs) -> Result<(UpdateModelRequest, Option<Retune>)> {
    let ch = a.changes;
    let (targets, retune) = if !ch.targets.is_empty() {
        let mut items = build_targets(&a.name, &ch.targets, ch.weights.as_deref())?;
        super::default_params::apply_to_targets(&mut items, &ch.target_default_params)?;
        ch.target_prices.apply_to_targets(&mut items)?;
        (Some(Targets { items }), None)
    } else if ch.weights.is_some() || !ch.target_default_params.is_empty() || ch.target_prices.any()
    {
        (
            None,
            Some(Retune {
                weights: ch.weights,
                params: ch.target_default_params,
                prices: ch.target_prices,
            }),
        )
    } else {
        (None, None)
    };
    let enabled = match (ch.enable, ch.disable) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let req = UpdateModelRequest {
        limits: limits_pb(&a.limits),
        name: a.name,
        strategy: ch.strategy.map(|s| s.as_str().to_string()),
        max_attempts: ch.max_attempts,
        retry_delay_ms: ch.retry_delay_ms,
        clear_retry_delay: ch.clear_retry_delay,
        prices: ch.prices.prices()?,
        prices_from: ch.prices_from.unwrap_or_default(),
        cancel_scheduled_prices: ch.cancel_scheduled_prices,
        enabled,
        targets,
        default_max_tokens: ch.default_max_tokens,
        clear_default_max_tokens: ch.clear_default_max_tokens,
        translation: ch.translation.map(|t| t.as_str().to_string()),
        r#type: ch.model_type.map(|t| t.as_str().to_string()),
    };
    Ok((req, retune))
}

/// Prices on one line (`prices::text`); empty for none.
fn fmt_prices(p: Option<&Prices>) -> String {
    p.map(super::prices::text).unwrap_or_default()
}

/// The translation mode as shown; an empty one (an older control plane)
/// is the default.
fn translation(m: &Model) -> &str {
    if m.translation.is_empty() {
        "strict"
    } else {
        &m.translation
    }
}

/// The model's type as shown; an empty one (an older control plane) is
/// the default.
fn model_type(m: &Model) -> &str {
    if m.r#type.is_empty() {
        "chat"
    } else {
        &m.r#type
    }
}

fn max_tokens(m: &Model) -> String {
    m.default_max_tokens
        .map_or_else(|| "default".to_string(), |n| n.to_string())
}

fn by_priority(m: &Model) -> Vec<&ModelTarget> {
    let mut t: Vec<&ModelTarget> = m.targets.iter().collect();
    t.sort_by_key(|t| t.priority);
    t
}

fn list(out: &mut Out<'_>, models: &[Model]) -> Result<()> {
    if out.is_json() {
        return out.json(models);
    }
    let mut t = Table::new(&[
        "NAME",
        "TYPE",
        "STRATEGY",
        "ENABLED",
        "TRANSLATION",
        "MAX TOKENS",
        "PRICES",
        "TARGETS",
        "LIMITS",
        "STATUS",
    ]);
    for m in models {
        let targets: Vec<String> = by_priority(m)
            .into_iter()
            .map(|t| {
                let off = if t.enabled { "" } else { " (disabled)" };
                format!("{}:{}{off}", t.provider, t.upstream_model)
            })
            .collect();
        t.row([
            m.name.clone(),
            model_type(m).to_string(),
            m.strategy.clone(),
            yes_no(m.enabled).to_string(),
            translation(m).to_string(),
            max_tokens(m),
            fmt_prices(m.prices.as_ref()),
            targets.join(", "),
            summary(m.limits.as_ref()),
            status(&m.broken),
        ]);
    }
    out.table(&t)
}

fn show(out: &mut Out<'_>, m: &Model) -> Result<()> {
    if out.is_json() {
        return out.json(m);
    }
    let mut t = Table::plain();
    t.row(["name".to_string(), m.name.clone()]);
    t.row(["type".to_string(), model_type(m).to_string()]);
    t.row(["strategy".to_string(), m.strategy.clone()]);
    t.row([
        "max_attempts".to_string(),
        match m.max_attempts {
            0 => "default".to_string(),
            n => n.to_string(),
        },
    ]);
    t.row([
        "retry_delay_ms".to_string(),
        m.retry_delay_ms
            .map_or_else(|| "default".to_string(), |d| d.to_string()),
    ]);
    t.row(["default_max_tokens".to_string(), max_tokens(m)]);
    t.row(["translation".to_string(), translation(m).to_string()]);
    t.row(["prices".to_string(), fmt_prices(m.prices.as_ref())]);
    t.row(["enabled".to_string(), yes_no(m.enabled).to_string()]);
    t.row(["limits".to_string(), summary(m.limits.as_ref())]);
    t.row(["created_at".to_string(), m.created_at.clone()]);
    t.row(["updated_at".to_string(), m.updated_at.clone()]);
    if !m.broken.is_empty() {
        t.row(["broken".to_string(), broken_detail(&m.broken)]);
    }
    out.table(&t)?;
    out.line("")?;
    let mut t = Table::new(&[
        "PRIORITY",
        "PROVIDER",
        "UPSTREAM MODEL",
        "WEIGHT",
        "ENABLED",
        "PRICES",
        "DEFAULTS",
        "RULES",
    ]);
    for target in by_priority(m) {
        t.row([
            target.priority.to_string(),
            target.provider.clone(),
            target.upstream_model.clone(),
            match target.weight {
                Some(0) => "0 (drained)".to_string(),
                w => w.unwrap_or(1).to_string(),
            },
            yes_no(target.enabled).to_string(),
            fmt_prices(target.prices.as_ref()),
            super::default_params::text(&target.default_params),
            target.rules.clone(),
        ]);
    }
    out.table(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(p: &str, u: &str) -> (String, String) {
        (p.to_string(), u.to_string())
    }

    #[test]
    fn target_spec_parsing() {
        // Without ':' the upstream model is the model's name.
        assert_eq!(
            parse_target("openai", "gpt-4o").unwrap(),
            pair("openai", "gpt-4o")
        );
        assert_eq!(
            parse_target("gpt-4o", "gpt-4o").unwrap(),
            pair("gpt-4o", "gpt-4o")
        );
        assert_eq!(
            parse_target("openai:gpt-4o", "chat").unwrap(),
            pair("openai", "gpt-4o")
        );
        // Everything after the first ':' is the upstream model.
        assert_eq!(
            parse_target("or:meta/llama:70b", "llama").unwrap(),
            pair("or", "meta/llama:70b")
        );
        assert!(parse_target(":gpt-4o", "m").is_err());
        assert!(parse_target("openai:", "m").is_err());
        assert!(parse_target("", "m").is_err());
    }

    #[test]
    fn targets_get_priorities_and_weights() {
        let specs = vec!["openai:gpt-4o".to_string(), "azure".to_string()];
        let t = build_targets("gpt-4o", &specs, None).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].priority, t[0].weight), (0, Some(1)));
        assert_eq!((t[1].priority, t[1].weight), (1, Some(1)));
        assert_eq!(t[1].provider, "azure");
        assert_eq!(t[1].upstream_model, "gpt-4o");
        assert!(t.iter().all(|t| t.enabled && t.rules.is_empty()));
        let t = build_targets("gpt-4o", &specs, Some(&[3, 7])).unwrap();
        assert_eq!((t[0].weight, t[1].weight), (Some(3), Some(7)));
    }

    #[test]
    fn weights_count_mismatch() {
        let specs = vec!["a".to_string(), "b".to_string()];
        let err = build_targets("m", &specs, Some(&[1])).unwrap_err();
        assert!(
            err.to_string()
                .contains("--weights gives 1 weight but there are 2 targets"),
            "{err}"
        );
        assert!(build_targets("m", &specs, Some(&[1, 2, 3])).is_err());
        let current = build_targets("m", &specs, None).unwrap();
        let weights = |w: &[u32]| Retune {
            weights: Some(w.to_vec()),
            ..Retune::default()
        };
        assert!(retuned(current.clone(), &weights(&[5])).is_err());
        let w = retuned(current.clone(), &weights(&[5, 6])).unwrap();
        assert_eq!((w[0].weight, w[1].weight), (Some(5), Some(6)));
        let priced = retuned(
            current.clone(),
            &Retune {
                prices: super::super::TargetPriceArgs {
                    tokens: vec!["2:1,3".to_string()],
                    ..Default::default()
                },
                ..Retune::default()
            },
        )
        .unwrap();
        assert_eq!(priced[0].prices, None);
        let own = priced[1].prices.as_ref().and_then(|p| p.sheet.as_ref());
        assert_eq!(own.unwrap().output_per_mtok, "3");
        let d = retuned(
            current,
            &Retune {
                params: vec!["2:temperature=0.2".to_string()],
                ..Retune::default()
            },
        )
        .unwrap();
        assert_eq!((d[0].weight, d[1].weight), (Some(1), Some(1)));
        assert!(d[0].default_params.is_empty());
        assert_eq!(d[1].default_params["temperature"], "0.2");
    }

    #[test]
    fn price_flags_become_the_requests_prices_and_a_schedule() {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "update",
            "m",
            "--price-input",
            "3",
            "--price-output",
            "15",
            "--price-tier",
            "200000:6,22.5",
            "--prices-from",
            "2030-01-01T00:00:00Z",
        ])
        .unwrap();
        let Command::Model(ModelCmd::Update(u)) = cli.command else {
            panic!("wrong command");
        };
        let (r, _) = update_request(u).unwrap();
        assert_eq!(r.prices_from, "2030-01-01T00:00:00Z");
        assert_eq!(fmt_prices(r.prices.as_ref()), "3/15, above 200000: 6/22.5");
        assert_eq!(fmt_prices(None), "");
    }

    #[test]
    fn requests_carry_translation_settings() {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "add",
            "m",
            "--target",
            "a",
            "--default-max-tokens",
            "4096",
            "--translation",
            "lenient",
            "--type",
            "embedding",
        ])
        .unwrap();
        let Command::Model(ModelCmd::Add(a)) = cli.command else {
            panic!("wrong command");
        };
        let r = create_request(a).unwrap();
        assert_eq!(r.default_max_tokens, Some(4096));
        assert_eq!(r.translation, "lenient");
        assert_eq!(r.r#type, "embedding");
        let cli = Cli::try_parse_from(["llmgw", "model", "add", "m", "--target", "a"]).unwrap();
        let Command::Model(ModelCmd::Add(a)) = cli.command else {
            panic!("wrong command");
        };
        let r = create_request(a).unwrap();
        assert_eq!(r.default_max_tokens, None);
        // Empty: the control plane's defaults (strict, chat).
        assert_eq!(r.translation, "");
        assert_eq!(r.r#type, "");

        let cli = Cli::try_parse_from([
            "llmgw",
            "model",
            "update",
            "m",
            "--clear-default-max-tokens",
            "--translation",
            "strict",
            "--type",
            "chat",
        ])
        .unwrap();
        let Command::Model(ModelCmd::Update(u)) = cli.command else {
            panic!("wrong command");
        };
        let (r, reweigh) = update_request(u).unwrap();
        assert!(reweigh.is_none());
        assert!(r.clear_default_max_tokens);
        assert_eq!(r.default_max_tokens, None);
        assert_eq!(r.translation.as_deref(), Some("strict"));
        assert_eq!(r.r#type.as_deref(), Some("chat"));
        assert!(r.prices.is_none() && r.targets.is_none());
    }
}
