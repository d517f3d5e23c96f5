//! Calling AE title checks: open, or only the configured remote AEs.

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use std::collections::HashSet;

/// Accepts any caller, or only the listed AE titles.
#[derive(Debug, Clone)]
pub struct CallingAeFilter {
    allowed: Option<HashSet<String>>,
}

impl CallingAeFilter {
    /// Accepts every calling AE title.
    pub fn open() -> Self {
        Self { allowed: None }
    }
    /// Accepts only these AE titles (compared without padding).
    pub fn only(titles: impl IntoIterator<Item = String>) -> Self {
        Self { allowed: Some(titles.into_iter().map(|t| t.trim().to_string()).collect()) }
    }
    /// Whether a calling AE title is accepted.
    pub fn allows(&self, calling: &str) -> bool {
        self.allowed.as_ref().is_none_or(|set| set.contains(calling.trim()))
    }
}

impl AccessControl for CallingAeFilter {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        _called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if self.allows(calling_ae_title) {
            Ok(())
        } else {
            tracing::warn!(calling = calling_ae_title, "association refused: calling AE title not configured");
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
    }
}
