//! The `--target-price*` flags of `model add|update`: target N's own
//! prices (US dollars, exact decimals), every billing mode the model's
//! `--price-*` flags have, which override the model's for its requests'
//! cost and for the `cost-first` strategy. Each flag takes `N:` and then
//! what its model-level twin takes; the flags given for a target make its
//! whole price sheet, as the model's flags make the model's (a price not
//! given is 0), and `--target-price N:` alone clears them (the model's
//! prices apply again).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use llmgw_proto::v1::{ModelTarget, Prices};

use super::prices::{parse_decimal, token_prices, PriceArgs};
use super::target_arg;

/// Targets' own prices, by target number N (from 1, in target order).
/// The flags given for a target make its whole price sheet, overriding
/// the model's; a price not given is 0. On `model update` without
/// --target, the model's current targets are changed.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetPriceArgs {
    /// Token prices of target N (from 1, in target order), US dollars per
    /// 1M tokens: N:INPUT,OUTPUT[,CACHED[,CACHE_WRITE]]; `N:` alone: the
    /// model's prices again. The --target-price* flags given for a target
    /// make its whole price sheet, which overrides the model's (a price
    /// not given is 0); on `model update` without --target they change
    /// the model's current targets. Repeat for more targets.
    #[arg(long = "target-price", value_name = "N:IN,OUT[,CACHED[,WRITE]]")]
    pub tokens: Vec<String>,
    /// A token-price tier of target N, as --price-tier:
    /// N:THRESHOLD:IN,OUT[,CACHED[,WRITE]]. Repeat for more.
    #[arg(
        long = "target-price-tier",
        value_name = "N:THRESHOLD:IN,OUT[,CACHED[,WRITE]]"
    )]
    pub tiers: Vec<String>,
    /// A fixed price per request of target N, US dollars: N:X.
    #[arg(long = "target-price-per-request", value_name = "N:X")]
    pub per_request: Vec<String>,
    /// A price per image of target N, US dollars, as --price-per-image:
    /// N:KEY=X (KEY: SIZE/QUALITY, SIZE, */QUALITY or *). Repeat for more.
    #[arg(long = "target-price-per-image", value_name = "N:KEY=X")]
    pub per_image: Vec<String>,
    /// A price per second of audio of target N, US dollars: N:X.
    #[arg(long = "target-price-per-second", value_name = "N:X")]
    pub per_second: Vec<String>,
    /// A price per 1M characters (speech input) of target N, US dollars:
    /// N:X.
    #[arg(long = "target-price-per-mchar", value_name = "N:X")]
    pub per_mchar: Vec<String>,
}

/// What the flags say about one target: clear its prices, or these.
#[derive(Default)]
struct Given {
    /// The `N:` argument that cleared them.
    cleared: Option<String>,
    prices: PriceArgs,
}

impl TargetPriceArgs {
    /// Whether any target price flag is given.
    pub fn any(&self) -> bool {
        [
            &self.tokens,
            &self.tiers,
            &self.per_request,
            &self.per_image,
            &self.per_second,
            &self.per_mchar,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }

    /// What the flags say, by target number, each number checked against
    /// `len` targets.
    fn by_target(&self, len: usize) -> Result<BTreeMap<usize, Given>> {
        let mut given: BTreeMap<usize, Given> = BTreeMap::new();
        // `N:REST` of `flag arg`, N checked.
        let target = |flag: &str, arg: &'_ str, form: &str| -> Result<(usize, String)> {
            let (n, rest) = target_arg::split(arg, form)?;
            target_arg::check(flag, arg, n, len)?;
            Ok((n, rest.to_string()))
        };
        let flag = "--target-price";
        for arg in &self.tokens {
            let (n, rest) = target(flag, arg, "N:INPUT,OUTPUT")?;
            let g = given.entry(n).or_default();
            let p = &mut g.prices;
            if g.cleared.is_some() || p.price_input.is_some() {
                bail!("{flag} gives target {n} more than once");
            }
            if rest.trim().is_empty() {
                g.cleared = Some(arg.to_string());
                continue;
            }
            let [i, o, c, w] = token_prices(&rest, flag, arg)?;
            let some = |s: String| (!s.is_empty()).then_some(s);
            (p.price_input, p.price_output) = (Some(i), Some(o));
            (p.price_cached_input, p.price_cache_write) = (some(c), some(w));
        }
        let lists: [(&str, &Vec<String>, &str, List); 2] = [
            (
                "--target-price-tier",
                &self.tiers,
                "N:THRESHOLD:IN,OUT",
                |p| &mut p.price_tiers,
            ),
            (
                "--target-price-per-image",
                &self.per_image,
                "N:KEY=X",
                |p| &mut p.price_per_image,
            ),
        ];
        for (flag, args, form, field) in lists {
            for arg in args {
                let (n, rest) = target(flag, arg, form)?;
                field(&mut given.entry(n).or_default().prices).push(rest);
            }
        }
        let singles: [(&str, &Vec<String>, Field); 3] = [
            ("--target-price-per-request", &self.per_request, |p| {
                &mut p.price_per_request
            }),
            ("--target-price-per-second", &self.per_second, |p| {
                &mut p.price_per_second
            }),
            ("--target-price-per-mchar", &self.per_mchar, |p| {
                &mut p.price_per_mchar
            }),
        ];
        for (flag, args, field) in singles {
            for arg in args {
                let (n, rest) = target(flag, arg, "N:X")?;
                let price = parse_decimal(&rest).map_err(|e| anyhow!("{flag} {arg}: {e}"))?;
                let slot = field(&mut given.entry(n).or_default().prices);
                if slot.replace(price).is_some() {
                    bail!("{flag} gives target {n} more than once");
                }
            }
        }
        Ok(given)
    }

    /// Sets the prices of the targets the flags name (in priority order):
    /// the whole sheet the flags give for each, or none for `N:`.
    pub fn apply_to_targets(&self, targets: &mut [ModelTarget]) -> Result<()> {
        for (n, g) in self.by_target(targets.len())? {
            let prices: Option<Prices> = match g.cleared {
                Some(arg) if g.prices.prices()?.is_some() => bail!(
                    "--target-price {arg} clears target {n}'s prices, and other \
                     --target-price-* flags set them"
                ),
                Some(_) => None,
                None => Some(g.prices.sheet("--target-price")?),
            };
            if let Some(t) = targets.get_mut(n - 1) {
                t.prices = prices;
            }
        }
        Ok(())
    }
}

/// One single-valued price of a target's flags.
type Field = fn(&mut PriceArgs) -> &mut Option<String>;

/// One repeatable price of a target's flags.
type List = fn(&mut PriceArgs) -> &mut Vec<String>;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        targets: TargetPriceArgs,
    }

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

    /// The targets of a 3-target model (target 3 priced 1/1 before) after
    /// the flags, or the error.
    fn applied(argv: &[&str]) -> Result<Vec<ModelTarget>> {
        let flags = Flags::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))?;
        let mut t = targets(3);
        t[2].prices = PriceArgs {
            price_input: Some("1".into()),
            price_output: Some("1".into()),
            ..Default::default()
        }
        .prices()?;
        flags.targets.apply_to_targets(&mut t)?;
        Ok(t)
    }

    fn shown(t: &ModelTarget) -> String {
        t.prices
            .as_ref()
            .map_or_else(|| "(the model's)".into(), super::super::prices::text)
    }

    #[test]
    fn every_mode_by_target_number_and_cleared_by_an_empty_one() {
        for (argv, want) in [
            (
                &[
                    "--target-price",
                    "2:0.5,1.5",
                    "--target-price",
                    "1:1,2,0.1,1.25",
                ][..],
                ["1/2/0.1/1.25", "0.5/1.5", "1/1"],
            ),
            (
                &["--target-price", "3:"],
                ["(the model's)", "(the model's)", "(the model's)"],
            ),
            (
                &[
                    "--target-price",
                    "1:3,15",
                    "--target-price-tier",
                    "1:200000:6,22.5,0.6",
                    "--target-price-per-request",
                    "1:0.001",
                    "--target-price-per-image",
                    "2:1024x1024/high=0.167",
                    "--target-price-per-image",
                    "2:*=0.04",
                    "--target-price-per-second",
                    "3:0.0001",
                    "--target-price-per-mchar",
                    "3:15",
                ],
                [
                    "3/15, above 200000: 6/22.5/0.6, per request 0.001",
                    "0/0, image * 0.04, image 1024x1024/high 0.167",
                    "0/0, per second 0.0001, per 1M chars 15",
                ],
            ),
        ] {
            let t = applied(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let got: Vec<String> = t.iter().map(shown).collect();
            assert_eq!(got, want, "{argv:?}");
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        for (argv, says) in [
            (&["--target-price", "4:1,2"][..], "there are only 3 targets"),
            (&["--target-price", "0:1,2"], "1 or more"),
            (&["--target-price", "x"], "is not N:INPUT,OUTPUT"),
            (&["--target-price", "1:1"], "give INPUT,OUTPUT"),
            (&["--target-price", "1:1,2,3,4,5"], "give INPUT,OUTPUT"),
            (&["--target-price", "1:-1,2"], "--target-price 1:-1,2"),
            (&["--target-price", "1:a,2"], "--target-price 1:a,2"),
            (
                &["--target-price", "1:1,2", "--target-price", "1:3,4"],
                "more than once",
            ),
            (
                &["--target-price", "1:", "--target-price", "1:3,4"],
                "more than once",
            ),
            (
                &[
                    "--target-price",
                    "1:",
                    "--target-price-per-request",
                    "1:0.1",
                ],
                "clears target 1's prices",
            ),
            (
                &["--target-price-tier", "1:x:1,2"],
                "--target-price-tier x:1,2: the threshold",
            ),
            (
                &["--target-price-tier", "2:100"],
                "--target-price-tier 100: is not THRESHOLD",
            ),
            (
                &["--target-price-tier", "9:100:1,2"],
                "--target-price-tier 9:100:1,2: there are only 3",
            ),
            (
                &["--target-price-per-image", "1:1024x1024"],
                "--target-price-per-image 1024x1024: is not KEY=PRICE",
            ),
            (
                &[
                    "--target-price-per-image",
                    "1:*=1",
                    "--target-price-per-image",
                    "1:*=2",
                ],
                "more than once",
            ),
            (
                &["--target-price-per-request", "1:-1"],
                "--target-price-per-request 1:-1: a price must not be negative",
            ),
            (&["--target-price-per-second", "1"], "is not N:X"),
            (
                &[
                    "--target-price-per-mchar",
                    "2:1",
                    "--target-price-per-mchar",
                    "2:3",
                ],
                "--target-price-per-mchar gives target 2 more than once",
            ),
        ] {
            let err = applied(argv).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(says), "{argv:?}: {err}");
        }
    }
}
