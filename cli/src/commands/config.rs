//! `llmgw export` and `llmgw apply`.

use anyhow::Result;
use llmgw_proto::v1::{ApplyConfigRequest, ApplyConfigResponse, ExportConfigRequest};

use crate::args::{ApplyArgs, GlobalOpts};
use crate::client::Client;
use crate::config_file;
use crate::output::Out;

/// YAML by default (a file for `apply`); JSON with `-o json`.
pub async fn export(g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let config = c
        .api()
        .export_config(ExportConfigRequest {})
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        out.json(&config)
    } else {
        out.w.write_all(config_file::to_yaml(&config)?.as_bytes())?;
        Ok(())
    }
}

pub async fn apply(a: ApplyArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    // Read and check the file before going to the network.
    let config = config_file::load(&a.file)?;
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .apply_config(ApplyConfigRequest {
            config: Some(config),
            dry_run: a.dry_run,
            prune: a.prune,
            allow_empty: a.allow_empty,
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    for line in change_lines(&r, a.dry_run) {
        out.line(&line)?;
    }
    Ok(())
}

/// `+ provider foo`, `~ model bar` with indented details, `- api_key baz`,
/// then what was kept without --prune, then a closing line.
fn change_lines(r: &ApplyConfigResponse, dry_run: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for ch in &r.changes {
        let sign = match ch.action.as_str() {
            "create" => "+",
            "update" => "~",
            "delete" => "-",
            other => other,
        };
        // The default key limits have no name.
        lines.push(
            format!("{sign} {} {}", ch.kind, ch.name)
                .trim_end()
                .to_string(),
        );
        for d in &ch.details {
            lines.push(format!("    {d}"));
        }
    }
    if r.changes.is_empty() {
        lines.push("no changes".to_string());
    }
    if !r.kept.is_empty() {
        let kept: Vec<String> = r
            .kept
            .iter()
            .map(|k| format!("{} {}", k.kind, k.name).trim_end().to_string())
            .collect();
        lines.push(format!(
            "kept (not in the file; --prune deletes them): {}",
            kept.join(", ")
        ));
    }
    if dry_run {
        lines.push("dry run: nothing was applied".to_string());
    } else if !r.changes.is_empty() {
        let n = r.changes.len();
        lines.push(format!(
            "applied {n} change{}; config version {}",
            if n == 1 { "" } else { "s" },
            r.config_version
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::ConfigChange;

    fn change(action: &str, kind: &str, name: &str, details: &[&str]) -> ConfigChange {
        ConfigChange {
            action: action.into(),
            kind: kind.into(),
            name: name.into(),
            details: details.iter().map(|d| (*d).to_string()).collect(),
        }
    }

    #[test]
    fn changes_are_listed() {
        let r = ApplyConfigResponse {
            changes: vec![
                change("create", "provider", "foo", &[]),
                change(
                    "update",
                    "model",
                    "bar",
                    &["strategy: priority -> weighted"],
                ),
                change("delete", "api_key", "baz", &[]),
            ],
            config_version: 7,
            kept: vec![change("keep", "model", "old", &[])],
        };
        assert_eq!(
            change_lines(&r, false),
            [
                "+ provider foo",
                "~ model bar",
                "    strategy: priority -> weighted",
                "- api_key baz",
                "kept (not in the file; --prune deletes them): model old",
                "applied 3 changes; config version 7",
            ]
        );
        assert_eq!(
            change_lines(&r, true).last().map(String::as_str),
            Some("dry run: nothing was applied")
        );
        let none = ApplyConfigResponse::default();
        assert_eq!(change_lines(&none, false), ["no changes"]);
        assert_eq!(
            change_lines(&none, true),
            ["no changes", "dry run: nothing was applied"]
        );
    }
}
