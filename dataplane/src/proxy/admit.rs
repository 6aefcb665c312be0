//! Admission (#15): between authentication and routing, a request is
//! admitted against its key's limits (or the default key limits) and its
//! model's; at each attempt, against the target's provider's. A refusal
//! answers 429 in the client's protocol, with `Retry-After`, the
//! rate-limit headers, and for an exhausted budget the protocol's quota
//! error with `x-should-retry: false`; its record says which limit refused
//! it (`limited_by`). A request whose key and model have no limits does
//! none of this work.

use llmgw_core::limits::{Kind, Limits, Scope};
use llmgw_core::serving::ClientApi;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::limits::headers::{self, Style};
use crate::limits::{Admission, RateInfo, Refusal, Subject, Why};

/// The output a reservation assumes when neither the request nor the model
/// names a `max_tokens`.
pub(super) const DEFAULT_RESERVED_OUTPUT: u64 = llmgw_protocols::anthropic::DEFAULT_MAX_TOKENS;

/// What a request's limits left for its response: the headers' figures
/// and, for a refusal, when to retry and whether the client should.
#[derive(Debug, Default)]
pub(super) struct LimitView {
    pub rates: RateInfo,
    pub retry_after_s: Option<u64>,
    /// A budget refused the request: retrying will not help.
    pub no_retry: bool,
}

impl LimitView {
    /// Adds the headers to a response in the client's protocol.
    pub(super) fn write(&self, endpoint: Endpoint, headers: &mut HeaderMap) {
        let style = match endpoint.protocol() {
            Protocol::OpenAi | Protocol::OpenAiChat => Style::OpenAi,
            Protocol::Anthropic => Style::Anthropic,
            Protocol::Gemini => Style::None,
        };
        if !self.rates.is_empty() {
            headers::write(style, &self.rates, crate::limits::now_ms(), headers);
        }
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.no_retry {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }
}

/// The tokens a request reserves against a tpm limit: its estimated input
/// plus its `max_tokens` (else the model's default, else
/// [`DEFAULT_RESERVED_OUTPUT`]). The input is the rules' estimate when a
/// rule already made one, else the rough one (about four bytes a token),
/// which the body's first pass measured ([`head::Head`]): the reservation
/// is settled with the real usage, and neither tiktoken's count nor a tree
/// of the body is worth its cost here.
fn reservation(facts: &RequestFacts<'_>, model: &Model, endpoint: Endpoint) -> u64 {
    let input = facts.approximate_input_tokens();
    match endpoint.api() {
        ClientApi::Embeddings => return input,
        // Counting produces no tokens, and its answer carries no usage.
        ClientApi::CountTokens | ClientApi::GeminiCountTokens => return 0,
        _ => {}
    }
    input.saturating_add(
        facts
            .max_output_tokens()
            .or(model.default_max_tokens)
            .unwrap_or(DEFAULT_RESERVED_OUTPUT),
    )
}

#[cfg(test)]
#[test]
fn routing_assumes_the_output_a_reservation_does() {
    assert_eq!(
        llmgw_core::routing::ASSUMED_OUTPUT_TOKENS,
        DEFAULT_RESERVED_OUTPUT
    );
}

fn has_tpm(l: Option<&Limits>) -> bool {
    l.is_some_and(|l| l.tpm.is_some())
}

/// The longest a request waits for a budget's spend that its data plane
/// has not heard yet (a report's round trip, normally milliseconds).
const SPEND_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Proxy {
    /// The token reservation a request makes when a tpm limit applies
    /// anywhere on its way (its key, model or a target's provider; else 0).
    pub(super) fn tokens_to_reserve(
        table: &RoutingTable,
        key: &llmgw_core::table::ClientKey,
        model: &Model,
        endpoint: Endpoint,
        facts: &RequestFacts<'_>,
    ) -> u64 {
        if has_tpm(key.effective_limits(&table.settings))
            || has_tpm(model.limits.as_ref())
            || model
                .targets
                .iter()
                .any(|t| has_tpm(t.provider.limits.as_ref()))
        {
            reservation(facts, model, endpoint)
        } else {
            0
        }
    }

    /// Admits a request against its key's and model's limits (the
    /// admission, if any, goes in `pending`), reserving `tokens`. A budget
    /// whose spend this data plane has not heard yet admits one request;
    /// the others wait for the figure (up to [`SPEND_WAIT`]) rather than be
    /// refused at once.
    pub(super) async fn admit(
        &self,
        table: &RoutingTable,
        key: &llmgw_core::table::ClientKey,
        model: &Model,
        tokens: u64,
        pending: &mut Pending,
    ) -> Result<(), (ErrorKind, String)> {
        let key_limits = key.effective_limits(&table.settings);
        let model_limits = model.limits.as_ref();
        let mut subjects = [None, None];
        if let Some(l) = key_limits {
            subjects[0] = Some(Subject {
                scope: Scope::Key,
                name: &key.name,
                limits: l,
            });
        }
        if let Some(l) = model_limits {
            subjects[1] = Some(Subject {
                scope: Scope::Model,
                name: &model.name,
                limits: l,
            });
        }
        // On the stack: no allocation per request.
        let (one, two);
        let subjects: &[Subject<'_>] = match subjects {
            [None, None] => return Ok(()),
            [Some(a), None] | [None, Some(a)] => {
                one = [a];
                &one
            }
            [Some(a), Some(b)] => {
                two = [a, b];
                &two
            }
        };
        let slack = table.settings.quota_slack_percent;
        let mut waiting: Option<(tokio::sync::watch::Receiver<u64>, tokio::time::Instant)> = None;
        loop {
            // The clock now: the request's arrival can be seconds ago (its
            // body, an upload's form before its model), in another window.
            match self.limiter.admit(subjects, tokens, slack) {
                Ok(a) => {
                    pending.limits.rates = a.rates;
                    // Request rates alone leave nothing to give back.
                    if !a.holds_nothing() {
                        pending.admission = Some(Box::new(a));
                    }
                    return Ok(());
                }
                Err(r) if r.why == Why::SpendUnknown => match waiting.as_mut() {
                    // Watching from now on, and once more at once: a figure
                    // applied since the refusal is not waited for.
                    None => {
                        let mut applied = self.limiter.applied();
                        applied.borrow_and_update();
                        waiting = Some((applied, tokio::time::Instant::now() + SPEND_WAIT));
                    }
                    Some((applied, until)) => {
                        let arrived = tokio::time::timeout_at(*until, applied.changed()).await;
                        if !matches!(arrived, Ok(Ok(()))) {
                            return Err(self.refused(&r, pending));
                        }
                    }
                },
                Err(r) => return Err(self.refused(&r, pending)),
            }
        }
    }

    /// Admits one attempt against its provider's limits; `Ok(None)` when
    /// the provider has none.
    pub(super) fn admit_provider(
        &self,
        call: &Call<'_>,
        target: &Target,
    ) -> Result<Option<Admission>, Refusal> {
        let Some(limits) = target.provider.limits.as_ref() else {
            return Ok(None);
        };
        self.limiter
            .admit(
                &[Subject {
                    scope: Scope::Provider,
                    name: &target.provider.name,
                    limits,
                }],
                call.tokens,
                call.table.settings.quota_slack_percent,
            )
            .map(Some)
    }

    /// Notes a refusal in the record, the metrics and the response's
    /// headers, and returns the error the client is answered with.
    pub(super) fn refused(&self, r: &Refusal, pending: &mut Pending) -> (ErrorKind, String) {
        pending.record().limited_by = r.label();
        self.out
            .metrics
            .limit_refused(r.scope.as_str(), r.kind.as_str());
        pending.limits.rates = r.rates;
        pending.limits.retry_after_s = r.retry_after_s;
        pending.limits.no_retry = !r.retryable();
        let kind = if r.kind == Kind::Budget && r.why == Why::Reached {
            ErrorKind::BudgetExhausted
        } else {
            ErrorKind::LimitExceeded
        };
        (kind, r.message())
    }
}
