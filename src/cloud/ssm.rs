//! SSM: the collection documents (registered by content digest), the analysis
//! instance's agent, commands and their results, and Parameter Store (the AMI).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Call, CloudResult};
use crate::ids::InstanceId;

/// A document version as SSM describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentVersion {
    pub name: String,
    pub version: String,
    /// SHA-256 of the content SSM stores (hex), as SSM reports it.
    pub hash: Option<String>,
    pub latest_version: Option<String>,
}

/// SendCommand of one document on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRequest {
    pub document: String,
    pub version: String,
    pub instance: InstanceId,
    pub parameters: Vec<(String, String)>,
    /// Where the agent writes the full stdout and stderr (GetCommandInvocation keeps
    /// only the first 24,000 characters).
    pub output_bucket: String,
    pub output_prefix: String,
    pub comment: String,
    /// How long the command may wait for the agent before it is `DeliveryTimedOut`.
    pub delivery_timeout_seconds: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// `Pending`, `InProgress`, `Delayed`, `Success`, `Cancelled`, `TimedOut`, `Failed`...
    pub status: String,
    pub status_details: Option<String>,
    pub response_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    pub fn is_terminal(&self) -> bool {
        !matches!(self.status.as_str(), "Pending" | "InProgress" | "Delayed" | "Cancelling")
    }
}

#[async_trait]
pub trait Ssm: Send + Sync {
    /// A Parameter Store value (`None` when the parameter does not exist).
    async fn parameter(&self, name: &str) -> CloudResult<Option<String>>;
    /// A document's version (`None`: the default), `None` when the document does not exist.
    async fn describe_document(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> CloudResult<Option<DocumentVersion>>;
    /// Every version number of a document.
    async fn document_versions(&self, name: &str) -> CloudResult<Vec<String>>;
    async fn create_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)>;
    /// A new version of an existing document.
    async fn update_document(&self, name: &str, content: &str) -> CloudResult<(DocumentVersion, Call)>;
    /// The ping status of a managed instance (`Online`...), `None` when SSM does not
    /// know it. Reads every page (a first page alone can miss the instance).
    async fn ping_status(&self, instance: &InstanceId) -> CloudResult<Option<String>>;
    async fn send_command(&self, request: &CommandRequest) -> CloudResult<(String, Call)>;
    async fn invocation(
        &self,
        command_id: &str,
        instance: &InstanceId,
        plugin: &str,
    ) -> CloudResult<Option<Invocation>>;
}
