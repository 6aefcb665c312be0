//! The one place where domain errors become gRPC statuses: the store, apply
//! and the log queries say what went wrong (`StoreError`); the services
//! answer with the matching code. Messages are bounded to
//! `MAX_ERROR_MESSAGE` bytes; internal details (database, migration,
//! sealed-secret errors) stay in our log and the client gets a generic
//! message.

use tonic::Status;

use crate::store::{bounded, StoreError};
use crate::upstream_call::UpstreamError;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Invalid(m) => Status::invalid_argument(bounded(m)),
            StoreError::NotFound(m) => Status::not_found(bounded(m)),
            StoreError::AlreadyExists(m) => Status::already_exists(bounded(m)),
            StoreError::InUse(m) | StoreError::TooLarge(m) => {
                Status::failed_precondition(bounded(m))
            }
            other => {
                tracing::error!(error = %other, "admin request failed");
                Status::internal("internal error; see the control plane's log")
            }
        }
    }
}

/// Who is at fault: an upstream that does not answer, or answers 429 or
/// 5xx, is `Unavailable` (try again later); a refused key, another error
/// status or an answer that is not a models list is `FailedPrecondition`
/// (the provider's configuration needs a change). Messages carry no secret.
impl From<UpstreamError> for Status {
    fn from(e: UpstreamError) -> Status {
        match e {
            UpstreamError::Unreachable(m) => Status::unavailable(bounded(m)),
            UpstreamError::Upstream { status, message } if status == 429 || status >= 500 => {
                Status::unavailable(bounded(message))
            }
            UpstreamError::Upstream { message: m, .. }
            | UpstreamError::Unusable(m)
            | UpstreamError::KeyRefused(m)
            | UpstreamError::BadAnswer(m) => Status::failed_precondition(bounded(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_ERROR_MESSAGE;

    #[test]
    fn error_messages_are_bounded_on_a_char_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = format!("invalid regex '{}'", "é".repeat(100_000));
        let s = Status::from(StoreError::Invalid(long));
        assert!(
            s.message().len() <= MAX_ERROR_MESSAGE,
            "{}",
            s.message().len()
        );
        assert!(s.message().starts_with("invalid regex '"));
        assert!(s.message().ends_with('…'));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn each_error_has_its_code_and_internal_details_stay_out() {
        let cases = [
            (
                StoreError::Invalid("i".into()),
                tonic::Code::InvalidArgument,
                "i",
            ),
            (StoreError::NotFound("n".into()), tonic::Code::NotFound, "n"),
            (
                StoreError::AlreadyExists("a".into()),
                tonic::Code::AlreadyExists,
                "a",
            ),
            (
                StoreError::InUse("u".into()),
                tonic::Code::FailedPrecondition,
                "u",
            ),
            (
                StoreError::TooLarge("t".into()),
                tonic::Code::FailedPrecondition,
                "t",
            ),
            (
                StoreError::Db(sqlx::Error::Protocol("secret detail".into())),
                tonic::Code::Internal,
                "internal error; see the control plane's log",
            ),
        ];
        for (e, code, message) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, message));
        }
    }

    #[test]
    fn upstream_listing_errors_say_who_is_at_fault() {
        use UpstreamError as U;
        let upstream = |status| U::Upstream {
            status,
            message: "m".into(),
        };
        let cases = [
            (U::Unreachable("m".into()), tonic::Code::Unavailable),
            (upstream(503), tonic::Code::Unavailable),
            (upstream(429), tonic::Code::Unavailable),
            (upstream(404), tonic::Code::FailedPrecondition),
            (U::KeyRefused("m".into()), tonic::Code::FailedPrecondition),
            (U::BadAnswer("m".into()), tonic::Code::FailedPrecondition),
            (U::Unusable("m".into()), tonic::Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, "m"));
        }
    }
}
