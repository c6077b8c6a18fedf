//! What the worker records with each result ([`ResultMeta`]: extra outputs, [`ImageMeta`],
//! [`ExecMeta`]) and how an output's snapshot is found ([`output_snapshot`]).

use dagr_solver::ResultRef;
use serde::{Deserialize, Serialize};

use crate::WorkerError;

/// What the worker records with each result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// Snapshot keys of outputs 1.. (output 0 is the result's id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecMeta>,
}

/// The image an `Image` result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub manifest_digest: String,
    /// The OCI image config's `config` section (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    #[serde(default)]
    pub config: serde_json::Value,
}

/// The process of an `Exec` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMeta {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ResultMeta {
    pub fn of(r: &ResultRef) -> ResultMeta {
        serde_json::from_value(r.metadata().clone()).unwrap_or_default()
    }

    pub(crate) fn into_value(self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The snapshot key of output `output` of a result.
pub fn output_snapshot(r: &ResultRef, output: u32) -> Result<String, WorkerError> {
    if output == 0 {
        return Ok(r.id().to_owned());
    }
    ResultMeta::of(r)
        .outputs
        .get(output as usize - 1)
        .cloned()
        .ok_or_else(|| WorkerError::NoOutput {
            id: r.id().to_owned(),
            output,
        })
}
