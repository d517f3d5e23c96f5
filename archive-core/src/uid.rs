//! Typed DICOM unique identifiers (PS3.5 §9).
//!
//! A UID is at most 64 characters of digits and dots, made of non-empty numeric
//! components without leading zeros (a single `0` is allowed). Each level of the
//! information model has its own newtype so that a series UID can never be passed
//! where a study UID is expected. Because a valid UID contains only digits and
//! dots and never an empty component, a UID is always safe to use as a path segment.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    /// The string is empty.
    #[error("uid is empty")]
    Empty,
    /// The string is longer than 64 characters.
    #[error("uid is {0} characters long, more than 64")]
    TooLong(usize),
    /// The string holds a character other than a digit or a dot.
    #[error("uid contains the character {0:?}; only digits and dots are allowed")]
    BadCharacter(char),
    /// A component between dots is empty.
    #[error("uid has an empty component")]
    EmptyComponent,
    /// A component has a leading zero.
    #[error("uid component {0:?} has a leading zero")]
    LeadingZero(String),
}

/// Checks a UID string per PS3.5 §9.1. Trailing NUL or space padding must already be removed.
pub fn validate_uid(s: &str) -> Result<(), UidError> {
    if s.is_empty() {
        return Err(UidError::Empty);
    }
    if s.len() > 64 {
        return Err(UidError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_digit() || *c == '.')) {
        return Err(UidError::BadCharacter(c));
    }
    for comp in s.split('.') {
        if comp.is_empty() {
            return Err(UidError::EmptyComponent);
        }
        if comp.len() > 1 && comp.starts_with('0') {
            return Err(UidError::LeadingZero(comp.to_string()));
        }
    }
    Ok(())
}

/// Removes the padding a DICOM UI value may carry (trailing NUL, spaces on both ends).
pub fn trim_uid(s: &str) -> &str {
    s.trim_end_matches('\0').trim()
}

macro_rules! uid_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a UID string (padding is trimmed first).
            pub fn new(s: impl AsRef<str>) -> Result<Self, UidError> {
                let s = trim_uid(s.as_ref());
                validate_uid(s)?;
                Ok(Self(s.to_string()))
            }
            /// The UID as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl FromStr for $name {
            type Err = UidError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = UidError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(u: $name) -> String {
                u.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

uid_type!(
    /// Study Instance UID (0020,000D).
    StudyUid
);
uid_type!(
    /// Series Instance UID (0020,000E).
    SeriesUid
);
uid_type!(
    /// SOP Instance UID (0008,0018).
    SopInstanceUid
);
uid_type!(
    /// SOP Class UID (0008,0016).
    SopClassUid
);
uid_type!(
    /// Transfer Syntax UID (0002,0010).
    TransferSyntaxUid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_uids() {
        for ok in ["1.2.840.10008.1.2", "0", "1.0.3", "2.25.329800735698586629295641978511506172918"] {
            assert!(validate_uid(ok).is_ok(), "{ok}");
        }
        assert_eq!(StudyUid::new("1.2.3\0").unwrap().as_str(), "1.2.3");
        assert_eq!(StudyUid::new(" 1.2.3 ").unwrap().as_str(), "1.2.3");
    }

    #[test]
    fn rejects_invalid_uids() {
        assert_eq!(validate_uid(""), Err(UidError::Empty));
        assert_eq!(validate_uid(&"1".repeat(65)), Err(UidError::TooLong(65)));
        assert_eq!(validate_uid("1.2.a"), Err(UidError::BadCharacter('a')));
        assert_eq!(validate_uid("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(validate_uid(".1"), Err(UidError::EmptyComponent));
        assert_eq!(validate_uid("1.2."), Err(UidError::EmptyComponent));
        assert_eq!(validate_uid(".."), Err(UidError::EmptyComponent));
        assert_eq!(validate_uid("1.02"), Err(UidError::LeadingZero("02".into())));
        assert_eq!(validate_uid("1/2"), Err(UidError::BadCharacter('/')));
        assert!(SeriesUid::new("../etc").is_err());
    }

    #[test]
    fn serde_validates() {
        let u: Result<StudyUid, _> = serde_json::from_str("\"1.2.x\"");
        assert!(u.is_err());
        let u: StudyUid = serde_json::from_str("\"1.2.3\"").unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"1.2.3\"");
    }
}
