//! Errors the gateway answers with itself. Each kind knows its HTTP status,
//! its name in both protocols, who is at fault, and whether another attempt
//! may help: data, not strings.

use http::StatusCode;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client: bad input, bad key.
    Downstream,
    /// The upstream provider.
    Upstream,
    /// The gateway itself.
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    MissingKey,
    InvalidKey,
    ExpiredKey,
    ModelNotAllowed,
    UnknownModel,
    BadRequest,
    BodyTooLarge,
    /// The request body stalled or arrived too slowly.
    BodyTimeout,
    NotFound,
    MethodNotAllowed,
    NoRoute,
    NotReady,
    /// No upstream answered in time.
    UpstreamTimeout,
    /// No upstream could be reached or none answered usefully.
    UpstreamUnavailable,
    RateLimited,
    /// A rate or concurrency limit of the gateway's own (#15) refused the
    /// request.
    LimitExceeded,
    /// A spend budget of the gateway's own is exhausted.
    BudgetExhausted,
    /// An admin cancelled the request (#17): 499, as a client's cancel.
    CancelledByAdmin,
    /// The uploads in flight fill the gateway's temporary files
    /// (`--max-upload-spool-bytes`): 503, to retry shortly.
    UploadCapacity,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::MissingKey | ErrorKind::InvalidKey | ErrorKind::ExpiredKey => {
                StatusCode::UNAUTHORIZED
            }
            ErrorKind::ModelNotAllowed => StatusCode::FORBIDDEN,
            ErrorKind::UnknownModel | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::BadRequest | ErrorKind::NoRoute => StatusCode::BAD_REQUEST,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::NotReady | ErrorKind::UploadCapacity => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::RateLimited | ErrorKind::LimitExceeded | ErrorKind::BudgetExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // Not a 5xx: SDKs retry those, and a cancelled request must
            // not be sent again.
            ErrorKind::CancelledByAdmin => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::RateLimited => Fault::Upstream,
            ErrorKind::NotReady | ErrorKind::CancelledByAdmin | ErrorKind::UploadCapacity => {
                Fault::Gateway
            }
            _ => Fault::Downstream,
        }
    }

    /// The request log's outcome of a request the gateway answered with
    /// this error itself.
    pub fn outcome(self) -> llmgw_proto::v1::Outcome {
        use llmgw_proto::v1::Outcome;
        match self {
            ErrorKind::UpstreamTimeout => Outcome::Timeout,
            ErrorKind::UpstreamUnavailable | ErrorKind::RateLimited => Outcome::UpstreamError,
            ErrorKind::CancelledByAdmin => Outcome::CancelledByAdmin,
            // Refused: authentication, validation, limits, and a gateway
            // that cannot serve yet.
            _ => Outcome::Refused,
        }
    }

    /// Whether the client was refused before presenting a valid key.
    pub fn unauthenticated(self) -> Option<&'static str> {
        match self {
            ErrorKind::MissingKey => Some("missing_key"),
            ErrorKind::InvalidKey => Some("invalid_key"),
            ErrorKind::ExpiredKey => Some("expired_key"),
            _ => None,
        }
    }

    /// The OpenAI `type`.
    pub fn openai_type(self) -> &'static str {
        if self == ErrorKind::BudgetExhausted {
            // OpenAI's own answer when an account's quota is spent.
            return "insufficient_quota";
        }
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400 | 405 | 408 | 413 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The Anthropic error `type`.
    pub fn anthropic_type(self) -> &'static str {
        if self == ErrorKind::BudgetExhausted {
            // Anthropic's type for "out of credits or spend limit reached"
            // (sent with 429 here so that every SDK stops on
            // `x-should-retry: false`; see docs/limits.md).
            return "billing_error";
        }
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400 | 405 | 408 => "invalid_request_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }

    /// A stable machine-readable code (OpenAI's `code`).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::MissingKey => "missing_api_key",
            ErrorKind::InvalidKey => "invalid_api_key",
            ErrorKind::ExpiredKey => "expired_api_key",
            ErrorKind::ModelNotAllowed => "model_not_allowed",
            ErrorKind::UnknownModel => "model_not_found",
            ErrorKind::BadRequest => "invalid_request",
            ErrorKind::BodyTooLarge => "request_too_large",
            ErrorKind::BodyTimeout => "request_timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NotReady => "gateway_not_ready",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::LimitExceeded => "rate_limit_exceeded",
            ErrorKind::BudgetExhausted => "insufficient_quota",
            ErrorKind::CancelledByAdmin => "cancelled_by_admin",
            ErrorKind::UploadCapacity => "upload_capacity_exhausted",
        }
    }
}

/// What went wrong with one upstream attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    Connect(String),
    /// No response head within the first-byte timeout.
    FirstByteTimeout,
    /// The upstream took none of an upload's body for the idle timeout.
    UploadStalled,
    /// The request failed after connecting, before a response head.
    Request(String),
    /// The deadline left no time for this attempt.
    Deadline,
    /// The client's upload failed while it was being sent (over the size
    /// limit, too slow, not a well-formed form): the client's fault, not
    /// the target's, and not retried.
    Upload(ErrorKind, String),
}

impl AttemptError {
    pub fn retryable(&self) -> bool {
        !matches!(self, AttemptError::Deadline | AttemptError::Upload(..))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            AttemptError::FirstByteTimeout
            | AttemptError::UploadStalled
            | AttemptError::Deadline => ErrorKind::UpstreamTimeout,
            AttemptError::Upload(kind, _) => *kind,
            _ => ErrorKind::UpstreamUnavailable,
        }
    }

    /// The attempt span's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect",
            AttemptError::FirstByteTimeout
            | AttemptError::UploadStalled
            | AttemptError::Deadline => "timeout",
            AttemptError::Request(_) => "request",
            AttemptError::Upload(..) => "upload",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            AttemptError::Connect(e) => format!("connect error: {e}"),
            AttemptError::FirstByteTimeout => "no response before the first-byte timeout".into(),
            AttemptError::UploadStalled => {
                "the upstream took none of the upload for the idle timeout".into()
            }
            AttemptError::Request(e) => format!("request failed: {e}"),
            AttemptError::Deadline => "request deadline reached".into(),
            AttemptError::Upload(_, m) => m.clone(),
        }
    }
}

/// Upstream statuses worth another attempt on the same target.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504 | 529)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_know_status_and_fault() {
        assert_eq!(ErrorKind::InvalidKey.status(), 401);
        assert_eq!(ErrorKind::ModelNotAllowed.status(), 403);
        assert_eq!(ErrorKind::UnknownModel.status(), 404);
        assert_eq!(ErrorKind::BodyTooLarge.status(), 413);
        assert_eq!(ErrorKind::BodyTimeout.status(), 408);
        assert_eq!(ErrorKind::BodyTimeout.fault(), Fault::Downstream);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::UpstreamUnavailable.fault(), Fault::Upstream);
        assert_eq!(ErrorKind::BadRequest.fault(), Fault::Downstream);
        assert!(retryable_status(529) && !retryable_status(429) && !retryable_status(400));
        assert!(!AttemptError::Deadline.retryable());
        assert_eq!(ErrorKind::UploadCapacity.status(), 503);
        assert_eq!(ErrorKind::UploadCapacity.fault(), Fault::Gateway);
        assert_eq!(ErrorKind::UploadCapacity.openai_type(), "server_error");
    }

    #[test]
    fn kinds_know_their_outcome() {
        use llmgw_proto::v1::Outcome;
        assert_eq!(ErrorKind::InvalidKey.outcome(), Outcome::Refused);
        assert_eq!(ErrorKind::BodyTooLarge.outcome(), Outcome::Refused);
        assert_eq!(ErrorKind::UnknownModel.outcome(), Outcome::Refused);
        assert_eq!(ErrorKind::UpstreamTimeout.outcome(), Outcome::Timeout);
        assert_eq!(AttemptError::Deadline.kind().outcome(), Outcome::Timeout);
        assert_eq!(
            AttemptError::Connect("refused".into()).kind().outcome(),
            Outcome::UpstreamError
        );
        assert_eq!(ErrorKind::MissingKey.unauthenticated(), Some("missing_key"));
        // The gateway's own limits refuse; an upstream's 429 is its error.
        assert_eq!(ErrorKind::LimitExceeded.outcome(), Outcome::Refused);
        assert_eq!(ErrorKind::BudgetExhausted.outcome(), Outcome::Refused);
        assert_eq!(ErrorKind::RateLimited.outcome(), Outcome::UpstreamError);
        assert_eq!(ErrorKind::BudgetExhausted.status(), 429);
        assert_eq!(
            ErrorKind::BudgetExhausted.openai_type(),
            "insufficient_quota"
        );
        assert_eq!(ErrorKind::BudgetExhausted.anthropic_type(), "billing_error");
        assert_eq!(
            ErrorKind::LimitExceeded.anthropic_type(),
            "rate_limit_error"
        );
        assert_eq!(ErrorKind::LimitExceeded.code(), "rate_limit_exceeded");
        assert_eq!(ErrorKind::ModelNotAllowed.unauthenticated(), None);
    }
}
