//! Head sampling: the spec's `parentbased_traceidratio` and its kin. The
//! decision for a new trace depends only on its id, so every process that
//! sees the same trace with the same ratio decides alike.

use opentelemetry::trace::TraceId;

/// How a trace with no sampled parent is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    On,
    Off,
    /// This share of trace ids, 0 to 1.
    Ratio(f64),
}

/// A sampler: the root decision, and whether a parent's decision wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub root: Root,
    /// A client's context decides when it has one (`parentbased_*`).
    pub parent_based: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            root: Root::On,
            parent_based: true,
        }
    }
}

fn ratio(r: f64) -> Result<f64, String> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("the sampling ratio {r} is not between 0 and 1"))
    }
}

impl Sampling {
    pub fn parent_based_ratio(r: f64) -> Result<Sampling, String> {
        Ok(Sampling {
            root: Root::Ratio(ratio(r)?),
            parent_based: true,
        })
    }

    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: with
    /// neither, `parentbased_always_on`; with only the argument,
    /// `parentbased_traceidratio` at that ratio.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampling, String> {
        let ratio_arg = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("OTEL_TRACES_SAMPLER_ARG='{a}' is not a number"))
                    .and_then(|r| ratio(r).map_err(|e| format!("OTEL_TRACES_SAMPLER_ARG: {e}"))),
            }
        };
        let (root, parent_based) = match sampler.map(str::trim) {
            None if arg.is_some() => (Root::Ratio(ratio_arg()?), true),
            None | Some("parentbased_always_on") => (Root::On, true),
            Some("always_on") => (Root::On, false),
            Some("always_off") => (Root::Off, false),
            Some("parentbased_always_off") => (Root::Off, true),
            Some("traceidratio") => (Root::Ratio(ratio_arg()?), false),
            Some("parentbased_traceidratio") => (Root::Ratio(ratio_arg()?), true),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER='{other}' is not supported: use always_on, always_off, \
                     traceidratio or their parentbased_ forms"
                ))
            }
        };
        Ok(Sampling { root, parent_based })
    }

    /// Whether a trace is recorded: `parent_sampled` is the client's
    /// context's flag, when it sent a valid one.
    pub fn sample(&self, parent_sampled: Option<bool>, trace_id: TraceId) -> bool {
        if self.parent_based {
            if let Some(sampled) = parent_sampled {
                return sampled;
            }
        }
        match self.root {
            Root::On => true,
            Root::Off => false,
            Root::Ratio(r) => ratio_sampled(r, trace_id),
        }
    }

    /// The same decision as the SDK's sampler, for the tracer provider
    /// that `tracing` spans go through.
    pub fn sdk_sampler(&self) -> opentelemetry_sdk::trace::Sampler {
        use opentelemetry_sdk::trace::Sampler;
        let root = match self.root {
            Root::On => Sampler::AlwaysOn,
            Root::Off => Sampler::AlwaysOff,
            Root::Ratio(r) => Sampler::TraceIdRatioBased(r),
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// The SDK's `TraceIdRatioBased` rule: the low 63 bits of the id's last
/// eight bytes against the ratio's share of 2^63.
fn ratio_sampled(r: f64, trace_id: TraceId) -> bool {
    if r >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..16]);
    let x = u64::from_be_bytes(low) >> 1;
    let bound = (r.max(0.0) * (1u64 << 63) as f64) as u64;
    x < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SamplingDecision, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceState,
    };
    use opentelemetry::Context;
    use opentelemetry_sdk::trace::ShouldSample;

    fn id(n: u128) -> TraceId {
        TraceId::from_bytes(n.to_be_bytes())
    }

    #[test]
    fn parents_decide_for_parent_based_samplers_only() {
        let s = Sampling::parent_based_ratio(0.0).unwrap();
        assert!(s.sample(Some(true), id(1)));
        assert!(!s.sample(Some(false), id(1)));
        assert!(!s.sample(None, id(1)));
        let s = Sampling::from_env(Some("traceidratio"), Some("1")).unwrap();
        assert!(s.sample(Some(false), id(1)));
        let s = Sampling::from_env(Some("always_off"), None).unwrap();
        assert!(!s.sample(Some(true), id(1)));
    }

    #[test]
    fn the_environment_defaults_to_parent_based_always_on() {
        assert_eq!(Sampling::from_env(None, None).unwrap(), Sampling::default());
        assert_eq!(
            Sampling::from_env(None, Some("0.5")).unwrap(),
            Sampling::parent_based_ratio(0.5).unwrap()
        );
        assert!(Sampling::from_env(Some("parentbased_traceidratio"), Some("x")).is_err());
    }

    /// The ratio decision is the SDK's, so that the data plane's own
    /// spans and the SDK-made ones agree on a trace.
    #[test]
    fn ratio_decisions_match_the_sdk_sampler() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for r in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let ours = Sampling::from_env(Some("traceidratio"), Some(&r.to_string())).unwrap();
            let sdk = ours.sdk_sampler();
            let mut kept = 0;
            for _ in 0..2000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let t = id(u128::from(state) << 64 | u128::from(state.rotate_left(29)));
                let theirs = sdk.should_sample(None, t, "x", &SpanKind::Server, &[], &[]);
                let sampled = ours.sample(None, t);
                assert_eq!(
                    sampled,
                    theirs.decision == SamplingDecision::RecordAndSample,
                    "ratio {r}"
                );
                kept += usize::from(sampled);
            }
            let share = kept as f64 / 2000.0;
            assert!((share - r).abs() < 0.05, "ratio {r} kept {share}");
        }
        // And the parent rule, through the SDK's context.
        let parent = SpanContext::new(
            id(7),
            SpanId::from_bytes([1; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(parent);
        let sdk = Sampling::parent_based_ratio(0.0).unwrap().sdk_sampler();
        let d = sdk.should_sample(Some(&cx), id(7), "x", &SpanKind::Server, &[], &[]);
        assert_eq!(d.decision, SamplingDecision::RecordAndSample);
    }
}
