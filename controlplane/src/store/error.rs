//! What can go wrong in the store and the domain code above it (apply,
//! logs): each variant says what went wrong, not how a client hears it.
//! The gRPC layer maps them onto status codes in one place, `status.rs`
//! at the crate root.

use crate::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request or the configuration breaks a rule; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The object (or request log) named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object of that name, or a key with that secret, exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The write conflicts with what is stored: a provider a model still
    /// uses, a broken row an update does not repair.
    #[error("{0}")]
    InUse(String),
    /// The query would read more than the store allows; narrow it.
    #[error("{0}")]
    TooLarge(String),
    /// The database failed; the details are for our log, not for clients.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored secret cannot be sealed or opened.
    #[error("stored secret: {0}")]
    Secret(#[from] SecretError),
}

impl From<llmgw_core::ValidationError> for StoreError {
    fn from(e: llmgw_core::ValidationError) -> Self {
        StoreError::Invalid(e.0)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The longest error message sent to a client. The message travels in the
/// `grpc-message` header: one that echoed a large value (a 100 KB regex)
/// would exceed the client's header limit, and the client would see only
/// "h2 protocol error".
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// `m` cut to [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
pub fn bounded(mut m: String) -> String {
    if m.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE - 3;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push('…');
    }
    m
}
