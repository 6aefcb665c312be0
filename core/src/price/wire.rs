//! Prices on the wire: decimal strings of US dollars in the admin API and
//! exported files (`pb::PriceSheet`), nano-dollars in the snapshot
//! (`pb::ExactPrices`), and the `f64` prices of older peers (`pb::Prices`
//! fields 1-4). Each is checked into a [`PriceSheet`] with errors naming
//! the field.

use llmgw_proto::v1 as pb;

use super::{Amount, PriceSheet, Tier, TokenPrices};
use crate::validate::ValidationError;

fn named(field: &str) -> impl Fn(ValidationError) -> ValidationError + '_ {
    move |e| ValidationError(format!("{field}: {}", e.0))
}

/// A decimal string; empty is 0.
fn decimal(field: &str, text: &str) -> Result<Amount, ValidationError> {
    if text.trim().is_empty() {
        return Ok(Amount::ZERO);
    }
    text.parse().map_err(named(field))
}

fn nanos(field: &str, n: i64) -> Result<Amount, ValidationError> {
    Amount::from_nanos(n).map_err(named(field))
}

impl TryFrom<&pb::PriceSheet> for PriceSheet {
    type Error = ValidationError;

    /// Prices from the admin API or a file, as decimal strings.
    fn try_from(p: &pb::PriceSheet) -> Result<Self, Self::Error> {
        let tokens = |prefix: &str,
                      input: &str,
                      output: &str,
                      cached: &str,
                      write: &str|
         -> Result<TokenPrices, ValidationError> {
            Ok(TokenPrices {
                input: decimal(&format!("{prefix}input_per_mtok"), input)?,
                output: decimal(&format!("{prefix}output_per_mtok"), output)?,
                cached_input: decimal(&format!("{prefix}cached_input_per_mtok"), cached)?,
                cache_write: decimal(&format!("{prefix}cache_write_per_mtok"), write)?,
            })
        };
        let mut per_image = std::collections::BTreeMap::new();
        for (k, v) in &p.per_image {
            per_image.insert(k.clone(), decimal(&format!("per_image[{k}]"), v)?);
        }
        PriceSheet {
            tokens: tokens(
                "",
                &p.input_per_mtok,
                &p.output_per_mtok,
                &p.cached_input_per_mtok,
                &p.cache_write_per_mtok,
            )?,
            tiers: p
                .tiers
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok(Tier {
                        above_input_tokens: t.above_input_tokens,
                        prices: tokens(
                            &format!("tiers[{i}]."),
                            &t.input_per_mtok,
                            &t.output_per_mtok,
                            &t.cached_input_per_mtok,
                            &t.cache_write_per_mtok,
                        )?,
                    })
                })
                .collect::<Result<_, ValidationError>>()?,
            per_request: decimal("per_request", &p.per_request)?,
            per_image,
            per_audio_second: decimal("per_audio_second", &p.per_audio_second)?,
            per_mchar: decimal("per_mchar", &p.per_mchar)?,
        }
        .check()
    }
}

/// Shown as decimal strings; a zero price is an empty string, so a sheet
/// of flat token prices shows nothing else.
pub fn sheet_pb(s: &PriceSheet) -> pb::PriceSheet {
    let text = |a: Amount| {
        if a.is_zero() {
            String::new()
        } else {
            a.to_string()
        }
    };
    pb::PriceSheet {
        input_per_mtok: s.tokens.input.to_string(),
        output_per_mtok: s.tokens.output.to_string(),
        cached_input_per_mtok: text(s.tokens.cached_input),
        cache_write_per_mtok: text(s.tokens.cache_write),
        tiers: s
            .tiers
            .iter()
            .map(|t| pb::PriceTier {
                above_input_tokens: t.above_input_tokens,
                input_per_mtok: t.prices.input.to_string(),
                output_per_mtok: t.prices.output.to_string(),
                cached_input_per_mtok: text(t.prices.cached_input),
                cache_write_per_mtok: text(t.prices.cache_write),
            })
            .collect(),
        per_request: text(s.per_request),
        per_image: s
            .per_image
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        per_audio_second: text(s.per_audio_second),
        per_mchar: text(s.per_mchar),
    }
}

/// The API's `Prices`: the approximate `f64` token prices for older
/// readers, and the exact sheet.
pub fn prices_pb(s: &PriceSheet) -> pb::Prices {
    pb::Prices {
        input_per_mtok: s.tokens.input.to_f64(),
        output_per_mtok: s.tokens.output.to_f64(),
        cached_input_per_mtok: s.tokens.cached_input.to_f64(),
        cache_write_per_mtok: s.tokens.cache_write.to_f64(),
        sheet: Some(sheet_pb(s)),
    }
}

/// The API's `Prices`: its sheet when it has one, else its `f64` token
/// prices (a client older than exact prices).
///
/// With both, a non-zero `f64` price must be the sheet's (as shown, its
/// nearest `f64`): an exported file whose `f64` prices were edited and
/// its sheet not is refused rather than applied without the edit.
pub fn from_prices_pb(p: &pb::Prices) -> Result<PriceSheet, ValidationError> {
    let Some(s) = &p.sheet else {
        return sheet_from_legacy(p);
    };
    let sheet = PriceSheet::try_from(s)?;
    let t = &sheet.tokens;
    for (field, given, exact) in [
        ("input_per_mtok", p.input_per_mtok, t.input),
        ("output_per_mtok", p.output_per_mtok, t.output),
        (
            "cached_input_per_mtok",
            p.cached_input_per_mtok,
            t.cached_input,
        ),
        (
            "cache_write_per_mtok",
            p.cache_write_per_mtok,
            t.cache_write,
        ),
    ] {
        if given != 0.0 && given != exact.to_f64() {
            return Err(ValidationError(format!(
                "{field} {given} disagrees with sheet.{field} '{exact}'; change the sheet's \
                 price (the exact one), and leave out or match the number"
            )));
        }
    }
    Ok(sheet)
}

/// The flat token prices of an older peer, each rounded to the nearest
/// nano-dollar.
pub fn sheet_from_legacy(p: &pb::Prices) -> Result<PriceSheet, ValidationError> {
    let f = |field: &str, v: f64| Amount::from_f64(v).map_err(named(field));
    Ok(PriceSheet::flat(TokenPrices {
        input: f("input_per_mtok", p.input_per_mtok)?,
        output: f("output_per_mtok", p.output_per_mtok)?,
        cached_input: f("cached_input_per_mtok", p.cached_input_per_mtok)?,
        cache_write: f("cache_write_per_mtok", p.cache_write_per_mtok)?,
    }))
}

impl TryFrom<&pb::ExactPrices> for PriceSheet {
    type Error = ValidationError;

    /// Prices from a snapshot, in nano-dollars.
    fn try_from(p: &pb::ExactPrices) -> Result<Self, Self::Error> {
        let tokens = |prefix: &str, i: i64, o: i64, c: i64, w: i64| {
            Ok::<_, ValidationError>(TokenPrices {
                input: nanos(&format!("{prefix}input_per_mtok"), i)?,
                output: nanos(&format!("{prefix}output_per_mtok"), o)?,
                cached_input: nanos(&format!("{prefix}cached_input_per_mtok"), c)?,
                cache_write: nanos(&format!("{prefix}cache_write_per_mtok"), w)?,
            })
        };
        let mut per_image = std::collections::BTreeMap::new();
        for (k, v) in &p.per_image {
            per_image.insert(k.clone(), nanos(&format!("per_image[{k}]"), *v)?);
        }
        PriceSheet {
            tokens: tokens(
                "",
                p.input_per_mtok,
                p.output_per_mtok,
                p.cached_input_per_mtok,
                p.cache_write_per_mtok,
            )?,
            tiers: p
                .tiers
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok(Tier {
                        above_input_tokens: t.above_input_tokens,
                        prices: tokens(
                            &format!("tiers[{i}]."),
                            t.input_per_mtok,
                            t.output_per_mtok,
                            t.cached_input_per_mtok,
                            t.cache_write_per_mtok,
                        )?,
                    })
                })
                .collect::<Result<_, ValidationError>>()?,
            per_request: nanos("per_request", p.per_request)?,
            per_image,
            per_audio_second: nanos("per_audio_second", p.per_audio_second)?,
            per_mchar: nanos("per_mchar", p.per_mchar)?,
        }
        .check()
    }
}

/// A sheet as a snapshot carries it, in nano-dollars.
pub fn exact_pb(s: &PriceSheet) -> pb::ExactPrices {
    pb::ExactPrices {
        input_per_mtok: s.tokens.input.nanos(),
        output_per_mtok: s.tokens.output.nanos(),
        cached_input_per_mtok: s.tokens.cached_input.nanos(),
        cache_write_per_mtok: s.tokens.cache_write.nanos(),
        tiers: s
            .tiers
            .iter()
            .map(|t| pb::ExactPriceTier {
                above_input_tokens: t.above_input_tokens,
                input_per_mtok: t.prices.input.nanos(),
                output_per_mtok: t.prices.output.nanos(),
                cached_input_per_mtok: t.prices.cached_input.nanos(),
                cache_write_per_mtok: t.prices.cache_write.nanos(),
            })
            .collect(),
        per_request: s.per_request.nanos(),
        per_image: s
            .per_image
            .iter()
            .map(|(k, v)| (k.clone(), v.nanos()))
            .collect(),
        per_audio_second: s.per_audio_second.nanos(),
        per_mchar: s.per_mchar.nanos(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PriceSheet {
        PriceSheet {
            tokens: TokenPrices {
                input: "2.5".parse().unwrap(),
                output: "10".parse().unwrap(),
                cached_input: "1.25".parse().unwrap(),
                cache_write: Amount::ZERO,
            },
            tiers: vec![Tier {
                above_input_tokens: 200_000,
                prices: TokenPrices {
                    input: "5".parse().unwrap(),
                    output: "15".parse().unwrap(),
                    cached_input: "0.5".parse().unwrap(),
                    cache_write: "6.25".parse().unwrap(),
                },
            }],
            per_request: "0.001".parse().unwrap(),
            per_image: [("1024x1024/high".to_string(), "0.167".parse().unwrap())].into(),
            per_audio_second: "0.0001".parse().unwrap(),
            per_mchar: "15".parse().unwrap(),
        }
    }

    #[test]
    fn both_wire_forms_round_trip() {
        let s = sample();
        assert_eq!(PriceSheet::try_from(&sheet_pb(&s)).unwrap(), s);
        assert_eq!(PriceSheet::try_from(&exact_pb(&s)).unwrap(), s);
        assert_eq!(from_prices_pb(&prices_pb(&s)).unwrap(), s);
        assert_eq!(prices_pb(&s).input_per_mtok, 2.5);
        assert_eq!(sheet_pb(&s).cache_write_per_mtok, "");
    }

    #[test]
    fn an_older_peers_prices_are_its_flat_token_prices() {
        let p = pb::Prices {
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
            cached_input_per_mtok: 0.15,
            cache_write_per_mtok: 0.0,
            sheet: None,
        };
        let s = from_prices_pb(&p).unwrap();
        assert_eq!(s.tokens.cached_input.nanos(), 150_000_000);
        assert_eq!(s, PriceSheet::flat(s.tokens));
        let bad = pb::Prices {
            output_per_mtok: -1.0,
            ..p
        };
        assert!(from_prices_pb(&bad)
            .unwrap_err()
            .0
            .starts_with("output_per_mtok: "));
    }

    #[test]
    fn f64_prices_beside_a_sheet_must_agree_with_it() {
        let mut p = prices_pb(&sample());
        assert!(from_prices_pb(&p).is_ok());
        // Left out (0) is fine: the sheet is the price.
        p.output_per_mtok = 0.0;
        assert!(from_prices_pb(&p).is_ok());
        p.input_per_mtok = 3.0;
        let e = from_prices_pb(&p).unwrap_err();
        assert!(
            e.0.starts_with("input_per_mtok 3 disagrees with sheet.input_per_mtok '2.5'"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut p = sheet_pb(&sample());
        p.tiers[0].output_per_mtok = "-3".into();
        let e = PriceSheet::try_from(&p).unwrap_err();
        assert!(e.0.starts_with("tiers[0].output_per_mtok: "), "{e}");
        let mut x = exact_pb(&sample());
        x.per_image.insert("*".into(), -1);
        let e = PriceSheet::try_from(&x).unwrap_err();
        assert!(e.0.starts_with("per_image[*]: "), "{e}");
        let mut x = exact_pb(&sample());
        x.per_mchar = i64::MAX;
        let e = PriceSheet::try_from(&x).unwrap_err();
        assert!(e.0.starts_with("per_mchar: "), "{e}");
        let mut p = sheet_pb(&sample());
        p.per_request = "0.0000000005".into();
        let e = PriceSheet::try_from(&p).unwrap_err();
        assert!(e.0.contains("more than 9 decimal places"), "{e}");
    }
}
