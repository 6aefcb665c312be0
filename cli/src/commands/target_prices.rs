//! `--target-price N:INPUT,OUTPUT[,CACHED[,CACHE_WRITE]]` on a model's
//! targets: target N's own token prices (US dollars per 1M tokens, exact
//! decimals), which
//! override the model's for its requests' cost and for the `cost-first`
//! strategy; `N:` alone clears them (the model's prices apply again).

use std::collections::HashMap;

use anyhow::{bail, Result};
use llmgw_proto::v1::{ModelTarget, Prices};

/// `N:INPUT,OUTPUT[,CACHED[,CACHE_WRITE]]`, or `N:` for none.
pub fn parse(arg: &str) -> Result<(usize, Option<Prices>)> {
    let (n, rest) = super::target_arg::split(arg, "N:INPUT,OUTPUT")?;
    if rest.trim().is_empty() {
        return Ok((n, None));
    }
    Ok((n, Some(super::prices::flat(rest, "--target-price", arg)?)))
}

/// Sets the prices of the targets the arguments name (in priority order).
pub fn apply_to_targets(targets: &mut [ModelTarget], args: &[String]) -> Result<()> {
    let mut given: HashMap<usize, Option<Prices>> = HashMap::new();
    for a in args {
        let (n, prices) = parse(a)?;
        super::target_arg::check("--target-price", a, n, targets.len())?;
        if given.insert(n, prices).is_some() {
            bail!("--target-price gives target {n} more than once");
        }
    }
    for (n, prices) in given {
        if let Some(t) = targets.get_mut(n - 1) {
            t.prices = prices;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<ModelTarget> {
        (0..n)
            .map(|i| ModelTarget {
                provider: "p".into(),
                upstream_model: format!("m{i}"),
                priority: i as i32,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn prices_by_target_number_and_cleared_by_an_empty_one() {
        let mut t = targets(3);
        t[2].prices = Some(Prices::default());
        apply_to_targets(
            &mut t,
            &["2:0.5,1.5".into(), "1:1,2,0.1,1.25".into(), "3:".into()],
        )
        .unwrap();
        let sheet = |i: usize| t[i].prices.as_ref().unwrap().sheet.clone().unwrap();
        let p0 = sheet(0);
        assert_eq!(
            (
                p0.input_per_mtok.as_str(),
                p0.output_per_mtok.as_str(),
                p0.cached_input_per_mtok.as_str(),
                p0.cache_write_per_mtok.as_str()
            ),
            ("1", "2", "0.1", "1.25")
        );
        let p1 = sheet(1);
        assert_eq!(
            (p1.input_per_mtok.as_str(), p1.output_per_mtok.as_str()),
            ("0.5", "1.5")
        );
        assert_eq!(t[2].prices, None);
    }

    #[test]
    fn bad_arguments_are_named() {
        let mut t = targets(2);
        for (arg, says) in [
            ("3:1,2", "there are only 2 targets"),
            ("0:1,2", "1 or more"),
            ("x", "is not N:INPUT,OUTPUT"),
            ("1:1", "give INPUT,OUTPUT"),
            ("1:1,2,3,4,5", "give INPUT,OUTPUT"),
            ("1:-1,2", "--target-price 1:-1,2"),
            ("1:a,2", "--target-price 1:a,2"),
        ] {
            let err = apply_to_targets(&mut t, &[arg.to_string()]).unwrap_err();
            assert!(err.to_string().contains(says), "{arg}: {err}");
        }
        let err = apply_to_targets(&mut t, &["1:1,2".into(), "1:3,4".into()]).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }
}
