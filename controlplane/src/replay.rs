//! What a replay sends (#17, `ReplayLog`): a logged request's body again,
//! to its client path, as its key or another, optionally to another model.
//! Pure: the admin service loads the log and sends the [`Run`] this makes.
//!
//! The body is the client's body as logged, so a replay is possible only
//! when it was logged whole: not when body logging was off (for the
//! gateway, the key, or a data plane with `--request-log metadata`), nor
//! when the body was cut at the log's body cap, nor once body retention
//! removed it (`bodies_expired`). Another model replaces the
//! body's top-level `"model"` in place (every other byte kept), or, for
//! Gemini, the model in the path. The log keeps the path without its
//! query: a Gemini `:streamGenerateContent` replay asks for SSE
//! (`?alt=sse`), as the SDKs do. The protocol headers a data plane passes
//! on (`anthropic-version`, `anthropic-beta`, `openai-beta`) are sent
//! again as logged.

use bytes::Bytes;
use llmgw_core::endpoint::{replace_path_model, Endpoint};
use llmgw_proto::v1 as pb;
use tonic::Status;

use crate::run::Run;

/// The request headers a replay or playground request passes on.
pub const PROTOCOL_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// Why a log's body was not logged, for the error that refuses its replay
/// (the admin service says which setting is off now).
pub type WhyNotLogged = String;

/// The replay of `log` as `key` (the log's key when empty), to `model`
/// (the log's when empty). `not_logged` says why the body was not logged,
/// if it was not.
pub fn plan(
    log: &pb::RequestLog,
    model: &str,
    key: &str,
    not_logged: impl FnOnce() -> WhyNotLogged,
) -> Result<Run, Status> {
    let id = &log.id;
    if log.bodies_expired {
        return Err(Status::failed_precondition(format!(
            "request {id} cannot be replayed: its body has expired (the control plane keeps \
             bodies for --body-retention-days, summaries longer)"
        )));
    }
    if log.request_body_truncated {
        return Err(Status::failed_precondition(format!(
            "request {id} cannot be replayed: its body was cut at the log's body cap \
             (log_body_max_bytes) when it was logged, so the whole body is not known"
        )));
    }
    if log.request_body.is_empty() {
        return Err(Status::failed_precondition(format!(
            "request {id} cannot be replayed: its body was not logged ({})",
            not_logged()
        )));
    }
    let Some(endpoint) = Endpoint::from_path(&log.path) else {
        return Err(Status::failed_precondition(format!(
            "request {id} cannot be replayed: its path '{}' is not one the gateway proxies",
            log.path
        )));
    };
    if endpoint.multipart() {
        // The log keeps an upload's form without its files.
        return Err(Status::failed_precondition(format!(
            "request {id} cannot be replayed: it uploaded files ({}), which the log does \
             not keep",
            log.path
        )));
    }
    let key = match key.trim() {
        "" if log.key.is_empty() => {
            return Err(Status::failed_precondition(format!(
                "request {id} was not authenticated as any key: name one to replay it as (--key)"
            )))
        }
        "" => log.key.clone(),
        k => k.to_string(),
    };
    let model = model.trim();
    let mut path = log.path.clone();
    if matches!(endpoint, Endpoint::GeminiStream { .. }) {
        path.push_str("?alt=sse");
    }
    let mut body = Bytes::from(log.request_body.clone().into_bytes());
    if !model.is_empty() {
        llmgw_core::validate::name("model", model)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if endpoint.model_in_path() {
            path = replace_path_model(&path, model).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "request {id}'s path '{}' names no model to replace",
                    log.path
                ))
            })?;
        } else {
            body = llmgw_core::body::replace_model(&body, model).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "request {id}'s logged body has no top-level \"model\" to replace"
                ))
            })?;
        }
    }
    let headers = log
        .request_headers
        .iter()
        .filter(|(name, _)| PROTOCOL_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    Ok(Run {
        path,
        body,
        headers,
        key,
        origin: "replay",
        replay_of: id.clone(),
        node_id: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(path: &str, body: &str) -> pb::RequestLog {
        pb::RequestLog {
            id: "0190-log".into(),
            key: "orig".into(),
            path: path.into(),
            request_body: body.into(),
            request_headers: [
                ("anthropic-version".to_string(), "2023-06-01".to_string()),
                ("authorization".to_string(), "****abcd".to_string()),
                ("x-custom".to_string(), "1".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn never() -> WhyNotLogged {
        unreachable!("the body was logged")
    }

    #[test]
    fn a_replay_sends_the_logged_body_as_the_logs_key() {
        let body = r#"{ "model" : "a",  "messages":[{"role":"user","content":"hi"}], "n": 1.50 }"#;
        let run = plan(&log("/v1/chat/completions", body), "", "", never).unwrap();
        assert_eq!(run.path, "/v1/chat/completions");
        assert_eq!(run.body, body.as_bytes());
        assert_eq!(run.key, "orig");
        assert_eq!((run.origin, run.replay_of.as_str()), ("replay", "0190-log"));
        // Only the protocol headers, never a credential.
        assert_eq!(
            run.headers,
            vec![("anthropic-version".to_string(), "2023-06-01".to_string())]
        );
    }

    #[test]
    fn another_model_is_spliced_into_the_body_byte_exact() {
        let body = r#"{ "model" : "a",  "messages":[], "n": 1.50 }"#;
        let run = plan(&log("/v1/messages", body), "b.2", "other", never).unwrap();
        assert_eq!(
            run.body,
            r#"{ "model" : "b.2",  "messages":[], "n": 1.50 }"#.as_bytes()
        );
        assert_eq!(run.key, "other");
        let e = plan(&log("/v1/messages", r#"{"messages":[]}"#), "b", "", never).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let e = plan(&log("/v1/messages", body), "no/slash", "", never).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_gemini_replay_changes_the_path_and_asks_for_sse() {
        let body = r#"{"contents":[]}"#;
        let run = plan(
            &log("/v1beta/models/g1:streamGenerateContent", body),
            "g2",
            "",
            never,
        )
        .unwrap();
        assert_eq!(run.path, "/v1beta/models/g2:streamGenerateContent?alt=sse");
        assert_eq!(run.body, body.as_bytes());
        let run = plan(
            &log("/v1beta/models/g1:generateContent", body),
            "",
            "",
            never,
        )
        .unwrap();
        assert_eq!(run.path, "/v1beta/models/g1:generateContent");
    }

    #[test]
    fn a_body_not_logged_whole_is_refused_saying_why() {
        let mut l = log("/v1/chat/completions", "");
        let e = plan(&l, "", "", || "body logging is off for key 'orig'".into()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message()
                .contains("not logged (body logging is off for key 'orig')"),
            "{}",
            e.message()
        );
        let mut expired = log("/v1/chat/completions", "");
        expired.bodies_expired = true;
        let e = plan(&expired, "", "", never).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("body has expired"), "{}", e.message());
        l.request_body = "{\"model\":".into();
        l.request_body_truncated = true;
        let e = plan(&l, "", "", never).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("cut at the log's body cap"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn a_log_without_key_or_path_is_refused() {
        let mut l = log("/v1/chat/completions", "{}");
        l.key.clear();
        let e = plan(&l, "", "", never).unwrap_err();
        assert!(e.message().contains("--key"), "{}", e.message());
        assert!(plan(&l, "", "k", never).is_ok());
        let e = plan(&log("/v1/models", "{}"), "", "", never).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}
