//! `llmgw model test|import|retarget`: the model tools (#17) over the
//! `TestModel`, `ImportModels` and `RetargetModels` admin calls, and how
//! their answers are shown.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use llmgw_proto::v1::{
    GetModelRequest, ImportModelsRequest, ImportModelsResponse, RetargetModelsRequest,
    RetargetModelsResponse, TestModelRequest, TestModelResponse,
};

use crate::args::{GlobalOpts, ModelImportArgs, ModelRetargetArgs, ModelTestArgs};
use crate::client::{Client, CALL_TIMEOUT};
use crate::output::{Out, Table};

pub async fn test(a: ModelTestArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    // The control plane waits for each target in turn: give the call the
    // time every target may take.
    let targets = {
        let c = Client::connect(g).await?;
        c.api()
            .get_model(GetModelRequest {
                name: a.name.clone(),
            })
            .await
            .map_err(|s| c.fail(s))?
            .into_inner()
            .targets
            .len()
    };
    let c = Client::connect_with_timeout(g, test_call_timeout(targets, a.timeout)).await?;
    let r = c
        .api()
        .test_model(TestModelRequest {
            name: a.name,
            timeout_ms: a.timeout,
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    test_report(out, &r)
}

pub async fn import(a: ModelImportArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .import_models(ImportModelsRequest {
            provider: a.provider.clone(),
            r#match: a.pattern.clone().unwrap_or_default(),
            prefix: a.prefix,
            dry_run: a.dry_run,
            r#type: a
                .model_type
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if r.truncated {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: the upstream of '{}' has more models than the control plane reads (it follows 50 pages); models past the cut are not imported",
            a.provider
        );
    }
    import_report(out, &r, &a.provider, a.pattern.as_deref(), a.dry_run)
}

pub async fn retarget(a: ModelRetargetArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let (from_provider, from_upstream_model) = target_arg("--from", &a.from)?;
    let (to_provider, to_upstream_model) = target_arg("--to", &a.to)?;
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .retarget_models(RetargetModelsRequest {
            from_provider,
            from_upstream_model,
            to_provider,
            to_upstream_model,
            dry_run: a.dry_run,
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    retarget_report(out, &r, &a.from, a.dry_run)
}

/// The whole test's call timeout: every target's, and a margin; never
/// less than any other call's.
fn test_call_timeout(targets: usize, per_target_ms: u32) -> Duration {
    let all = Duration::from_millis(u64::from(per_target_ms))
        .saturating_mul(u32::try_from(targets).unwrap_or(u32::MAX));
    CALL_TIMEOUT.max(all.saturating_add(Duration::from_secs(30)))
}

/// `PROVIDER:UPSTREAM_MODEL`, split at the first ':' (an upstream model
/// may hold ':' and '/').
pub fn target_arg(flag: &str, spec: &str) -> Result<(String, String)> {
    match spec.split_once(':') {
        Some((p, u)) if !p.trim().is_empty() && !u.trim().is_empty() => {
            Ok((p.trim().to_string(), u.trim().to_string()))
        }
        _ => bail!("{flag} `{spec}`: give PROVIDER:UPSTREAM_MODEL"),
    }
}

/// Each target's result; an error (exit status 1) when any failed, after
/// the results are out.
fn test_report(out: &mut Out<'_>, r: &TestModelResponse) -> Result<()> {
    if out.is_json() {
        out.json(r)?;
    } else {
        let mut t = Table::new(&["TARGET", "PROTOCOL", "STATUS", "LATENCY", "RESULT"]);
        for x in &r.targets {
            let status = match x.status {
                0 => "-".to_string(),
                s => s.to_string(),
            };
            let result = if x.ok {
                format!("ok: {:?}", x.excerpt)
            } else {
                format!("error: {}", x.error)
            };
            t.row([
                format!("{}:{}", x.provider, x.upstream_model),
                x.protocol.clone(),
                status,
                format!("{} ms", x.latency_ms),
                result,
            ]);
        }
        out.table(&t)?;
    }
    let failed = r.targets.iter().filter(|x| !x.ok).count();
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {} target{} of model '{}' failed",
            r.targets.len(),
            plural(r.targets.len()),
            r.model
        ));
    }
    Ok(())
}

fn import_report(
    out: &mut Out<'_>,
    r: &ImportModelsResponse,
    provider: &str,
    pattern: Option<&str>,
    dry_run: bool,
) -> Result<()> {
    if out.is_json() {
        return out.json(r);
    }
    if r.models.is_empty() {
        let which = pattern.map_or(String::new(), |p| format!(" matches '{p}'"));
        return out.line(&format!(
            "no upstream model of provider '{provider}'{which}; nothing changed"
        ));
    }
    let mut t = Table::new(&["ACTION", "MODEL", "UPSTREAM MODEL", "NOTE"]);
    for m in &r.models {
        t.row([
            m.action.clone(),
            m.name.clone(),
            m.upstream_model.clone(),
            m.reason.clone(),
        ]);
    }
    out.table(&t)?;
    let n = r.models.iter().filter(|m| m.action == "create").count();
    let summary = match (n, dry_run) {
        (0, _) => "no model to create; nothing changed".to_string(),
        (n, true) => format!(
            "dry run: would create {n} model{}; nothing changed",
            plural(n)
        ),
        (n, false) => format!(
            "created {n} model{} (configuration version {})",
            plural(n),
            r.config_version
        ),
    };
    out.line(&summary)
}

fn retarget_report(
    out: &mut Out<'_>,
    r: &RetargetModelsResponse,
    from: &str,
    dry_run: bool,
) -> Result<()> {
    if out.is_json() {
        return out.json(r);
    }
    if r.changes.is_empty() {
        return out.line(&format!("no model uses target {from}; nothing changed"));
    }
    let mut t = Table::new(&["MODEL", "PRIORITY", "BEFORE", "", "AFTER"]);
    for c in &r.changes {
        t.row([
            c.model.clone(),
            c.priority.to_string(),
            format!("{}:{}", c.from_provider, c.from_upstream_model),
            "->".to_string(),
            format!("{}:{}", c.to_provider, c.to_upstream_model),
        ]);
    }
    out.table(&t)?;
    let n = r.changes.len();
    let mut models: Vec<&str> = r.changes.iter().map(|c| c.model.as_str()).collect();
    models.dedup();
    let m = models.len();
    let what = format!("{n} target{} in {m} model{}", plural(n), plural(m));
    out.line(&if dry_run {
        format!("dry run: would change {what}; nothing changed")
    } else {
        format!(
            "changed {what} (configuration version {})",
            r.config_version
        )
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::OutputFormat;
    use llmgw_proto::v1::{ImportedModel, RetargetChange, TargetTest};

    fn render<F: FnOnce(&mut Out<'_>) -> Result<()>>(
        format: OutputFormat,
        f: F,
    ) -> (String, Result<()>) {
        let mut buf = Vec::new();
        let result = {
            let mut out = Out {
                w: &mut buf,
                format,
            };
            f(&mut out)
        };
        (String::from_utf8(buf).unwrap(), result)
    }

    fn tested() -> TestModelResponse {
        TestModelResponse {
            model: "m".into(),
            r#type: "chat".into(),
            targets: vec![
                TargetTest {
                    provider: "a".into(),
                    upstream_model: "up-1".into(),
                    protocol: "openai".into(),
                    request: "POST http://h/v1/responses".into(),
                    status: 200,
                    latency_ms: 12,
                    excerpt: "pong".into(),
                    ok: true,
                    ..Default::default()
                },
                TargetTest {
                    provider: "b".into(),
                    upstream_model: "up-2".into(),
                    protocol: "anthropic".into(),
                    status: 0,
                    latency_ms: 5,
                    error: "provider 'b': cannot connect".into(),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn a_test_shows_each_target_and_fails_if_one_did() {
        let (text, result) = render(OutputFormat::Table, |o| test_report(o, &tested()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TARGET"), "{text}");
        assert!(
            lines[1].starts_with("a:up-1") && lines[1].contains("200"),
            "{text}"
        );
        assert!(
            lines[1].contains("12 ms") && lines[1].contains("ok: \"pong\""),
            "{text}"
        );
        assert!(
            lines[2].contains(" - ") && lines[2].contains("error: provider 'b'"),
            "{text}"
        );
        let e = result.unwrap_err().to_string();
        assert_eq!(e, "1 of 2 targets of model 'm' failed");

        let (json, result) = render(OutputFormat::Json, |o| test_report(o, &tested()));
        assert!(result.is_err());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["targets"][0]["status"], 200);
        assert_eq!(v["targets"][1]["ok"], false);

        let mut all_ok = tested();
        all_ok.targets.truncate(1);
        let (_, result) = render(OutputFormat::Table, |o| test_report(o, &all_ok));
        assert!(result.is_ok());
    }

    #[test]
    fn an_import_lists_each_model_and_sums_up() {
        let r = ImportModelsResponse {
            models: vec![
                ImportedModel {
                    name: "x-a".into(),
                    upstream_model: "a".into(),
                    action: "create".into(),
                    reason: String::new(),
                },
                ImportedModel {
                    name: "x-b".into(),
                    upstream_model: "b".into(),
                    action: "exists".into(),
                    reason: "model 'x-b' already exists".into(),
                },
            ],
            config_version: 7,
            truncated: false,
        };
        let (text, _) = render(OutputFormat::Table, |o| {
            import_report(o, &r, "p", None, true)
        });
        assert!(text.contains("create  x-a"), "{text}");
        assert!(text.contains("already exists"), "{text}");
        assert!(
            text.ends_with("dry run: would create 1 model; nothing changed\n"),
            "{text}"
        );
        let (text, _) = render(OutputFormat::Table, |o| {
            import_report(o, &r, "p", None, false)
        });
        assert!(
            text.ends_with("created 1 model (configuration version 7)\n"),
            "{text}"
        );
        let empty = ImportModelsResponse::default();
        let (text, _) = render(OutputFormat::Table, |o| {
            import_report(o, &empty, "p", Some("gpt-*"), false)
        });
        assert_eq!(
            text,
            "no upstream model of provider 'p' matches 'gpt-*'; nothing changed\n"
        );
    }

    #[test]
    fn a_retarget_shows_the_diff() {
        let change = |model: &str, priority| RetargetChange {
            model: model.into(),
            priority,
            from_provider: "p".into(),
            from_upstream_model: "old".into(),
            to_provider: "q".into(),
            to_upstream_model: "new".into(),
        };
        let r = RetargetModelsResponse {
            changes: vec![change("m1", 0), change("m2", 1)],
            config_version: 9,
        };
        let (text, _) = render(OutputFormat::Table, |o| {
            retarget_report(o, &r, "p:old", true)
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["m1", "0", "p:old", "->", "q:new"],
            "{text}"
        );
        assert_eq!(
            lines[3],
            "dry run: would change 2 targets in 2 models; nothing changed"
        );
        let (text, _) = render(OutputFormat::Table, |o| {
            retarget_report(o, &RetargetModelsResponse::default(), "p:old", false)
        });
        assert_eq!(text, "no model uses target p:old; nothing changed\n");
        assert!(target_arg("--from", "p").is_err());
        assert_eq!(test_call_timeout(2, 30_000), CALL_TIMEOUT);
        assert_eq!(test_call_timeout(10, 30_000), Duration::from_secs(330));
        assert!(target_arg("--from", ":m").is_err());
        assert_eq!(
            target_arg("--to", "or:meta/llama:70b").unwrap(),
            ("or".to_string(), "meta/llama:70b".to_string())
        );
    }
}
