//! One error type for every failed AWS call: which service and operation, AWS's error
//! code and message, and the request id that ties it to CloudTrail.

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What kind of failure a call met, for decisions (retry, fail closed, explain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
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
    /// The call did not complete: connection refused, timeout.
    Unreachable,
    /// Any other service error.
    Other,
}

#[derive(Debug, Clone)]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub kind: AwsErrorKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl fmt::Display for AwsError {
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

impl StdError for AwsError {}

impl AwsError {
    /// Classifies an SDK error. The SDK has already retried throttling and transient
    /// errors by the time it reaches here.
    pub fn from_sdk<E, R>(service: &'static str, operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let (code, message, request_id) = match &err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let mut message = e.message().unwrap_or_default().to_owned();
                if e.code().is_none() && message.is_empty() {
                    // No parsable error body: show what came back, briefly.
                    message = format!("unrecognised response: {:?}", ctx.raw());
                    message.truncate(400);
                }
                (e.code().map(str::to_owned), message, e.meta().extra("aws_request_id").map(str::to_owned))
            }
            _ => (None, DisplayErrorContext(&err).to_string(), None),
        };
        let kind = match (&err, code.as_deref()) {
            (_, Some(c)) => classify_code(c),
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), None)
                if has_credentials_error(&err) =>
            {
                AwsErrorKind::Credentials
            }
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), None) => AwsErrorKind::Unreachable,
            _ if has_credentials_error(&err) => AwsErrorKind::Credentials,
            _ => AwsErrorKind::Other,
        };
        Self { service, operation, kind, code, message, request_id }
    }

    /// `map_err` adapter: `.map_err(AwsError::of("ec2", "DescribeInstances"))`.
    pub fn of<E, R>(service: &'static str, operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        move |e| Self::from_sdk(service, operation, e)
    }

    pub fn is(&self, kind: AwsErrorKind) -> bool {
        self.kind == kind
    }
}

/// AWS error codes differ by service; these are the families we act on.
pub fn classify_code(code: &str) -> AwsErrorKind {
    match code {
        "DryRunOperation" => AwsErrorKind::DryRunAllowed,
        "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "ExpiredTokenException" => AwsErrorKind::AccessDenied,
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown"
        | "RequestThrottled" => AwsErrorKind::Throttled,
        c if c.ends_with(".NotFound")
            || c.ends_with(".Malformed") && c.starts_with("InvalidInstanceID")
            || c.starts_with("NoSuch")
            || c == "NotFoundException"
            || c == "NotFound"
            || c == "InvalidDocument"
            || c == "ParameterNotFound" =>
        {
            AwsErrorKind::NotFound
        }
        _ => AwsErrorKind::Other,
    }
}

fn has_credentials_error(err: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(c) = cause {
        if c.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_into_families() {
        assert_eq!(classify_code("DryRunOperation"), AwsErrorKind::DryRunAllowed);
        assert_eq!(classify_code("UnauthorizedOperation"), AwsErrorKind::AccessDenied);
        assert_eq!(classify_code("InvalidInstanceID.NotFound"), AwsErrorKind::NotFound);
        assert_eq!(classify_code("InvalidInstanceID.Malformed"), AwsErrorKind::NotFound);
        assert_eq!(classify_code("NoSuchBucket"), AwsErrorKind::NotFound);
        assert_eq!(classify_code("RequestLimitExceeded"), AwsErrorKind::Throttled);
        assert_eq!(classify_code("IncorrectState"), AwsErrorKind::Other);
    }
}
