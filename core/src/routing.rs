//! Candidate selection: which of a model's targets may serve a request, and
//! in what order they are tried. The data plane routes with this, and the
//! control plane's `route explain` runs the very same code.
//!
//! Steps: drop targets whose provider's protocol has no such API at all
//! (embeddings at Anthropic; see [`crate::serving`]), drop targets
//! whose rule does not match, order the rest by the model's strategy, then
//! move ejected outliers to the back (at most `max_ejected` of them).
//!
//! A target of weight 0 is *drained*: it gets no traffic while any other
//! target of the same priority can take it. With the `priority` strategy it
//! is ordered after the other targets of its priority (and before the next
//! priority); the strategies that do not order by priority put drained
//! targets after every other candidate. Either way a drained target is
//! still tried when the targets before it fail or are ejected as outliers,
//! so it serves when it is the only healthy one.

use crate::price::Metered;
use crate::rules::Facts;
use crate::serving::{serving, ClientApi, Serving};
use crate::table::{Model, Target};
use crate::validate::{Protocol, Strategy};

/// Runtime state a strategy reads: rotation counters, latency estimates,
/// outlier ejection and randomness. The data plane keeps the real one; an
/// explanation uses a fresh one.
pub trait RouteState {
    /// A counter that grows by one per call, per model.
    fn next_turn(&self, model: &str) -> u64;
    /// Smoothed time to first byte of a target, in milliseconds.
    fn ttfb_ewma_ms(&self, target: &TargetKey) -> Option<f64>;
    /// Whether the target is ejected as an outlier now.
    fn is_ejected(&self, target: &TargetKey) -> bool;
    /// A random number below `n` (n > 0).
    fn random_below(&self, n: u64) -> u64;
}

pub use crate::table::TargetKey;

/// Why a target is not a candidate, or where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Tried in this position (0 first).
    Kept {
        order: usize,
        ejected: bool,
    },
    /// The provider's protocol has no such API.
    WrongProtocol(Protocol),
    RuleDidNotMatch,
}

#[derive(Debug, Clone)]
pub struct Decision {
    /// Index into `model.targets`.
    pub target: usize,
    pub verdict: Verdict,
    /// How the target would serve the request: passed through, translated
    /// (from what to what), or not at all.
    pub serving: Serving,
}

/// The ordered candidates for one request, and a verdict for every target.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Indices into `model.targets`, in the order to try them.
    pub order: Vec<usize>,
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// Why there is no candidate, for the client's error message.
    pub fn empty_reason(&self, model: &Model) -> String {
        if model.targets.is_empty() {
            return format!("model '{}' has no enabled target", model.name);
        }
        if self
            .decisions
            .iter()
            .all(|d| matches!(d.verdict, Verdict::WrongProtocol(_)))
        {
            let mut protocols: Vec<&str> = Vec::new();
            for d in &self.decisions {
                if let Verdict::WrongProtocol(p) = d.verdict {
                    if !protocols.contains(&p.as_str()) {
                        protocols.push(p.as_str());
                    }
                }
            }
            return format!(
                "model '{}' has no target whose protocol offers this API (its targets speak {}; \
                 embeddings, legacy completions, audio and images go only to openai and \
                 openai-chat providers, untranslated)",
                model.name,
                protocols.join(", ")
            );
        }
        format!(
            "no target of model '{}' accepts this request (target rules did not match)",
            model.name
        )
    }
}

/// At most this share of a model's candidates is moved back as outliers,
/// so that ejection cannot leave a model with nothing healthy to try first.
pub fn max_ejected(candidates: usize) -> usize {
    (candidates / 2).max(1).min(candidates.saturating_sub(1))
}

pub fn plan(model: &Model, api: ClientApi, facts: &dyn Facts, state: &dyn RouteState) -> Plan {
    let mut decisions = Vec::with_capacity(model.targets.len());
    let mut candidates = Vec::with_capacity(model.targets.len());
    for (i, t) in model.targets.iter().enumerate() {
        let how = serving(api, t.provider.protocol);
        if how == Serving::Unsupported {
            decisions.push(Decision {
                target: i,
                verdict: Verdict::WrongProtocol(t.provider.protocol),
                serving: how,
            });
        } else if t.rules.as_ref().is_some_and(|r| !r.matches(facts)) {
            decisions.push(Decision {
                target: i,
                verdict: Verdict::RuleDidNotMatch,
                serving: how,
            });
        } else {
            candidates.push(i);
        }
    }

    let mut order = match model.strategy {
        Strategy::Priority => priority_order(model, &candidates, state),
        other => {
            let (active, drained) = split_drained(model, &candidates);
            let mut order = match other {
                Strategy::RoundRobin => {
                    let turn = state.next_turn(&model.name);
                    rotate(&active, turn)
                }
                Strategy::Weighted => {
                    let turn = state.next_turn(&model.name);
                    weighted_order(model, &active, turn)
                }
                Strategy::CostFirst => cost_order(model, &active, facts),
                _ => least_latency_order(model, &active, state),
            };
            order.extend(drained);
            order
        }
    };

    // Outliers go to the back, keeping their relative order, up to the cap.
    // In place: the healthy stay, in order; the ejected (rarely any, so
    // rarely an allocation) follow.
    let cap = max_ejected(order.len());
    let mut ejected = Vec::new();
    order.retain(|&i| {
        let eject = ejected.len() < cap && state.is_ejected(&model.targets[i].key);
        if eject {
            ejected.push(i);
        }
        !eject
    });
    let n_healthy = order.len();
    order.extend(ejected);
    for (pos, &i) in order.iter().enumerate() {
        decisions.push(Decision {
            target: i,
            verdict: Verdict::Kept {
                order: pos,
                ejected: pos >= n_healthy,
            },
            serving: serving(api, model.targets[i].provider.protocol),
        });
    }
    decisions.sort_by_key(|d| d.target);
    Plan { order, decisions }
}

/// The output a cost estimate assumes when neither the request nor the
/// model names `max_tokens`: the data plane's default reservation for a tpm
/// limit (Anthropic's default `max_tokens` in `llmgw-protocols`).
pub const ASSUMED_OUTPUT_TOKENS: u64 = 4096;

/// The estimated cost in nano-dollars of a request on a target, with the
/// target's prices in effect at [`Facts::now_ms`]: its estimated input
/// (which also picks the price tier) plus the most it may produce (its
/// `max_tokens`, else the model's default, else [`ASSUMED_OUTPUT_TOKENS`]),
/// each at its token price, plus any per-request price. The target's
/// prices are its own when it has them, else the model's.
pub fn estimated_cost(model: &Model, target: &Target, facts: &dyn Facts) -> i64 {
    let output = facts
        .max_output_tokens()
        .or(model.default_max_tokens)
        .unwrap_or(ASSUMED_OUTPUT_TOKENS);
    target.prices.at(facts.now_ms()).cost(&Metered {
        input_tokens: facts.approximate_input_tokens(),
        output_tokens: output,
        ..Metered::default()
    })
}

/// Whether a target has prices (its own or its model's) now: a target
/// with none has an unknown cost, not a cost of nothing.
pub fn is_priced(target: &Target, now_ms: i64) -> bool {
    target.prices.at(now_ms).is_priced()
}

/// The cheapest candidate first; equal costs keep the given (priority)
/// order. Targets without prices come after the priced ones, in the given
/// order: an unpriced target must not take all the traffic as "free".
fn cost_order(model: &Model, candidates: &[usize], facts: &dyn Facts) -> Vec<usize> {
    let now = facts.now_ms();
    let mut priced: Vec<(bool, i64, usize)> = candidates
        .iter()
        .map(|&i| {
            let t = &model.targets[i];
            (!is_priced(t, now), estimated_cost(model, t, facts), i)
        })
        .collect();
    priced.sort_by_key(|&(unpriced, cost, _)| (unpriced, cost));
    priced.into_iter().map(|(_, _, i)| i).collect()
}

/// Candidates with a weight, and drained ones (weight 0), each in the given
/// order.
fn split_drained(model: &Model, candidates: &[usize]) -> (Vec<usize>, Vec<usize>) {
    candidates
        .iter()
        .partition(|&&i| model.targets[i].weight > 0)
}

/// The candidates rotated to start at `turn`.
fn rotate(candidates: &[usize], turn: u64) -> Vec<usize> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let start = (turn % candidates.len() as u64) as usize;
    candidates[start..]
        .iter()
        .chain(&candidates[..start])
        .copied()
        .collect()
}

/// Weighted round-robin: the first pick is proportional to weight over
/// successive turns; the rest follow in descending weight for failover.
fn weighted_order(model: &Model, candidates: &[usize], turn: u64) -> Vec<usize> {
    let total: u64 = candidates
        .iter()
        .map(|&i| u64::from(model.targets[i].weight))
        .sum();
    if total == 0 {
        return candidates.to_vec();
    }
    let mut point = turn % total;
    let mut first = candidates.first().copied();
    for &i in candidates {
        let w = u64::from(model.targets[i].weight);
        if point < w {
            first = Some(i);
            break;
        }
        point -= w;
    }
    let Some(first) = first else {
        return Vec::new();
    };
    let mut rest: Vec<usize> = candidates.iter().copied().filter(|&i| i != first).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(model.targets[i].weight));
    std::iter::once(first).chain(rest).collect()
}

/// Ascending priority; inside one priority, weighted round-robin.
fn priority_order(model: &Model, candidates: &[usize], state: &dyn RouteState) -> Vec<usize> {
    let mut out = Vec::with_capacity(candidates.len());
    let mut start = 0;
    let mut turn = None;
    while start < candidates.len() {
        let p = model.targets[candidates[start]].priority;
        let end = candidates[start..]
            .iter()
            .position(|&i| model.targets[i].priority != p)
            .map_or(candidates.len(), |n| start + n);
        let (group, drained) = split_drained(model, &candidates[start..end]);
        if group.len() <= 1 {
            out.extend(group);
        } else {
            let t = *turn.get_or_insert_with(|| state.next_turn(&model.name));
            out.extend(weighted_order(model, &group, t));
        }
        out.extend(drained);
        start = end;
    }
    out
}

/// Power of two choices over the smoothed time to first byte; a target with
/// no measurement yet counts as fastest so that it gets measured.
fn least_latency_order(model: &Model, candidates: &[usize], state: &dyn RouteState) -> Vec<usize> {
    let latency = |i: usize| state.ttfb_ewma_ms(&model.targets[i].key).unwrap_or(0.0);
    if candidates.len() < 2 {
        return candidates.to_vec();
    }
    let n = candidates.len() as u64;
    let a = state.random_below(n) as usize;
    let mut b = state.random_below(n - 1) as usize;
    if b >= a {
        b += 1;
    }
    let (ca, cb) = (candidates[a], candidates[b]);
    let first = if latency(cb) < latency(ca) { cb } else { ca };
    let mut rest: Vec<usize> = candidates.iter().copied().filter(|&i| i != first).collect();
    rest.sort_by(|&x, &y| latency(x).total_cmp(&latency(y)));
    std::iter::once(first).chain(rest).collect()
}

/// A `RouteState` with no history: turn 0, no latencies, no ejections, and
/// no randomness. Used to explain a route.
#[derive(Debug, Default)]
pub struct FreshState;

impl RouteState for FreshState {
    fn next_turn(&self, _model: &str) -> u64 {
        0
    }
    fn ttfb_ewma_ms(&self, _target: &TargetKey) -> Option<f64> {
        None
    }
    fn is_ejected(&self, _target: &TargetKey) -> bool {
        false
    }
    fn random_below(&self, _n: u64) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::{PriceSchedule, PriceSheet, TokenPrices};
    use crate::rules::Rule;
    use crate::table::Provider;
    use std::cell::Cell;
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::time::Duration;

    fn provider(name: &str, protocol: Protocol) -> Arc<Provider> {
        Arc::new(Provider {
            name: name.into(),
            protocol,
            base_url: "http://x".into(),
            server: None,
            credential: None,
            headers: vec![],
            timeout: Duration::from_secs(1),
            stream_usage: true,
            limits: None,
            proxy: None,
            default_params: Default::default(),
        })
    }

    fn target(
        p: &Arc<Provider>,
        m: &str,
        priority: i32,
        weight: u32,
        rule: Option<&str>,
    ) -> Target {
        Target {
            key: TargetKey::of(&p.name, m),
            provider: Arc::clone(p),
            upstream_model: m.into(),
            priority,
            weight,
            rules: rule.and_then(|r| Rule::parse(r).unwrap()),
            prices: PriceSchedule::default(),
            defaults: Vec::new(),
        }
    }

    fn model(strategy: Strategy, targets: Vec<Target>) -> Model {
        Model {
            name: "m".into(),
            strategy,
            max_attempts: 1,
            retry_delay: Duration::ZERO,
            prices: PriceSchedule::default(),
            default_max_tokens: None,
            translation: Default::default(),
            model_type: Default::default(),
            limits: None,
            targets,
        }
    }

    /// A request's facts: the rules' token count, the cheap estimate and
    /// its `max_tokens`.
    struct TestFacts {
        counted: u64,
        approximate: u64,
        max_output: Option<u64>,
    }
    impl Facts for TestFacts {
        fn header(&self, _: &str) -> Option<&str> {
            None
        }
        fn body(&self) -> Option<&serde_json::Value> {
            None
        }
        fn key_name(&self) -> &str {
            "k"
        }
        fn input_tokens(&self) -> u64 {
            self.counted
        }
        fn approximate_input_tokens(&self) -> u64 {
            self.approximate
        }
        fn max_output_tokens(&self) -> Option<u64> {
            self.max_output
        }
    }

    const NO_FACTS: TestFacts = TestFacts {
        counted: 10,
        approximate: 10,
        max_output: None,
    };

    #[derive(Default)]
    struct TestState {
        turn: Cell<u64>,
        ewma: HashMap<String, f64>,
        ejected: HashSet<String>,
        random: Cell<u64>,
    }

    impl RouteState for TestState {
        fn next_turn(&self, _: &str) -> u64 {
            let t = self.turn.get();
            self.turn.set(t + 1);
            t
        }
        fn ttfb_ewma_ms(&self, t: &TargetKey) -> Option<f64> {
            self.ewma.get(&t.upstream_model).copied()
        }
        fn is_ejected(&self, t: &TargetKey) -> bool {
            self.ejected.contains(&t.upstream_model)
        }
        fn random_below(&self, n: u64) -> u64 {
            let r = self.random.get();
            self.random.set(r + 1);
            r % n
        }
    }

    fn names(m: &Model, p: &Plan) -> Vec<String> {
        p.order
            .iter()
            .map(|&i| m.targets[i].upstream_model.clone())
            .collect()
    }

    #[test]
    fn priority_groups_in_order_with_weights_inside() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::Priority,
            vec![
                target(&p, "a", 0, 1, None),
                target(&p, "b", 0, 3, None),
                target(&p, "c", 1, 1, None),
            ],
        );
        let s = TestState::default();
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let plan = plan(&m, ClientApi::Chat, &NO_FACTS, &s);
            let n = names(&m, &plan);
            assert_eq!(n.last().map(String::as_str), Some("c"));
            firsts.push(n[0].clone());
        }
        assert_eq!(firsts, ["a", "b", "b", "b"]);
    }

    #[test]
    fn drained_targets_follow_their_priority_group() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::Priority,
            vec![
                target(&p, "drained", 0, 0, None),
                target(&p, "a", 0, 1, None),
                target(&p, "b", 0, 2, None),
                target(&p, "next", 1, 1, None),
            ],
        );
        let s = TestState::default();
        for _ in 0..6 {
            let n = names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s));
            assert_ne!(n[0], "drained", "{n:?}");
            assert_eq!(&n[2..], ["drained", "next"], "{n:?}");
        }
        // When the others of its priority are ejected, it serves first.
        let ejected = TestState {
            ejected: ["a", "b"].iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let n = names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &ejected));
        assert_eq!(n, ["drained", "next", "a", "b"]);
        // Alone in its priority, a drained target is the one to serve it.
        let alone = model(
            Strategy::Priority,
            vec![target(&p, "d", 0, 0, None), target(&p, "x", 1, 1, None)],
        );
        let n = names(&alone, &plan(&alone, ClientApi::Chat, &NO_FACTS, &s));
        assert_eq!(n, ["d", "x"]);
    }

    #[test]
    fn drained_targets_go_last_in_other_strategies() {
        let p = provider("p", Protocol::OpenAi);
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Weighted,
            Strategy::LeastLatency,
        ] {
            let m = model(
                strategy,
                vec![
                    target(&p, "drained", 0, 0, None),
                    target(&p, "a", 0, 1, None),
                    target(&p, "b", 0, 1, None),
                ],
            );
            let s = TestState::default();
            for _ in 0..4 {
                let n = names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s));
                assert_eq!(
                    n.last().map(String::as_str),
                    Some("drained"),
                    "{strategy}: {n:?}"
                );
            }
            // Every target drained: they still serve, in their order.
            let all = model(
                strategy,
                vec![target(&p, "x", 0, 0, None), target(&p, "y", 0, 0, None)],
            );
            assert_eq!(
                names(&all, &plan(&all, ClientApi::Chat, &NO_FACTS, &s)).len(),
                2
            );
        }
    }

    #[test]
    fn round_robin_rotates() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::RoundRobin,
            vec![target(&p, "a", 0, 1, None), target(&p, "b", 5, 1, None)],
        );
        let s = TestState::default();
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s)),
            ["a", "b"]
        );
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s)),
            ["b", "a"]
        );
    }

    #[test]
    fn protocol_and_rules_filter() {
        let o = provider("o", Protocol::OpenAi);
        let a = provider("a", Protocol::Anthropic);
        let m = model(
            Strategy::Priority,
            vec![
                target(&a, "claude", 0, 1, None),
                target(
                    &o,
                    "ruled",
                    1,
                    1,
                    Some(r#"{"field":"key","op":"eq","value":"other"}"#),
                ),
                target(&o, "gpt", 2, 1, None),
            ],
        );
        // Embeddings exist only in OpenAI's API.
        let plan = plan(&m, ClientApi::Embeddings, &NO_FACTS, &FreshState);
        assert_eq!(names(&m, &plan), ["gpt"]);
        assert_eq!(
            plan.decisions[0].verdict,
            Verdict::WrongProtocol(Protocol::Anthropic)
        );
        assert_eq!(plan.decisions[1].verdict, Verdict::RuleDidNotMatch);
        assert_eq!(
            plan.decisions[2].verdict,
            Verdict::Kept {
                order: 0,
                ejected: false
            }
        );
        assert_eq!(plan.decisions[2].serving, Serving::PassThrough);
        // A chat client reaches the Anthropic target too, translated.
        let chat = super::plan(&m, ClientApi::Chat, &NO_FACTS, &FreshState);
        assert_eq!(names(&m, &chat), ["claude", "gpt"]);
        assert_eq!(
            chat.decisions[0].serving,
            Serving::Translate {
                from: crate::serving::WireFormat::Chat,
                to: crate::serving::WireFormat::Anthropic
            }
        );
        let only_anthropic = model(Strategy::Priority, vec![target(&a, "claude", 0, 1, None)]);
        let p2 = super::plan(
            &only_anthropic,
            ClientApi::Embeddings,
            &NO_FACTS,
            &FreshState,
        );
        assert!(p2.order.is_empty());
        assert!(p2.empty_reason(&only_anthropic).contains("protocol"));
    }

    #[test]
    fn ejected_targets_move_back_within_the_cap() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::Priority,
            vec![
                target(&p, "a", 0, 1, None),
                target(&p, "b", 1, 1, None),
                target(&p, "c", 2, 1, None),
                target(&p, "d", 3, 1, None),
            ],
        );
        let s = TestState {
            ejected: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        // Cap is 2 of 4: a and b move back, c stays.
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s)),
            ["c", "d", "a", "b"]
        );
        assert_eq!(max_ejected(1), 0);
        assert_eq!(max_ejected(2), 1);
        assert_eq!(max_ejected(5), 2);
    }

    #[test]
    fn least_latency_prefers_the_faster_of_two() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::LeastLatency,
            vec![
                target(&p, "slow", 0, 1, None),
                target(&p, "fast", 0, 1, None),
                target(&p, "mid", 0, 1, None),
            ],
        );
        let s = TestState {
            ewma: [("slow", 500.0), ("fast", 10.0), ("mid", 100.0)]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            ..Default::default()
        };
        // random draws 0 then 1 -> compares slow with mid.
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s)),
            ["mid", "fast", "slow"]
        );
    }

    #[test]
    fn weighted_spreads_by_weight() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::Weighted,
            vec![target(&p, "a", 0, 1, None), target(&p, "b", 9, 2, None)],
        );
        let s = TestState::default();
        let firsts: Vec<String> = (0..6)
            .map(|_| names(&m, &plan(&m, ClientApi::Chat, &NO_FACTS, &s))[0].clone())
            .collect();
        assert_eq!(firsts.iter().filter(|f| *f == "b").count(), 4);
    }

    /// Facts with a given cheap input estimate and `max_tokens`, whose
    /// rules' count is far off: cost-first must use the cheap estimate.
    fn sized(approximate: u64, max_output: Option<u64>) -> TestFacts {
        TestFacts {
            counted: 1_000_000_000,
            approximate,
            max_output,
        }
    }

    fn priced(p: &Arc<Provider>, m: &str, input: i64, output: i64) -> Target {
        let usd = |n: i64| crate::price::Amount::from_nanos(n * 1_000_000_000).unwrap();
        Target {
            prices: PriceSchedule::fixed(PriceSheet::flat(TokenPrices {
                input: usd(input),
                output: usd(output),
                ..TokenPrices::default()
            })),
            ..target(p, m, 0, 1, None)
        }
    }

    #[test]
    fn cost_first_orders_by_the_requests_estimated_cost() {
        let p = provider("p", Protocol::OpenAi);
        let m = model(
            Strategy::CostFirst,
            vec![
                priced(&p, "dear-input", 10, 1),
                priced(&p, "dear-output", 1, 10),
                priced(&p, "middle", 5, 5),
            ],
        );
        let s = TestState::default();
        // A long prompt and a short answer: the input price decides.
        let long_in = sized(100_000, Some(100));
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &long_in, &s)),
            ["dear-output", "middle", "dear-input"]
        );
        // A short prompt and a long answer: the output price decides.
        let long_out = sized(100, Some(100_000));
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &long_out, &s)),
            ["dear-input", "middle", "dear-output"]
        );
        // 100 × 5 + 100000 × 5 USD per million, in nano-dollars.
        assert_eq!(
            estimated_cost(&m, &m.targets[2], &long_out),
            (100 * 5 + 100_000 * 5) * 1000
        );
        // No max_tokens: the model's default, else the assumed output.
        assert_eq!(
            estimated_cost(&m, &m.targets[0], &sized(0, None)),
            ASSUMED_OUTPUT_TOKENS as i64 * 1000
        );
        let mut with_default = model(Strategy::CostFirst, vec![priced(&p, "x", 0, 2)]);
        with_default.default_max_tokens = Some(500);
        assert_eq!(
            estimated_cost(&with_default, &with_default.targets[0], &sized(0, None)),
            1_000_000
        );
    }

    #[test]
    fn cost_first_uses_the_tier_of_the_estimated_input() {
        use crate::price::Tier;
        let p = provider("p", Protocol::OpenAi);
        let usd = |n: i64| crate::price::Amount::from_nanos(n * 1_000_000_000).unwrap();
        // Cheaper than "flat" up to 200k input tokens, dearer above.
        let mut tiered = priced(&p, "tiered", 1, 1);
        tiered.prices = PriceSchedule::fixed(
            PriceSheet {
                tokens: TokenPrices {
                    input: usd(1),
                    output: usd(1),
                    ..TokenPrices::default()
                },
                tiers: vec![Tier {
                    above_input_tokens: 200_000,
                    prices: TokenPrices {
                        input: usd(4),
                        output: usd(4),
                        ..TokenPrices::default()
                    },
                }],
                ..PriceSheet::default()
            }
            .check()
            .unwrap(),
        );
        let m = model(Strategy::CostFirst, vec![priced(&p, "flat", 2, 2), tiered]);
        let s = TestState::default();
        assert_eq!(
            names(
                &m,
                &plan(&m, ClientApi::Chat, &sized(200_000, Some(10)), &s)
            ),
            ["tiered", "flat"]
        );
        assert_eq!(
            names(
                &m,
                &plan(&m, ClientApi::Chat, &sized(200_001, Some(10)), &s)
            ),
            ["flat", "tiered"]
        );
    }

    #[test]
    fn cost_first_puts_unpriced_targets_after_priced_ones_and_moves_an_ejected_one_back() {
        let p = provider("p", Protocol::OpenAi);
        let mut drained = priced(&p, "free-drained", 0, 0);
        drained.weight = 0;
        let m = model(
            Strategy::CostFirst,
            vec![
                priced(&p, "unpriced", 0, 0),
                priced(&p, "dear", 9, 9),
                priced(&p, "cheap", 1, 1),
                drained,
                priced(&p, "equal-a", 5, 5),
                priced(&p, "equal-b", 5, 5),
            ],
        );
        let mut s = TestState::default();
        let facts = sized(1000, Some(100));
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &facts, &s)),
            [
                "cheap",
                "equal-a",
                "equal-b",
                "dear",
                "unpriced",
                "free-drained"
            ]
        );
        assert!(!is_priced(&m.targets[0], 0) && is_priced(&m.targets[1], 0));
        // The cheapest is ejected: the next cheapest goes first.
        s.ejected.insert("cheap".into());
        assert_eq!(
            names(&m, &plan(&m, ClientApi::Chat, &facts, &s)),
            [
                "equal-a",
                "equal-b",
                "dear",
                "unpriced",
                "free-drained",
                "cheap"
            ]
        );
    }
}
