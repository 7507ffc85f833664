//! SSM adapter: documents, the agent's registration, commands, Parameter Store.

use async_trait::async_trait;
use aws_sdk_ssm::operation::RequestId;
use aws_sdk_ssm::types::{DocumentFormat, DocumentType, InstanceInformationStringFilter};

use super::AccountClients;
use crate::cloud::{
    Call, CloudError, CloudResult, CommandRequest, DocumentVersion, ErrorKind, Invocation, Ssm,
};
use crate::ids::InstanceId;

fn none_if_missing<T>(r: Result<T, CloudError>) -> CloudResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(ErrorKind::NotFound) || e.code.as_deref() == Some("InvalidDocumentVersion") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn version_of(d: &aws_sdk_ssm::types::DocumentDescription) -> DocumentVersion {
    DocumentVersion {
        name: d.name().unwrap_or_default().to_owned(),
        version: d.document_version().unwrap_or_default().to_owned(),
        hash: d.hash().map(str::to_owned),
        latest_version: d.latest_version().map(str::to_owned),
    }
}

#[async_trait]
impl Ssm for AccountClients {
    async fn parameter(&self, name: &str) -> CloudResult<Option<String>> {
        let r =
            self.ssm.get_parameter().name(name).send().await.map_err(CloudError::of("ssm", "GetParameter"));
        Ok(none_if_missing(r)?.and_then(|o| o.parameter().and_then(|p| p.value()).map(str::to_owned)))
    }

    async fn describe_document(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> CloudResult<Option<DocumentVersion>> {
        let r = self
            .ssm
            .describe_document()
            .name(name)
            .set_document_version(version.map(str::to_owned))
            .send()
            .await
            .map_err(CloudError::of("ssm", "DescribeDocument"));
        Ok(none_if_missing(r)?.and_then(|o| o.document().map(version_of)))
    }

    async fn document_versions(&self, name: &str) -> CloudResult<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self.ssm.list_document_versions().name(name).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(CloudError::of("ssm", "ListDocumentVersions"))?;
            out.extend(
                page.document_versions().iter().filter_map(|v| v.document_version().map(str::to_owned)),
            );
        }
        Ok(out)
    }

    async fn create_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)> {
        let out = self
            .ssm
            .create_document()
            .name(name)
            .content(content)
            .document_type(DocumentType::Command)
            .document_format(DocumentFormat::Json)
            .send()
            .await
            .map_err(CloudError::of("ssm", "CreateDocument"))?;
        let d = out
            .document_description()
            .ok_or_else(|| CloudError::missing("ssm", "CreateDocument", "DocumentDescription"))?;
        Ok((version_of(d), Call::new("ssm:CreateDocument", out.request_id())))
    }

    async fn update_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)> {
        let out = self
            .ssm
            .update_document()
            .name(name)
            .content(content)
            .document_format(DocumentFormat::Json)
            .document_version("$LATEST")
            .send()
            .await
            .map_err(CloudError::of("ssm", "UpdateDocument"))?;
        let d = out
            .document_description()
            .ok_or_else(|| CloudError::missing("ssm", "UpdateDocument", "DocumentDescription"))?;
        Ok((version_of(d), Call::new("ssm:UpdateDocument", out.request_id())))
    }

    async fn ping_status(&self, instance: &InstanceId) -> CloudResult<Option<String>> {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance.as_str())
            .build()
            .map_err(|e| {
                CloudError::new("ssm", "DescribeInstanceInformation", ErrorKind::Other, e.to_string())
            })?;
        let mut pages = self.ssm.describe_instance_information().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(CloudError::of("ssm", "DescribeInstanceInformation"))?;
            if let Some(i) =
                page.instance_information_list().iter().find(|i| i.instance_id() == Some(instance.as_str()))
            {
                return Ok(Some(i.ping_status().map(|p| p.as_str().to_owned()).unwrap_or_default()));
            }
        }
        Ok(None)
    }

    async fn send_command(&self, request: &CommandRequest) -> CloudResult<(String, Call)> {
        let mut req = self
            .ssm
            .send_command()
            .document_name(&request.document)
            .document_version(&request.version)
            .instance_ids(request.instance.as_str())
            .output_s3_bucket_name(&request.output_bucket)
            .output_s3_key_prefix(&request.output_prefix)
            .comment(&request.comment)
            .timeout_seconds(request.delivery_timeout_seconds);
        for (k, v) in &request.parameters {
            req = req.parameters(k, vec![v.clone()]);
        }
        let out = req.send().await.map_err(CloudError::of("ssm", "SendCommand"))?;
        let id = out
            .command()
            .and_then(|c| c.command_id())
            .ok_or_else(|| CloudError::missing("ssm", "SendCommand", "CommandId"))?
            .to_owned();
        Ok((id, Call::new("ssm:SendCommand", out.request_id())))
    }

    async fn invocation(
        &self,
        command_id: &str,
        instance: &InstanceId,
        plugin: &str,
    ) -> CloudResult<Option<Invocation>> {
        let r = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance.as_str())
            .plugin_name(plugin)
            .send()
            .await
            .map_err(CloudError::of("ssm", "GetCommandInvocation"));
        let out = match r {
            Ok(o) => o,
            // Right after SendCommand the invocation may not exist yet.
            Err(e) if e.code.as_deref() == Some("InvocationDoesNotExist") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Invocation {
            status: out.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            status_details: out.status_details().map(str::to_owned),
            response_code: Some(out.response_code()).filter(|c| *c != -1),
            stdout: out.standard_output_content().unwrap_or_default().to_owned(),
            stderr: out.standard_error_content().unwrap_or_default().to_owned(),
        }))
    }
}
