//! Keeps a response exactly as the service sent it, for capture: an interceptor attached
//! to one request copies the body after the SDK has read it. What is stored as evidence
//! is then AWS's own bytes, not our reading of them.

use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bytes::Bytes;

use crate::cloud::{CloudError, CloudResult, Raw};

/// The body of the one response of the request it is attached to.
#[derive(Debug, Clone, Default)]
pub struct RawResponse(Arc<Mutex<Option<(Bytes, String)>>>);

impl Intercept for RawResponse {
    fn name(&self) -> &'static str {
        "cleanroom-raw-response"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        if let Some(body) = response.body().bytes() {
            let content_type =
                response.headers().get("content-type").unwrap_or("application/octet-stream").to_owned();
            // The last attempt's body wins: that is the one the SDK returned.
            *self.0.lock().expect("raw response lock") = Some((Bytes::copy_from_slice(body), content_type));
        }
        Ok(())
    }
}

impl RawResponse {
    fn take(&self) -> Option<(Bytes, String)> {
        self.0.lock().expect("raw response lock").take()
    }
}

/// Sends one request with a [`RawResponse`] attached and returns the output with the
/// raw answer. `send` gets the interceptor to attach (`.customize().interceptor(raw)`).
pub async fn captured<O, E, F, Fut>(
    service: &'static str,
    operation: &'static str,
    request: serde_json::Value,
    request_id: impl Fn(&O) -> Option<String>,
    send: F,
) -> CloudResult<(O, Raw)>
where
    F: FnOnce(RawResponse) -> Fut,
    Fut: Future<Output = Result<O, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let raw = RawResponse::default();
    let out = send(raw.clone()).await.map_err(CloudError::of(service, operation))?;
    let (body, content_type) = raw
        .take()
        .ok_or_else(|| CloudError::missing(service, operation, "a response body to keep as evidence"))?;
    let raw = Raw {
        operation: format!("{service}:{operation}"),
        request,
        request_id: request_id(&out),
        content_type,
        body,
    };
    Ok((out, raw))
}
