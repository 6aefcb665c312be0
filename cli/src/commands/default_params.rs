//! `--default-param NAME=VALUE` on providers and
//! `--target-default-param N:NAME=VALUE` on a model's targets: the value
//! is read as JSON, else as a string (`temperature=0.2` is a number,
//! `user=alice` a string). The control plane checks the names (no
//! structural member such as `model` or `messages`).

use std::collections::HashMap;

use anyhow::{bail, Result};
use llmgw_proto::v1::ModelTarget;

/// `NAME=VALUE` as (name, JSON text).
pub fn parse(arg: &str) -> Result<(String, String)> {
    let Some((name, value)) = arg.split_once('=') else {
        bail!("default parameter `{arg}` is not NAME=VALUE");
    };
    let name = name.trim();
    if name.is_empty() {
        bail!("default parameter `{arg}` has no name");
    }
    let json = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(v) => v.to_string(),
        Err(_) => serde_json::Value::String(value.to_string()).to_string(),
    };
    Ok((name.to_string(), json))
}

/// Every `NAME=VALUE` as a map; a name given twice is an error.
pub fn map(args: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for a in args {
        let (k, v) = parse(a)?;
        if out.insert(k.clone(), v).is_some() {
            bail!("default parameter {k} is given more than once");
        }
    }
    Ok(out)
}

/// `N:NAME=VALUE` (N counts targets from 1, in priority order), or `N:`
/// alone for "no defaults on target N".
pub fn parse_target(arg: &str) -> Result<(usize, Option<(String, String)>)> {
    let (n, rest) = super::target_arg::split(arg, "N:NAME=VALUE")?;
    if rest.trim().is_empty() {
        return Ok((n, None));
    }
    Ok((n, Some(parse(rest)?)))
}

/// Sets the defaults of the targets the arguments name (in priority
/// order): each named target gets exactly the defaults given for it.
pub fn apply_to_targets(targets: &mut [ModelTarget], args: &[String]) -> Result<()> {
    let mut given: HashMap<usize, HashMap<String, String>> = HashMap::new();
    for a in args {
        let (n, param) = parse_target(a)?;
        super::target_arg::check("--target-default-param", a, n, targets.len())?;
        let entry = given.entry(n).or_default();
        if let Some((k, v)) = param {
            entry.insert(k, v);
        }
    }
    for (n, params) in given {
        if let Some(t) = targets.get_mut(n - 1) {
            t.default_params = params;
        }
    }
    Ok(())
}

/// Defaults on one line, by name: `temperature=0.2 top_p=0.9`.
pub fn text(params: &HashMap<String, String>) -> String {
    let mut v: Vec<_> = params.iter().collect();
    v.sort();
    v.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_or_strings_and_targets_are_numbered() {
        assert_eq!(
            parse("temperature=0.2").unwrap(),
            ("temperature".into(), "0.2".into())
        );
        assert_eq!(parse("user=alice").unwrap().1, "\"alice\"");
        assert_eq!(parse("stop=[\"x\"]").unwrap().1, "[\"x\"]");
        assert!(parse("novalue").is_err());
        assert!(map(&["a=1".into(), "a=2".into()]).is_err());
        assert_eq!(
            parse_target("2:top_p=0.5").unwrap(),
            (2, Some(("top_p".into(), "0.5".into())))
        );
        assert_eq!(parse_target("1:").unwrap(), (1, None));
        assert!(parse_target("0:a=1").is_err());
        assert!(parse_target("a=1").is_err());
        let mut t = vec![ModelTarget::default(), ModelTarget::default()];
        t[0].default_params.insert("seed".into(), "1".into());
        apply_to_targets(&mut t, &["2:temperature=0.7".into(), "1:".into()]).unwrap();
        assert!(t[0].default_params.is_empty());
        assert_eq!(text(&t[1].default_params), "temperature=0.7");
        let e = apply_to_targets(&mut t, &["3:a=1".into()]).unwrap_err();
        assert!(e.to_string().contains("there are only 2 targets"), "{e}");
    }
}
