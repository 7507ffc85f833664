//! SDK errors turned into the domain's [`CloudError`]: which service and operation, AWS's
//! error code and message, and the request id that ties it to CloudTrail.

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::cloud::error::classify_code;
use crate::cloud::{CloudError, ErrorKind};

impl CloudError {
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
                ErrorKind::Credentials
            }
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), None) => ErrorKind::Unreachable,
            _ if has_credentials_error(&err) => ErrorKind::Credentials,
            _ => ErrorKind::Other,
        };
        // A failed credential provider quotes what it was given (a credential process's
        // stderr): this message goes to the terminal, the logs and custody records.
        let message = crate::redact::scrub(&message).into_owned();
        Self { service, operation, kind, code, message, request_id }
    }

    /// `map_err` adapter: `.map_err(CloudError::of("ec2", "DescribeInstances"))`.
    pub fn of<E, R>(service: &'static str, operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        move |e| Self::from_sdk(service, operation, e)
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
