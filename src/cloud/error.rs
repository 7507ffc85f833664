//! The one error of every cloud call, in domain terms: which service and operation,
//! what kind of failure (the decisions stages make), AWS's error code and message, and
//! the request id that ties it to CloudTrail. The AWS adapters build it from SDK errors
//! (`crate::aws::error`); the fake builds it directly.

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure a call met, for decisions (retry, fail closed, explain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A `DryRun` call that would have succeeded (`DryRunOperation`).
    DryRunAllowed,
    /// Not permitted: `UnauthorizedOperation`, `AccessDenied*`.
    AccessDenied,
    /// The named resource does not exist (`*.NotFound`, `NoSuch*`, `NotFoundException`).
    NotFound,
    /// Throttled after the SDK's retries ran out.
    Throttled,
    /// No usable credentials, or a role could not be assumed.
    Credentials,
    /// The call did not complete: connection refused, timeout. The change it asked for
    /// may or may not have been applied.
    Unreachable,
    /// Any other service error.
    Other,
}

#[derive(Debug, Clone)]
pub struct CloudError {
    pub service: &'static str,
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} failed", self.service, self.operation)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl StdError for CloudError {}

impl CloudError {
    pub fn new(
        service: &'static str,
        operation: &'static str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self { service, operation, kind, code: None, message: message.into(), request_id: None }
    }

    /// A response without a field it must carry: a named error at the boundary, never
    /// an unwrap.
    pub fn missing(service: &'static str, operation: &'static str, field: &str) -> Self {
        Self::new(service, operation, ErrorKind::Other, format!("response has no {field}"))
    }

    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }
}

/// AWS error codes differ by service; these are the families stages act on.
pub fn classify_code(code: &str) -> ErrorKind {
    match code {
        "DryRunOperation" => ErrorKind::DryRunAllowed,
        "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "ExpiredTokenException" => ErrorKind::AccessDenied,
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown"
        | "RequestThrottled" => ErrorKind::Throttled,
        c if c.ends_with(".NotFound")
            || c.ends_with(".Malformed") && c.starts_with("InvalidInstanceID")
            || c.starts_with("NoSuch")
            || c == "NotFoundException"
            || c == "NotFound"
            || c == "InvalidDocument"
            || c == "ParameterNotFound" =>
        {
            ErrorKind::NotFound
        }
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_into_families() {
        assert_eq!(classify_code("DryRunOperation"), ErrorKind::DryRunAllowed);
        assert_eq!(classify_code("UnauthorizedOperation"), ErrorKind::AccessDenied);
        assert_eq!(classify_code("InvalidInstanceID.NotFound"), ErrorKind::NotFound);
        assert_eq!(classify_code("InvalidInstanceID.Malformed"), ErrorKind::NotFound);
        assert_eq!(classify_code("NoSuchBucket"), ErrorKind::NotFound);
        assert_eq!(classify_code("RequestLimitExceeded"), ErrorKind::Throttled);
        assert_eq!(classify_code("IncorrectState"), ErrorKind::Other);
    }
}
