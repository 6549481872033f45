//! A failure below identity (the database, mostly), carried as text with whether it was an
//! outage. Identity's errors hold text so that no driver type leaks through its API; the outage
//! flag is what the API needs to answer 503 (retry later, nothing was done) instead of 500 when
//! the database restarts under a request.

/// The text of a failure and whether the dependency was unreachable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    message: String,
    outage: bool,
}

impl Failure {
    /// The database (or another dependency) could not be reached or went away.
    pub fn is_outage(&self) -> bool {
        self.outage
    }
}

/// Whether a database error means the database could not be reached or went away (a restart,
/// a failover, the connection limit), rather than a fault in a query or the data.
pub fn is_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 connection exceptions, 57P operator intervention (shutdown, crash
        // recovery), 53300 too many connections.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self {
            outage: is_outage(&error),
            message: error.to_string(),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            outage: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<crate::users::UserError> for Failure {
    fn from(error: crate::users::UserError) -> Self {
        match error {
            crate::users::UserError::Database(failure) => failure,
            other => other.to_string().into(),
        }
    }
}

impl From<crate::sessions::SessionError> for Failure {
    fn from(error: crate::sessions::SessionError) -> Self {
        match error {
            crate::sessions::SessionError::Database(failure) => failure,
            other => other.to_string().into(),
        }
    }
}

impl From<crate::password::HashError> for Failure {
    fn from(error: crate::password::HashError) -> Self {
        error.to_string().into()
    }
}

impl From<crate::mfa::MfaError> for Failure {
    fn from(error: crate::mfa::MfaError) -> Self {
        match error {
            crate::mfa::MfaError::Database(failure) => failure,
            other => other.to_string().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_an_outage_and_a_bad_query_is_not() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(Failure::from(sqlx::Error::Io(reset)).is_outage());
        assert!(Failure::from(sqlx::Error::PoolTimedOut).is_outage());
        assert!(!Failure::from(sqlx::Error::RowNotFound).is_outage());
        assert!(!Failure::from("the random number generator failed").is_outage());
    }
}
