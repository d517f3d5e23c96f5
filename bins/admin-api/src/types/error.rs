//! The error body every admin route answers with when it fails.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error answer: `{"status": 404, "error": "Not Found", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub status: u16,
    /// The status' reason phrase.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}
