//! Prices on the wire: decimal strings of US dollars in the admin API and
//! exported files (`pb::PriceSheet`), nano-dollars in the snapshot
//! (`pb::ExactPrices`), and the `f64` prices of older peers (`pb::Prices`
//! fields 1-4). Each is checked into a [`PriceSheet`] with errors naming
//! the field. The two sheet messages have the same fields, one with
//! decimal strings and one with integers: both are read and written by
//! one generic conversion over their amount type (`Fields`, `WireAmount`),
//! bridged to each message by the `wire_form!` macro.

use llmgw_proto::v1 as pb;

use super::{Amount, PriceSheet, Tier, TokenPrices};
use crate::validate::ValidationError;

fn named(field: &str) -> impl Fn(ValidationError) -> ValidationError + '_ {
    move |e| ValidationError(format!("{field}: {}", e.0))
}

/// An amount in one of the wire forms: a decimal string (empty is 0), or
/// nano-dollars.
trait WireAmount {
    fn amount(&self, field: &str) -> Result<Amount, ValidationError>;
}

impl WireAmount for String {
    fn amount(&self, field: &str) -> Result<Amount, ValidationError> {
        if self.trim().is_empty() {
            return Ok(Amount::ZERO);
        }
        self.parse().map_err(named(field))
    }
}

impl WireAmount for i64 {
    fn amount(&self, field: &str) -> Result<Amount, ValidationError> {
        Amount::from_nanos(*self).map_err(named(field))
    }
}

/// A price sheet's fields in a wire form whose amounts are `A`: the
/// decimal strings of `pb::PriceSheet` or the nano-dollars of
/// `pb::ExactPrices`, which have the same fields. Both forms are read
/// and written through it, so they cannot drift apart.
struct Fields<A> {
    /// Input, output, cached input, cache write.
    tokens: [A; 4],
    /// By threshold.
    tiers: Vec<(u64, [A; 4])>,
    per_request: A,
    per_image: Vec<(String, A)>,
    per_audio_second: A,
    per_mchar: A,
}

const TOKEN_FIELDS: [&str; 4] = [
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
];

impl<A: WireAmount> Fields<&A> {
    /// The sheet, checked, with errors naming the field.
    fn read(self) -> Result<PriceSheet, ValidationError> {
        let tokens = |prefix: &str, [i, o, c, w]: [&A; 4]| {
            let field = |n: usize| format!("{prefix}{}", TOKEN_FIELDS[n]);
            Ok::<_, ValidationError>(TokenPrices {
                input: i.amount(&field(0))?,
                output: o.amount(&field(1))?,
                cached_input: c.amount(&field(2))?,
                cache_write: w.amount(&field(3))?,
            })
        };
        let mut per_image = std::collections::BTreeMap::new();
        for (k, v) in self.per_image {
            let price = v.amount(&format!("per_image[{k}]"))?;
            per_image.insert(k, price);
        }
        PriceSheet {
            tokens: tokens("", self.tokens)?,
            tiers: self
                .tiers
                .into_iter()
                .enumerate()
                .map(|(i, (above, t))| {
                    Ok(Tier {
                        above_input_tokens: above,
                        prices: tokens(&format!("tiers[{i}]."), t)?,
                    })
                })
                .collect::<Result<_, ValidationError>>()?,
            per_request: self.per_request.amount("per_request")?,
            per_image,
            per_audio_second: self.per_audio_second.amount("per_audio_second")?,
            per_mchar: self.per_mchar.amount("per_mchar")?,
        }
        .check()
    }
}

impl<A> Fields<A> {
    /// A sheet's fields, each amount as `wire` writes it; `wire`'s flag
    /// says whether the amount is one that may be left out when 0 (all
    /// but the input and output token prices).
    fn of(s: &PriceSheet, wire: impl Fn(Amount, bool) -> A) -> Fields<A> {
        let tokens = |t: &TokenPrices| {
            [
                wire(t.input, false),
                wire(t.output, false),
                wire(t.cached_input, true),
                wire(t.cache_write, true),
            ]
        };
        Fields {
            tokens: tokens(&s.tokens),
            tiers: s
                .tiers
                .iter()
                .map(|t| (t.above_input_tokens, tokens(&t.prices)))
                .collect(),
            per_request: wire(s.per_request, true),
            per_image: s
                .per_image
                .iter()
                .map(|(k, v)| (k.clone(), wire(*v, false)))
                .collect(),
            per_audio_second: wire(s.per_audio_second, true),
            per_mchar: wire(s.per_mchar, true),
        }
    }
}

/// A wire message of a price sheet, whose amounts are `Amount`.
trait WireSheet {
    type Amount: WireAmount;
    fn fields(&self) -> Fields<&Self::Amount>;
    fn from_fields(f: Fields<Self::Amount>) -> Self;
}

/// [`WireSheet`] for a message (`$sheet`, with tiers `$tier`) of
/// `$amount`s; both messages have the same field names.
macro_rules! wire_form {
    ($sheet:ty, $tier:ident, $amount:ty) => {
        impl WireSheet for $sheet {
            type Amount = $amount;

            fn fields(&self) -> Fields<&$amount> {
                Fields {
                    tokens: [
                        &self.input_per_mtok,
                        &self.output_per_mtok,
                        &self.cached_input_per_mtok,
                        &self.cache_write_per_mtok,
                    ],
                    tiers: self
                        .tiers
                        .iter()
                        .map(|t| {
                            let prices = [
                                &t.input_per_mtok,
                                &t.output_per_mtok,
                                &t.cached_input_per_mtok,
                                &t.cache_write_per_mtok,
                            ];
                            (t.above_input_tokens, prices)
                        })
                        .collect(),
                    per_request: &self.per_request,
                    per_image: self.per_image.iter().map(|(k, v)| (k.clone(), v)).collect(),
                    per_audio_second: &self.per_audio_second,
                    per_mchar: &self.per_mchar,
                }
            }

            fn from_fields(f: Fields<$amount>) -> Self {
                let [input_per_mtok, output_per_mtok, cached_input_per_mtok, cache_write_per_mtok] =
                    f.tokens;
                Self {
                    input_per_mtok,
                    output_per_mtok,
                    cached_input_per_mtok,
                    cache_write_per_mtok,
                    tiers: f
                        .tiers
                        .into_iter()
                        .map(|(above, [i, o, c, w])| pb::$tier {
                            above_input_tokens: above,
                            input_per_mtok: i,
                            output_per_mtok: o,
                            cached_input_per_mtok: c,
                            cache_write_per_mtok: w,
                        })
                        .collect(),
                    per_request: f.per_request,
                    per_image: f.per_image.into_iter().collect(),
                    per_audio_second: f.per_audio_second,
                    per_mchar: f.per_mchar,
                }
            }
        }

        impl TryFrom<&$sheet> for PriceSheet {
            type Error = ValidationError;

            /// Checked, with errors naming the field.
            fn try_from(p: &$sheet) -> Result<Self, Self::Error> {
                p.fields().read()
            }
        }
    };
}

// Prices from the admin API or a file, as decimal strings.
wire_form!(pb::PriceSheet, PriceTier, String);
// Prices from a snapshot, in nano-dollars.
wire_form!(pb::ExactPrices, ExactPriceTier, i64);

/// Shown as decimal strings; a zero price that may be left out is an
/// empty string, so a sheet of flat token prices shows nothing else.
pub fn sheet_pb(s: &PriceSheet) -> pb::PriceSheet {
    pb::PriceSheet::from_fields(Fields::of(s, |a, optional| {
        if optional && a.is_zero() {
            String::new()
        } else {
            a.to_string()
        }
    }))
}

/// A sheet as a snapshot carries it, in nano-dollars.
pub fn exact_pb(s: &PriceSheet) -> pb::ExactPrices {
    pb::ExactPrices::from_fields(Fields::of(s, |a, _| a.nanos()))
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
