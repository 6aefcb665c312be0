//! Prices and the exact cost of a request (#16). A price is a decimal
//! amount of US dollars held as an integer number of nano-dollars
//! ([`Amount`]); a model's (or a target's) [`PriceSheet`] has every billing
//! mode: tokens at a flat price or by input-size tier, cache reads and
//! writes, a fixed amount per request, images by size and quality, seconds
//! of audio and characters. [`PriceSheet::cost`] charges a request's
//! [`Metered`] usage with integer arithmetic only, and rounds once: the sum
//! of every charge, in femto-dollars (1e-15 USD), is rounded half up to
//! whole nano-dollars. A [`PriceSchedule`] picks the sheet in effect at a
//! time. No floating point is on the cost path; `f64` appears only to read
//! and write the approximate prices of older peers.
//!
//! The wire forms (decimal strings in the admin API, nano-dollars in the
//! snapshot) are in `price/wire.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::validate::ValidationError;

mod wire;

pub use wire::{exact_pb, from_prices_pb, prices_pb, sheet_from_legacy, sheet_pb};

/// Nano-dollars in one US dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// The largest price: one billion US dollars (10^18 nano-dollars) per
/// unit. It keeps every product of a price and a count inside `u128`
/// before the sum saturates.
pub const MAX_NANOS: i64 = 1_000_000_000 * NANOS_PER_USD;

/// Decimal places a price may have: nano-dollars are exact.
pub const DECIMALS: usize = 9;

/// The most tiers a sheet may have.
pub const MAX_TIERS: usize = 16;

/// The most per-image prices a sheet may have.
pub const MAX_IMAGE_PRICES: usize = 64;

/// Femto-dollars (the unit charges are summed in) per nano-dollar.
const FEMTO_PER_NANO: u128 = 1_000_000;

/// An amount of US dollars, exact to the nano-dollar: at least 0 and at
/// most [`MAX_NANOS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// An amount of nano-dollars; negative or above [`MAX_NANOS`] is
    /// refused.
    pub fn from_nanos(nanos: i64) -> Result<Amount, ValidationError> {
        if nanos < 0 {
            return Err(ValidationError(format!(
                "{nanos} nano-dollars is negative; a price must be at least 0"
            )));
        }
        if nanos > MAX_NANOS {
            return Err(ValidationError(format!(
                "{nanos} nano-dollars is more than the largest price, 1000000000 US dollars"
            )));
        }
        Ok(Amount(nanos))
    }

    /// A price given as an `f64` by an older peer: rounded to the nearest
    /// nano-dollar (2.5 is exactly 2500000000; 0.15, which `f64` cannot
    /// hold, becomes 150000000).
    pub fn from_f64(usd: f64) -> Result<Amount, ValidationError> {
        if !usd.is_finite() || usd < 0.0 {
            return Err(ValidationError(format!(
                "{usd} is not a price: a price must be a finite number of at least 0"
            )));
        }
        let nanos = (usd * NANOS_PER_USD as f64).round();
        if nanos > MAX_NANOS as f64 {
            return Err(ValidationError(format!(
                "{usd} is more than the largest price, 1000000000 US dollars"
            )));
        }
        // In range and whole: the conversion is exact.
        Amount::from_nanos(nanos as i64)
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The nearest `f64`, for older readers only.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD as f64
    }
}

impl FromStr for Amount {
    type Err = ValidationError;

    /// A decimal number of US dollars: digits with at most one `.`, at
    /// most [`DECIMALS`] places (more are accepted only when they are
    /// zeros), no sign, exponent or separators; surrounding spaces are
    /// ignored. Exact: "0.1" is 100000000 nano-dollars.
    fn from_str(text: &str) -> Result<Amount, ValidationError> {
        let s = text.trim();
        let bad = |why: &str| ValidationError(format!("price '{text}' {why}"));
        if s.starts_with('-') {
            return Err(bad("is negative; a price must be at least 0"));
        }
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad("is not a decimal number"));
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(bad(
                "is not a decimal number (digits and one '.', e.g. 2.50)",
            ));
        }
        let (kept, rest) = frac.split_at(frac.len().min(DECIMALS));
        if rest.bytes().any(|b| b != b'0') {
            return Err(bad(
                "has more than 9 decimal places; prices are exact to the nano-dollar",
            ));
        }
        let whole = whole.trim_start_matches('0');
        let too_big = || bad("is more than the largest price, 1000000000 US dollars");
        if whole.len() > 10 {
            return Err(too_big());
        }
        let units: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_big())?
        };
        let mut nanos_frac: i64 = 0;
        for (i, b) in kept.bytes().enumerate() {
            nanos_frac += i64::from(b - b'0') * 10i64.pow((DECIMALS - 1 - i) as u32);
        }
        let nanos = units
            .checked_mul(NANOS_PER_USD)
            .and_then(|n| n.checked_add(nanos_frac))
            .ok_or_else(too_big)?;
        Amount::from_nanos(nanos).map_err(|_| too_big())
    }
}

impl fmt::Display for Amount {
    /// The shortest exact decimal: "2.5", "10", "0.000000001".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (units, nanos) = (self.0 / NANOS_PER_USD, self.0 % NANOS_PER_USD);
        if nanos == 0 {
            return write!(f, "{units}");
        }
        let frac = format!("{nanos:09}");
        write!(f, "{units}.{}", frac.trim_end_matches('0'))
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: ValidationError| serde::de::Error::custom(e.0))
    }
}

/// Token prices, each per one million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TokenPrices {
    /// Uncached input.
    pub input: Amount,
    /// Output, reasoning included.
    pub output: Amount,
    /// Input read from a prompt cache.
    pub cached_input: Amount,
    /// Input written to a prompt cache; 0 charges it at the input price,
    /// so a model priced before this price existed costs what it did.
    pub cache_write: Amount,
}

impl TokenPrices {
    /// The cache-write price: its own, else the input price.
    pub fn cache_write_or_input(&self) -> Amount {
        if self.cache_write.is_zero() {
            self.input
        } else {
            self.cache_write
        }
    }

    fn is_zero(&self) -> bool {
        *self == TokenPrices::default()
    }
}

/// Token prices for requests whose input is above a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tier {
    /// The tier applies when the request's input tokens are strictly more.
    pub above_input_tokens: u64,
    pub prices: TokenPrices,
}

/// Every price of a model or a target. All modes that are set are charged
/// and add up.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PriceSheet {
    /// Token prices up to the first tier's threshold.
    pub tokens: TokenPrices,
    /// By ascending threshold, each distinct (see [`PriceSheet::check`]).
    pub tiers: Vec<Tier>,
    pub per_request: Amount,
    /// By "SIZE/QUALITY", "SIZE", "*/QUALITY" or "*".
    pub per_image: BTreeMap<String, Amount>,
    pub per_audio_second: Amount,
    /// Per one million characters.
    pub per_mchar: Amount,
}

/// What a request used, as it is charged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metered<'a> {
    /// Uncached input tokens.
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Audio, in or out (speech, transcription).
    pub audio_milliseconds: u64,
    /// Characters of speech input.
    pub characters: u64,
    pub images: u32,
    /// An image request's size ("1024x1024").
    pub image_size: Option<&'a str>,
    /// An image request's quality ("high").
    pub image_quality: Option<&'a str>,
    /// The request's input size that picks the token tier; `None` means
    /// its input tokens: uncached + cache reads + cache writes (as
    /// Anthropic and Gemini count a long-context request).
    pub tier_input_tokens: Option<u64>,
}

impl Metered<'_> {
    /// The input size the tier is chosen by.
    pub fn tier_input(&self) -> u64 {
        self.tier_input_tokens.unwrap_or_else(|| {
            self.input_tokens
                .saturating_add(self.cache_read_tokens)
                .saturating_add(self.cache_write_tokens)
        })
    }
}

impl PriceSheet {
    /// A sheet of flat token prices only.
    pub fn flat(tokens: TokenPrices) -> PriceSheet {
        PriceSheet {
            tokens,
            ..PriceSheet::default()
        }
    }

    /// Sorts the tiers by threshold and checks the sheet: distinct
    /// thresholds above 0, at most [`MAX_TIERS`] tiers and
    /// [`MAX_IMAGE_PRICES`] image prices, and image keys of the forms the
    /// lookup knows. Errors name the field.
    pub fn check(mut self) -> Result<PriceSheet, ValidationError> {
        if self.tiers.len() > MAX_TIERS {
            return Err(ValidationError(format!(
                "tiers: {} tiers; the limit is {MAX_TIERS}",
                self.tiers.len()
            )));
        }
        self.tiers.sort_by_key(|t| t.above_input_tokens);
        for (i, pair) in self.tiers.windows(2).enumerate() {
            if pair[0].above_input_tokens == pair[1].above_input_tokens {
                return Err(ValidationError(format!(
                    "tiers[{}]: threshold {} is given twice",
                    i + 1,
                    pair[1].above_input_tokens
                )));
            }
        }
        if let Some(t) = self.tiers.first() {
            if t.above_input_tokens == 0 {
                return Err(ValidationError(
                    "tiers[0]: a tier's threshold must be at least 1 input token".into(),
                ));
            }
        }
        if self.per_image.len() > MAX_IMAGE_PRICES {
            return Err(ValidationError(format!(
                "per_image: {} prices; the limit is {MAX_IMAGE_PRICES}",
                self.per_image.len()
            )));
        }
        for key in self.per_image.keys() {
            image_key(key).map_err(|e| ValidationError(format!("per_image: {}", e.0)))?;
        }
        Ok(self)
    }

    /// Whether anything is charged at all: a sheet of zeros is "no
    /// prices", an unknown cost rather than a free one.
    pub fn is_priced(&self) -> bool {
        !self.tokens.is_zero()
            || !self.tiers.is_empty()
            || !self.per_request.is_zero()
            || !self.per_image.is_empty()
            || !self.per_audio_second.is_zero()
            || !self.per_mchar.is_zero()
    }

    /// The token prices for a request of `input_tokens`: the tier with
    /// the highest threshold strictly below it, else the base prices.
    pub fn tokens_for(&self, input_tokens: u64) -> &TokenPrices {
        self.tiers
            .iter()
            .rev()
            .find(|t| input_tokens > t.above_input_tokens)
            .map_or(&self.tokens, |t| &t.prices)
    }

    /// The price of one image: by "SIZE/QUALITY", else "SIZE", else
    /// "*/QUALITY", else "*"; 0 when none matches.
    pub fn image_price(&self, size: Option<&str>, quality: Option<&str>) -> Amount {
        let mut keys: Vec<String> = Vec::with_capacity(4);
        if let Some(s) = size {
            if let Some(q) = quality {
                keys.push(format!("{s}/{q}"));
            }
            keys.push(s.to_string());
        }
        if let Some(q) = quality {
            keys.push(format!("*/{q}"));
        }
        keys.push("*".to_string());
        keys.iter()
            .find_map(|k| self.per_image.get(k).copied())
            .unwrap_or(Amount::ZERO)
    }

    /// The cost of a request in nano-dollars: each charge in femto-dollars
    /// (a price per million units times a count is exact there; so are
    /// per-second prices times milliseconds), summed, and rounded half up
    /// to whole nano-dollars once. Saturates at `i64::MAX` nano-dollars
    /// (about 9.2 billion US dollars) instead of overflowing.
    pub fn cost(&self, m: &Metered<'_>) -> i64 {
        let t = self.tokens_for(m.tier_input());
        let per_million = |count: u64, price: Amount| -> u128 {
            u128::from(count).saturating_mul(price.0 as u128)
        };
        let per_unit = |count: u64, price: Amount| -> u128 {
            u128::from(count)
                .saturating_mul(price.0 as u128)
                .saturating_mul(FEMTO_PER_NANO)
        };
        let femto = [
            per_million(m.input_tokens, t.input),
            per_million(m.cache_read_tokens, t.cached_input),
            per_million(m.cache_write_tokens, t.cache_write_or_input()),
            per_million(m.output_tokens, t.output),
            per_unit(1, self.per_request),
            if m.images == 0 || self.per_image.is_empty() {
                0
            } else {
                per_unit(
                    u64::from(m.images),
                    self.image_price(m.image_size, m.image_quality),
                )
            },
            // Nano-dollars per second times milliseconds is 1e-12 USD;
            // times 1000 it is femto-dollars.
            u128::from(m.audio_milliseconds)
                .saturating_mul(self.per_audio_second.0 as u128)
                .saturating_mul(1000),
            per_million(m.characters, self.per_mchar),
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add);
        let nanos = femto.saturating_add(FEMTO_PER_NANO / 2) / FEMTO_PER_NANO;
        i64::try_from(nanos).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for TokenPrices {
    /// "INPUT/OUTPUT[/CACHED[/WRITE]]", US dollars per 1M tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.input, self.output)?;
        if !self.cached_input.is_zero() || !self.cache_write.is_zero() {
            write!(f, "/{}", self.cached_input)?;
        }
        if !self.cache_write.is_zero() {
            write!(f, "/{}", self.cache_write)?;
        }
        Ok(())
    }
}

impl fmt::Display for PriceSheet {
    /// One line with every mode that is set: "2.5/10, above 200000:
    /// 5/15, per request 0.001, image 1024x1024/high 0.167, per second
    /// 0.0001, per 1M chars 15" (US dollars; token prices per 1M tokens as
    /// INPUT/OUTPUT[/CACHED[/WRITE]]); "none" when nothing is priced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_priced() {
            return f.write_str("none");
        }
        let mut parts = vec![self.tokens.to_string()];
        for t in &self.tiers {
            parts.push(format!("above {}: {}", t.above_input_tokens, t.prices));
        }
        if !self.per_request.is_zero() {
            parts.push(format!("per request {}", self.per_request));
        }
        for (k, v) in &self.per_image {
            parts.push(format!("image {k} {v}"));
        }
        if !self.per_audio_second.is_zero() {
            parts.push(format!("per second {}", self.per_audio_second));
        }
        if !self.per_mchar.is_zero() {
            parts.push(format!("per 1M chars {}", self.per_mchar));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Checks a per-image key: "*", "SIZE", "SIZE/QUALITY" or "*/QUALITY",
/// each part 1 to 64 visible ASCII characters without '/'.
pub fn image_key(key: &str) -> Result<(), ValidationError> {
    let part_ok = |p: &str| {
        !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    };
    let ok = match key.split_once('/') {
        None => part_ok(key),
        Some((size, quality)) => part_ok(size) && part_ok(quality) && quality != "*",
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError(format!(
            "image price key '{key}' is not SIZE/QUALITY, SIZE, */QUALITY or *"
        )))
    }
}

/// The prices of one model or target over time: a sheet in effect now and
/// changes scheduled later.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceSchedule {
    now: Arc<PriceSheet>,
    /// By ascending time (Unix milliseconds).
    later: Vec<(i64, Arc<PriceSheet>)>,
}

impl PriceSchedule {
    /// The same prices at every time.
    pub fn fixed(sheet: PriceSheet) -> PriceSchedule {
        PriceSchedule {
            now: Arc::new(sheet),
            later: Vec::new(),
        }
    }

    /// `now` until the first change, each change from its time on.
    pub fn new(now: PriceSheet, mut later: Vec<(i64, PriceSheet)>) -> PriceSchedule {
        later.sort_by_key(|(from, _)| *from);
        PriceSchedule {
            now: Arc::new(now),
            later: later.into_iter().map(|(t, s)| (t, Arc::new(s))).collect(),
        }
    }

    /// The sheet in effect at `now_ms`: the latest change whose time has
    /// come, else the first sheet.
    pub fn at(&self, now_ms: i64) -> &PriceSheet {
        self.later
            .iter()
            .rev()
            .find(|(from, _)| *from <= now_ms)
            .map_or(&self.now, |(_, s)| s)
    }

    /// [`PriceSchedule::at`], shared (for a record finished later).
    pub fn at_shared(&self, now_ms: i64) -> Arc<PriceSheet> {
        self.later
            .iter()
            .rev()
            .find(|(from, _)| *from <= now_ms)
            .map_or(&self.now, |(_, s)| s)
            .clone()
    }

    /// The sheet the schedule starts with.
    pub fn first(&self) -> &PriceSheet {
        &self.now
    }

    /// The scheduled changes, by time.
    pub fn later(&self) -> impl Iterator<Item = (i64, &PriceSheet)> {
        self.later.iter().map(|(t, s)| (*t, s.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Amount {
        s.parse().unwrap()
    }

    fn tokens(input: &str, output: &str, cached: &str, write: &str) -> TokenPrices {
        TokenPrices {
            input: usd(input),
            output: usd(output),
            cached_input: usd(cached),
            cache_write: usd(write),
        }
    }

    #[test]
    fn decimal_strings_parse_exactly() {
        for (text, nanos) in [
            ("0", 0),
            ("2.5", 2_500_000_000),
            ("2.50", 2_500_000_000),
            ("10", 10_000_000_000),
            (" 0.1 ", 100_000_000),
            (".5", 500_000_000),
            ("3.", 3_000_000_000),
            ("0.000000001", 1),
            ("0.1234567890000", 123_456_789),
            ("1000000000", MAX_NANOS),
            ("0001.25", 1_250_000_000),
        ] {
            assert_eq!(usd(text).nanos(), nanos, "{text}");
        }
        for (text, says) in [
            ("-1", "is negative"),
            ("-0.5", "is negative"),
            ("0.0000000001", "more than 9 decimal places"),
            ("1.1234567891", "more than 9 decimal places"),
            ("1e3", "not a decimal number"),
            ("", "not a decimal number"),
            (".", "not a decimal number"),
            ("1.2.3", "not a decimal number"),
            ("+1", "not a decimal number"),
            ("1,5", "not a decimal number"),
            ("NaN", "not a decimal number"),
            ("1000000000.000000001", "more than the largest price"),
            ("99999999999999999999999", "more than the largest price"),
        ] {
            let e = text.parse::<Amount>().unwrap_err();
            assert!(e.0.contains(says), "{text}: {e}");
            assert!(e.0.contains(&format!("'{text}'")), "{text}: {e}");
        }
    }

    #[test]
    fn amounts_print_as_the_shortest_exact_decimal() {
        for text in ["0", "2.5", "10", "0.000000001", "1000000000", "0.15"] {
            assert_eq!(usd(text).to_string(), text);
            assert_eq!(usd(&usd(text).to_string()), usd(text));
        }
        assert_eq!(usd("2.50").to_string(), "2.5");
        let json = serde_json::to_string(&usd("0.125")).unwrap();
        assert_eq!(json, "\"0.125\"");
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), usd("0.125"));
        assert!(serde_json::from_str::<Amount>("\"-1\"").is_err());
    }

    #[test]
    fn older_peers_f64_prices_round_to_the_nearest_nano_dollar() {
        assert_eq!(Amount::from_f64(2.5).unwrap().nanos(), 2_500_000_000);
        assert_eq!(Amount::from_f64(0.15).unwrap().nanos(), 150_000_000);
        assert_eq!(Amount::from_f64(0.1 + 0.2).unwrap().nanos(), 300_000_000);
        assert_eq!(Amount::from_f64(0.0000000004).unwrap().nanos(), 0);
        for bad in [-0.01, f64::NAN, f64::INFINITY, 2e9] {
            assert!(Amount::from_f64(bad).is_err(), "{bad}");
        }
        assert!(Amount::from_nanos(-1).is_err());
        assert!(Amount::from_nanos(MAX_NANOS + 1).is_err());
    }

    #[test]
    fn flat_token_prices_and_cache_reads_and_writes() {
        let s = PriceSheet::flat(tokens("2", "10", "1", "0"));
        let m = Metered {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 500_000,
            ..Default::default()
        };
        // 2 + 1 + 0.5 USD.
        assert_eq!(s.cost(&m), 3_500_000_000);
        // Cache writes at the input price unless they have their own.
        let w = Metered {
            cache_write_tokens: 1_000_000,
            ..Default::default()
        };
        assert_eq!(s.cost(&w), 2_000_000_000);
        let own = PriceSheet::flat(tokens("2", "10", "1", "2.5"));
        assert_eq!(own.cost(&w), 2_500_000_000);
        assert_eq!(PriceSheet::default().cost(&m), 0);
    }

    fn tiered() -> PriceSheet {
        PriceSheet {
            tokens: tokens("3", "15", "0.3", "3.75"),
            tiers: vec![
                Tier {
                    above_input_tokens: 1_000_000,
                    prices: tokens("10", "40", "1", "0"),
                },
                Tier {
                    above_input_tokens: 200_000,
                    prices: tokens("6", "22.5", "0.6", "7.5"),
                },
            ],
            ..Default::default()
        }
        .check()
        .unwrap()
    }

    #[test]
    fn the_tier_is_chosen_by_the_whole_input_strictly_above_its_threshold() {
        let s = tiered();
        assert_eq!(s.tiers[0].above_input_tokens, 200_000, "sorted");
        let at = |input, read, write| Metered {
            input_tokens: input,
            cache_read_tokens: read,
            cache_write_tokens: write,
            output_tokens: 1000,
            ..Default::default()
        };
        // Exactly at the threshold: the base prices.
        // 200000 × 3 + 1000 × 15 = 615000 USD-per-million = 0.615 USD.
        assert_eq!(s.cost(&at(200_000, 0, 0)), 615_000_000);
        // One token above: the tier, for every token of the request.
        // 200001 × 6 + 1000 × 22.5 = 1222506 → 1.222506 USD.
        assert_eq!(s.cost(&at(200_001, 0, 0)), 1_222_506_000);
        // Cache reads and writes count toward the threshold and are
        // charged at the tier's cache prices.
        // 100000 × 6 + 60000 × 0.6 + 40001 × 7.5 + 1000 × 22.5
        //   = 600000 + 36000 + 300007.5 + 22500 = 958507.5 → 0.9585075 USD.
        assert_eq!(s.cost(&at(100_000, 60_000, 40_001)), 958_507_500);
        assert_eq!(
            s.cost(&at(100_000, 60_000, 40_000)),
            // 100000 × 3 + 60000 × 0.3 + 40000 × 3.75 + 1000 × 15
            (300_000 + 18_000 + 150_000 + 15_000) * 1000
        );
        // The highest tier below the input; its cache write is its input.
        // 1000001 × 10 + 1000 × 40 = 10040010 → 10.04001 USD.
        assert_eq!(s.cost(&at(1_000_001, 0, 0)), 10_040_010_000);
        assert_eq!(s.cost(&at(0, 0, 1_000_001)), 10_000_010_000 + 40_000_000);
        // The estimate's input may pick the tier instead.
        let forced = Metered {
            tier_input_tokens: Some(300_000),
            ..at(10, 0, 0)
        };
        assert_eq!(s.cost(&forced), (60 + 22_500) * 1000);
    }

    #[test]
    fn tiers_are_checked() {
        let dup = PriceSheet {
            tiers: vec![
                Tier {
                    above_input_tokens: 5,
                    prices: TokenPrices::default(),
                },
                Tier {
                    above_input_tokens: 5,
                    prices: TokenPrices::default(),
                },
            ],
            ..Default::default()
        };
        assert!(dup.check().unwrap_err().0.contains("given twice"));
        let zero = PriceSheet {
            tiers: vec![Tier {
                above_input_tokens: 0,
                prices: TokenPrices::default(),
            }],
            ..Default::default()
        };
        assert!(zero.check().unwrap_err().0.contains("at least 1"));
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        // 0.000000001 USD (one nano-dollar) per million tokens is one
        // femto-dollar per token.
        let s = PriceSheet::flat(tokens("0.000000001", "0.000000001", "0", "0"));
        let m = |input, output| Metered {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        };
        assert_eq!(s.cost(&m(499_999, 0)), 0);
        assert_eq!(s.cost(&m(500_000, 0)), 1, "half rounds up");
        // Rounded once for the request: two charges of 0.4 nano-dollars
        // make one, where rounding each would make none.
        assert_eq!(s.cost(&m(400_000, 400_000)), 1);
        assert_eq!(s.cost(&m(250_000, 200_000)), 0);
        assert_eq!(s.cost(&m(1_500_000, 0)), 2);
    }

    #[test]
    fn sums_of_costs_are_exact() {
        // 0.1 USD a request: ten of them are exactly 1 USD, which f64
        // sums of 0.1 are not.
        let s = PriceSheet {
            per_request: usd("0.1"),
            ..Default::default()
        };
        let one = s.cost(&Metered::default());
        assert_eq!(one, 100_000_000);
        let total: i64 = (0..10).map(|_| one).sum();
        assert_eq!(total, NANOS_PER_USD);
        let f: f64 = (0..10).map(|_| 0.1f64).sum();
        assert_ne!(f, 1.0, "the drift the integers avoid");
    }

    #[test]
    fn per_request_image_audio_and_character_prices_add_up() {
        let s = PriceSheet {
            tokens: tokens("2", "8", "0", "0"),
            per_request: usd("0.001"),
            per_image: [
                ("1024x1024/high".to_string(), usd("0.167")),
                ("1024x1024".to_string(), usd("0.042")),
                ("*/low".to_string(), usd("0.011")),
                ("*".to_string(), usd("0.08")),
            ]
            .into(),
            per_audio_second: usd("0.0001"),
            per_mchar: usd("15"),
            ..Default::default()
        }
        .check()
        .unwrap();
        let img = |n, size, quality| Metered {
            images: n,
            image_size: size,
            image_quality: quality,
            ..Default::default()
        };
        let per_request = 1_000_000;
        assert_eq!(
            s.cost(&img(2, Some("1024x1024"), Some("high"))),
            per_request + 2 * 167_000_000
        );
        // Size only, then any size by quality, then "*".
        assert_eq!(
            s.cost(&img(1, Some("1024x1024"), Some("medium"))),
            per_request + 42_000_000
        );
        assert_eq!(
            s.cost(&img(3, Some("1536x1024"), Some("low"))),
            per_request + 33_000_000
        );
        assert_eq!(
            s.cost(&img(1, Some("1536x1024"), None)),
            per_request + 80_000_000
        );
        assert_eq!(s.cost(&img(1, None, None)), per_request + 80_000_000);
        // No match and no "*": images are free.
        let no_star = PriceSheet {
            per_image: [("1024x1024".to_string(), usd("0.04"))].into(),
            ..Default::default()
        };
        assert_eq!(no_star.cost(&img(1, Some("512x512"), Some("hd"))), 0);
        // 12.345 s at 0.0001 USD/s = 0.0012345 USD.
        let audio = Metered {
            audio_milliseconds: 12_345,
            ..Default::default()
        };
        assert_eq!(s.cost(&audio), per_request + 1_234_500);
        // 1 ms at 0.000000001 USD/s is 1e-12 USD: rounds to nothing.
        let tiny = PriceSheet {
            per_audio_second: usd("0.000000001"),
            ..Default::default()
        };
        assert_eq!(
            tiny.cost(&Metered {
                audio_milliseconds: 1,
                ..Default::default()
            }),
            0
        );
        // 1234 characters at 15 USD per million = 0.01851 USD.
        let speech = Metered {
            characters: 1234,
            ..Default::default()
        };
        assert_eq!(s.cost(&speech), per_request + 18_510_000);
        // Everything at once is the sum of the parts.
        let all = Metered {
            input_tokens: 1000,
            output_tokens: 500,
            audio_milliseconds: 12_345,
            characters: 1234,
            images: 2,
            image_size: Some("1024x1024"),
            image_quality: Some("high"),
            ..Default::default()
        };
        assert_eq!(
            s.cost(&all),
            per_request + 2_000_000 + 4_000_000 + 1_234_500 + 18_510_000 + 334_000_000
        );
    }

    #[test]
    fn a_sheet_prints_every_mode_that_is_set() {
        let s = PriceSheet {
            tokens: tokens("2.5", "10", "0", "0"),
            tiers: vec![Tier {
                above_input_tokens: 200_000,
                prices: tokens("5", "15", "0.5", "6.25"),
            }],
            per_request: usd("0.001"),
            per_image: [("1024x1024/high".to_string(), usd("0.167"))].into(),
            per_audio_second: usd("0.0001"),
            per_mchar: usd("15"),
        };
        assert_eq!(
            s.to_string(),
            "2.5/10, above 200000: 5/15/0.5/6.25, per request 0.001, \
             image 1024x1024/high 0.167, per second 0.0001, per 1M chars 15"
        );
        assert_eq!(PriceSheet::default().to_string(), "none");
    }

    #[test]
    fn image_keys_are_checked() {
        for good in ["*", "1024x1024", "1024x1024/high", "*/low", "auto/auto"] {
            assert!(image_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/high",
            "1024x1024/",
            "a/b/c",
            "1024 x 1024",
            "1024x1024/*",
        ] {
            assert!(image_key(bad).is_err(), "{bad}");
        }
        let s = PriceSheet {
            per_image: [("a/b/c".to_string(), usd("1"))].into(),
            ..Default::default()
        };
        assert!(s.check().unwrap_err().0.starts_with("per_image: "));
    }

    #[test]
    fn large_values_saturate_instead_of_overflowing() {
        let max = Amount::from_nanos(MAX_NANOS).unwrap();
        let s = PriceSheet {
            tokens: TokenPrices {
                input: max,
                output: max,
                cached_input: max,
                cache_write: max,
            },
            per_request: max,
            per_image: [("*".to_string(), max)].into(),
            per_audio_second: max,
            per_mchar: max,
            ..Default::default()
        };
        let m = Metered {
            input_tokens: u64::MAX,
            cache_read_tokens: u64::MAX,
            cache_write_tokens: u64::MAX,
            output_tokens: u64::MAX,
            audio_milliseconds: u64::MAX,
            characters: u64::MAX,
            images: u32::MAX,
            ..Default::default()
        };
        assert_eq!(s.cost(&m), i64::MAX);
        // Large but representable: a billion tokens at the largest price
        // is 10^27 femto-dollars, 10^21 nano-dollars: beyond i64.
        let big = Metered {
            input_tokens: 1_000_000_000,
            ..Default::default()
        };
        assert_eq!(s.cost(&big), i64::MAX);
        // A million tokens at 1 billion USD per million: exactly 1e18.
        let exact = Metered {
            input_tokens: 1_000_000,
            ..Default::default()
        };
        assert_eq!(s.cost(&exact), MAX_NANOS + MAX_NANOS);
    }

    #[test]
    fn a_schedule_switches_at_each_changes_time() {
        let a = PriceSheet::flat(tokens("1", "2", "0", "0"));
        let b = PriceSheet::flat(tokens("3", "4", "0", "0"));
        let c = PriceSheet::flat(tokens("5", "6", "0", "0"));
        let s = PriceSchedule::new(a.clone(), vec![(2000, c.clone()), (1000, b.clone())]);
        assert_eq!(s.at(999), &a);
        assert_eq!(s.at(1000), &b, "from its time on");
        assert_eq!(s.at(1999), &b);
        assert_eq!(s.at(2000), &c);
        assert_eq!(s.at(i64::MAX), &c);
        assert_eq!(s.first(), &a);
        assert_eq!(s.later().map(|(t, _)| t).collect::<Vec<_>>(), [1000, 2000]);
        assert_eq!(PriceSchedule::fixed(a.clone()).at(5000), &a);
    }
}
