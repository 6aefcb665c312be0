//! Model prices (#16): the `--price-*` flags of `model add|update`, which
//! build an exact price sheet of decimal strings (the control plane
//! checks and stores them exactly), the one-line text of a sheet, and
//! `llmgw model prices NAME [--history]`.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use llmgw_proto::v1::{
    GetModelPricesRequest, ModelPrices, PriceChange, PriceSheet, PriceTier, Prices,
};

use crate::args::GlobalOpts;
use crate::client::Client;
use crate::output::{Out, Table};

/// The price flags of `model add` and `model update`: US dollars as
/// decimal numbers (at most 9 decimal places), exact.
#[derive(Args, Debug, Clone, Default)]
pub struct PriceArgs {
    /// Price of input tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "X", value_parser = parse_decimal)]
    pub price_input: Option<String>,
    /// Price of output tokens, US dollars per 1M tokens.
    #[arg(long, value_name = "Y", value_parser = parse_decimal)]
    pub price_output: Option<String>,
    /// Price of cached input tokens (cache reads), US dollars per 1M tokens.
    #[arg(long, value_name = "Z", value_parser = parse_decimal)]
    pub price_cached_input: Option<String>,
    /// Price of tokens written to a prompt cache, US dollars per 1M tokens;
    /// 0 or absent charges them at the input price.
    #[arg(long, value_name = "W", value_parser = parse_decimal)]
    pub price_cache_write: Option<String>,
    /// Token prices for requests whose whole input (uncached, cache reads
    /// and cache writes) is above THRESHOLD tokens, replacing the others:
    /// THRESHOLD:IN,OUT[,CACHED[,WRITE]]. Repeat for more tiers.
    #[arg(long = "price-tier", value_name = "THRESHOLD:IN,OUT[,CACHED[,WRITE]]")]
    pub price_tiers: Vec<String>,
    /// A fixed price per request, US dollars.
    #[arg(long, value_name = "X", value_parser = parse_decimal)]
    pub price_per_request: Option<String>,
    /// Price per image, US dollars, by SIZE/QUALITY, SIZE, */QUALITY or *
    /// (looked up in that order): e.g. 1024x1024/high=0.167. Repeat for more.
    #[arg(long = "price-per-image", value_name = "KEY=X")]
    pub price_per_image: Vec<String>,
    /// Price per second of audio, US dollars.
    #[arg(long, value_name = "X", value_parser = parse_decimal)]
    pub price_per_second: Option<String>,
    /// Price per 1M characters (speech input), US dollars.
    #[arg(long, value_name = "X", value_parser = parse_decimal)]
    pub price_per_mchar: Option<String>,
}

/// A price as a decimal string: digits with at most one '.', at most 9
/// decimal places, not negative. The control plane checks it again.
pub fn parse_decimal(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("a price must not be negative, got `{s}`"));
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(format!(
            "`{s}` is not a decimal number of US dollars (e.g. 2.50)"
        ));
    }
    if frac.trim_end_matches('0').len() > 9 {
        return Err(format!(
            "`{s}` has more than 9 decimal places; prices are exact to the nano-dollar"
        ));
    }
    Ok(t.to_string())
}

/// `IN,OUT[,CACHED[,WRITE]]` as token prices.
pub(super) fn token_prices(text: &str, flag: &str, arg: &str) -> Result<[String; 4]> {
    let v: Vec<String> = text
        .split(',')
        .map(|p| parse_decimal(p).map_err(|e| anyhow!("{flag} {arg}: {e}")))
        .collect::<Result<_>>()?;
    if !(2..=4).contains(&v.len()) {
        bail!("{flag} {arg}: give INPUT,OUTPUT and optionally CACHED and CACHE_WRITE");
    }
    let get = |i: usize| v.get(i).cloned().unwrap_or_default();
    Ok([get(0), get(1), get(2), get(3)])
}

impl PriceArgs {
    fn any(&self) -> bool {
        self.price_input.is_some()
            || self.price_output.is_some()
            || self.price_cached_input.is_some()
            || self.price_cache_write.is_some()
            || !self.price_tiers.is_empty()
            || self.price_per_request.is_some()
            || !self.price_per_image.is_empty()
            || self.price_per_second.is_some()
            || self.price_per_mchar.is_some()
    }

    /// The prices the flags give; `None` when no price flag is given. The
    /// flags given make the whole price sheet: any price not given is 0.
    pub fn prices(&self) -> Result<Option<Prices>> {
        if !self.any() {
            return Ok(None);
        }
        self.sheet("--price").map(Some)
    }

    /// The whole price sheet the flags give; errors name the flags as
    /// `PREFIX-tier` and `PREFIX-per-image` (`--price-tier`,
    /// `--target-price-tier`).
    pub fn sheet(&self, prefix: &str) -> Result<Prices> {
        let (tier_flag, image_flag) = (format!("{prefix}-tier"), format!("{prefix}-per-image"));
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut tiers = Vec::new();
        for arg in &self.price_tiers {
            let (above, rest) = arg.split_once(':').ok_or_else(|| {
                anyhow!("{tier_flag} {arg}: is not THRESHOLD:IN,OUT[,CACHED[,WRITE]]")
            })?;
            let above: u64 = above.trim().parse().map_err(|_| {
                anyhow!("{tier_flag} {arg}: the threshold `{above}` is not a number of tokens")
            })?;
            let [i, o, c, w] = token_prices(rest, &tier_flag, arg)?;
            tiers.push(PriceTier {
                above_input_tokens: above,
                input_per_mtok: i,
                output_per_mtok: o,
                cached_input_per_mtok: c,
                cache_write_per_mtok: w,
            });
        }
        let mut per_image = std::collections::HashMap::new();
        for arg in &self.price_per_image {
            let (key, price) = arg
                .rsplit_once('=')
                .ok_or_else(|| anyhow!("{image_flag} {arg}: is not KEY=PRICE"))?;
            let price = parse_decimal(price).map_err(|e| anyhow!("{image_flag} {arg}: {e}"))?;
            if per_image.insert(key.trim().to_string(), price).is_some() {
                bail!("{image_flag} gives `{}` more than once", key.trim());
            }
        }
        Ok(Prices {
            sheet: Some(PriceSheet {
                input_per_mtok: text(&self.price_input),
                output_per_mtok: text(&self.price_output),
                cached_input_per_mtok: text(&self.price_cached_input),
                cache_write_per_mtok: text(&self.price_cache_write),
                tiers,
                per_request: text(&self.price_per_request),
                per_image,
                per_audio_second: text(&self.price_per_second),
                per_mchar: text(&self.price_per_mchar),
            }),
            ..Default::default()
        })
    }
}

/// A decimal string as shown: empty is 0.
fn amount(s: &str) -> &str {
    if s.is_empty() {
        "0"
    } else {
        s
    }
}

/// Whether a decimal string is 0 (empty is 0).
fn is_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0' || b == b'.')
}

/// `IN/OUT[/CACHED[/WRITE]]`.
fn tokens_text(i: &str, o: &str, c: &str, w: &str) -> String {
    let mut s = format!("{}/{}", amount(i), amount(o));
    if !is_zero(c) || !is_zero(w) {
        s.push('/');
        s.push_str(amount(c));
    }
    if !is_zero(w) {
        s.push('/');
        s.push_str(w);
    }
    s
}

/// A sheet on one line, every mode that is set: "2.5/10, above 200000:
/// 5/15, per request 0.001, image 1024x1024/high 0.167, per second
/// 0.0001, per 1M chars 15" (US dollars; token prices per 1M tokens as
/// IN/OUT[/CACHED[/WRITE]]). Prices from an older control plane have no
/// sheet: their f64 token prices.
pub fn text(p: &Prices) -> String {
    let Some(s) = &p.sheet else {
        return tokens_text(
            &p.input_per_mtok.to_string(),
            &p.output_per_mtok.to_string(),
            &p.cached_input_per_mtok.to_string(),
            &p.cache_write_per_mtok.to_string(),
        );
    };
    let mut parts = vec![tokens_text(
        &s.input_per_mtok,
        &s.output_per_mtok,
        &s.cached_input_per_mtok,
        &s.cache_write_per_mtok,
    )];
    for t in &s.tiers {
        parts.push(format!(
            "above {}: {}",
            t.above_input_tokens,
            tokens_text(
                &t.input_per_mtok,
                &t.output_per_mtok,
                &t.cached_input_per_mtok,
                &t.cache_write_per_mtok
            )
        ));
    }
    if !is_zero(&s.per_request) {
        parts.push(format!("per request {}", s.per_request));
    }
    let mut images: Vec<(&String, &String)> = s.per_image.iter().collect();
    images.sort();
    for (k, v) in images {
        parts.push(format!("image {k} {v}"));
    }
    if !is_zero(&s.per_audio_second) {
        parts.push(format!("per second {}", s.per_audio_second));
    }
    if !is_zero(&s.per_mchar) {
        parts.push(format!("per 1M chars {}", s.per_mchar));
    }
    parts.join(", ")
}

/// `llmgw model prices NAME [--history]`.
#[derive(Args, Debug)]
pub struct ModelPricesArgs {
    /// The model.
    pub name: String,
    /// Also list every change of the model's prices with its time.
    #[arg(long)]
    pub history: bool,
}

pub async fn run(a: ModelPricesArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let mut p = c
        .api()
        .get_model_prices(GetModelPricesRequest { name: a.name })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if !a.history {
        p.history.clear();
    }
    show(out, &p, a.history)
}

fn show(out: &mut Out<'_>, p: &ModelPrices, history: bool) -> Result<()> {
    if out.is_json() {
        return out.json(p);
    }
    let model = p.prices.as_ref().map(text).unwrap_or_default();
    let mut t = Table::new(&["TARGET", "PROVIDER", "UPSTREAM MODEL", "PRICES"]);
    t.row([
        "model".to_string(),
        String::new(),
        String::new(),
        model.clone(),
    ]);
    for target in &p.targets {
        t.row([
            target.number.to_string(),
            target.provider.clone(),
            target.upstream_model.clone(),
            target
                .prices
                .as_ref()
                .map_or_else(|| "(the model's)".to_string(), text),
        ]);
    }
    out.table(&t)?;
    if !history {
        return Ok(());
    }
    out.line("")?;
    if p.history.is_empty() {
        return out.line("no recorded changes: the prices are as before price history");
    }
    let mut t = Table::new(&["FROM", "RECORDED", "STATE", "PRICES"]);
    let current = p.history.iter().rposition(|c| !c.scheduled);
    for (i, c) in p.history.iter().enumerate() {
        let mut prices = vec![format!(
            "model {}",
            c.prices.as_ref().map(text).unwrap_or_default()
        )];
        prices.extend(change_targets(c));
        let state = if c.scheduled {
            "scheduled"
        } else if Some(i) == current {
            "in effect"
        } else {
            "past"
        };
        t.row([
            c.from.clone(),
            c.recorded_at.clone(),
            state.to_string(),
            prices.join("; "),
        ]);
    }
    out.table(&t)
}

/// A change's target prices, each with its target: `target N (P:M)`, or
/// `P:M (not a target now)` for a target the model no longer has; by
/// number from an older control plane, which sends no targets.
fn change_targets(c: &PriceChange) -> Vec<String> {
    let mut own: Vec<(u32, String)> = if c.targets.is_empty() {
        c.target_prices
            .iter()
            .map(|(n, tp)| (*n, format!("target {n} {}", text(tp))))
            .collect()
    } else {
        c.targets
            .iter()
            .map(|t| {
                let who = format!("{}:{}", t.provider, t.upstream_model);
                let prices = t.prices.as_ref().map(text).unwrap_or_default();
                if t.number == 0 {
                    (u32::MAX, format!("{who} (not a target now) {prices}"))
                } else {
                    (t.number, format!("target {} ({who}) {prices}", t.number))
                }
            })
            .collect()
    };
    own.sort();
    own.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_checked_but_kept_as_written() {
        assert_eq!(parse_decimal(" 2.50 ").unwrap(), "2.50");
        assert_eq!(parse_decimal("0.000000001").unwrap(), "0.000000001");
        assert_eq!(parse_decimal("1.50000000000").unwrap(), "1.50000000000");
        for (bad, says) in [
            ("-1", "negative"),
            ("1e3", "not a decimal"),
            ("", "not a decimal"),
            ("abc", "not a decimal"),
            ("0.0000000001", "more than 9 decimal places"),
        ] {
            let e = parse_decimal(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_flags_make_a_whole_sheet() {
        let a = PriceArgs {
            price_input: Some("2.5".into()),
            price_output: Some("10".into()),
            price_tiers: vec!["200000:5,15,0.5".into()],
            price_per_request: Some("0.001".into()),
            price_per_image: vec!["1024x1024/high=0.167".into(), "*=0.04".into()],
            price_per_second: Some("0.0001".into()),
            price_per_mchar: Some("15".into()),
            ..Default::default()
        };
        let p = a.prices().unwrap().unwrap();
        let s = p.sheet.as_ref().unwrap();
        assert_eq!(s.tiers[0].above_input_tokens, 200_000);
        assert_eq!(s.tiers[0].cached_input_per_mtok, "0.5");
        assert_eq!(s.tiers[0].cache_write_per_mtok, "");
        assert_eq!(s.per_image["1024x1024/high"], "0.167");
        assert_eq!(
            text(&p),
            "2.5/10, above 200000: 5/15/0.5, per request 0.001, image * 0.04, \
             image 1024x1024/high 0.167, per second 0.0001, per 1M chars 15"
        );
        assert_eq!(PriceArgs::default().prices().unwrap(), None);
        // Only a per-request price: tokens are free.
        let only = PriceArgs {
            price_per_request: Some("0.01".into()),
            ..Default::default()
        };
        assert_eq!(
            text(&only.prices().unwrap().unwrap()),
            "0/0, per request 0.01"
        );
    }

    #[test]
    fn bad_flags_are_named() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            prices: PriceArgs,
        }
        for (argv, says) in [
            (
                &["--price-tier", "x:1,2"][..],
                "--price-tier x:1,2: the threshold `x`",
            ),
            (
                &["--price-tier", "100"],
                "--price-tier 100: is not THRESHOLD",
            ),
            (&["--price-tier", "100:1"], "give INPUT,OUTPUT"),
            (&["--price-per-image", "1024x1024"], "is not KEY=PRICE"),
            (
                &["--price-per-image", "*=-1"],
                "--price-per-image *=-1: a price must not be negative",
            ),
            (
                &["--price-per-image", "*=1", "--price-per-image", "*=2"],
                "more than once",
            ),
            (&["--price-input=-1"], "must not be negative"),
            (
                &["--price-per-request", "0.0000000001"],
                "more than 9 decimal places",
            ),
        ] {
            let e = Flags::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))
                .map_err(anyhow::Error::from)
                .and_then(|f| f.prices.prices())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{argv:?}: {e}");
        }
    }

    #[test]
    fn an_older_control_planes_prices_show_as_numbers() {
        let p = Prices {
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
            cached_input_per_mtok: 1.25,
            ..Default::default()
        };
        assert_eq!(text(&p), "2.5/10/1.25");
    }
}
