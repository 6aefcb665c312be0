//! What a playground request sends (#17, `Playground`): checked before
//! anything is sent. The path must be one the data plane proxies (the same
//! classification it serves by, `llmgw_core::endpoint`), with no query but
//! Gemini's `alt=sse`; the body at most [`MAX_BODY`]; and only the
//! protocol headers a client of that protocol needs pass
//! (`replay::PROTOCOL_HEADERS`). Anything else is INVALID_ARGUMENT naming
//! what is wrong.

use bytes::Bytes;
use llmgw_core::endpoint::Endpoint;
use llmgw_proto::v1 as pb;
use tonic::Status;

use crate::replay::PROTOCOL_HEADERS;
use crate::run::Run;

/// The largest playground body (a gRPC message's default limit is 4 MiB).
pub const MAX_BODY: usize = 4 << 20;

/// The request a playground call sends.
pub fn plan(r: pb::PlaygroundRequest) -> Result<Run, Status> {
    let key = r.key.trim();
    if key.is_empty() {
        return Err(Status::invalid_argument(
            "a key is required: the name of the client key to send the request as",
        ));
    }
    let (path, query) = match r.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (r.path.as_str(), None),
    };
    let (endpoint, _) = Endpoint::from_request(path, query).ok_or_else(|| {
        Status::invalid_argument(format!(
            "path '{}' is not one the data plane proxies (for example /v1/chat/completions, \
             /v1/responses, /v1/messages or /v1beta/models/MODEL:streamGenerateContent?alt=sse)",
            shown(&r.path)
        ))
    })?;
    if endpoint.multipart() {
        return Err(Status::invalid_argument(format!(
            "path '{}' takes a multipart upload; the playground sends JSON bodies",
            shown(&r.path)
        )));
    }
    if let Some(q) = query {
        if q != "alt=sse" || !matches!(endpoint, Endpoint::GeminiStream { .. }) {
            return Err(Status::invalid_argument(format!(
                "path '{}': the only query accepted is ?alt=sse on :streamGenerateContent",
                shown(&r.path)
            )));
        }
    }
    if path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "path '{}' has characters a URL path cannot hold",
            shown(&r.path)
        )));
    }
    if r.body.is_empty() {
        return Err(Status::invalid_argument("the request body is empty"));
    }
    if r.body.len() > MAX_BODY {
        return Err(Status::invalid_argument(format!(
            "the request body is larger than {} MiB",
            MAX_BODY >> 20
        )));
    }
    let mut headers = Vec::with_capacity(r.headers.len());
    let mut names: Vec<&String> = r.headers.keys().collect();
    names.sort();
    for name in names {
        let lower = name.trim().to_ascii_lowercase();
        if !PROTOCOL_HEADERS.contains(&lower.as_str()) {
            return Err(Status::invalid_argument(format!(
                "header '{}' is not accepted: only {} are passed on",
                shown(name),
                PROTOCOL_HEADERS.join(", ")
            )));
        }
        let value = &r.headers[name];
        if http::HeaderValue::from_str(value).is_err() {
            return Err(Status::invalid_argument(format!(
                "header '{lower}' has a value that is not a valid HTTP header value"
            )));
        }
        headers.push((lower, value.clone()));
    }
    Ok(Run {
        path: r.path.clone(),
        body: Bytes::from(r.body),
        headers,
        key: key.to_string(),
        origin: "playground",
        replay_of: String::new(),
        node_id: r.node_id.trim().to_string(),
    })
}

/// A client's string as an error shows it: at most 200 characters.
fn shown(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> pb::PlaygroundRequest {
        pb::PlaygroundRequest {
            key: "k".into(),
            path: path.into(),
            body: b"{\"model\":\"m\"}".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn every_client_protocol_path_is_accepted() {
        for p in [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            "/v1beta/models/g:generateContent",
        ] {
            let run = plan(req(p)).unwrap();
            assert_eq!((run.path.as_str(), run.origin), (p, "playground"));
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "/v1/models",
            "/admin",
            "",
            "/v1/chat/completions?key=x",
            "/v1beta/models/g:generateContent?alt=sse",
            "/v1beta/models/g h:generateContent",
        ] {
            let e = plan(req(p)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{p}");
        }
    }

    #[test]
    fn only_protocol_headers_pass() {
        let mut r = req("/v1/messages");
        r.headers
            .insert("Anthropic-Version".into(), "2023-06-01".into());
        let run = plan(r.clone()).unwrap();
        assert_eq!(
            run.headers,
            vec![("anthropic-version".to_string(), "2023-06-01".to_string())]
        );
        r.headers.insert("x-api-key".into(), "sk".into());
        let e = plan(r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("header 'x-api-key'"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn key_and_body_are_required_and_bounded() {
        let mut r = req("/v1/messages");
        r.key = " ".into();
        assert_eq!(plan(r).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut r = req("/v1/messages");
        r.body = Vec::new();
        assert_eq!(plan(r).unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut r = req("/v1/messages");
        r.body = vec![b' '; MAX_BODY + 1];
        assert!(plan(r).unwrap_err().message().contains("larger than 4 MiB"));
    }
}
