//! The store's error type.

/// What can go wrong talking to the database. `Display` prints one layer; the cause is kept as
/// `source` and never shown to end users (it may contain SQL).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("configuration error: {0}")]
    Config(&'static str),
    #[error("data directory error")]
    DataDir(#[source] std::io::Error),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    #[error("invalid: {0}")]
    Invalid(String),
    /// A caller's parameter is wrong: `parameter` names it (as the caller spelled it, for an
    /// API's error details) and `message` says why, in words safe to show.
    #[error("invalid {parameter}: {message}")]
    InvalidParameter {
        parameter: &'static str,
        message: String,
    },
}

impl StoreError {
    /// The SQLSTATE of a database error, if that is what this is.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => {
                error.code().map(|code| code.into_owned())
            }
            _ => None,
        }
    }

    /// Row-level security or a missing privilege refused the statement.
    pub fn is_access_denied(&self) -> bool {
        matches!(self.sqlstate().as_deref(), Some("42501"))
    }

    /// Worth retrying as is: the connection dropped, the pool timed out, or a serialisation
    /// conflict or deadlock aborted the transaction.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => true,
            _ => matches!(
                self.sqlstate().as_deref(),
                Some("40001" | "40P01" | "57P01" | "08006" | "08003")
            ),
        }
    }
}
