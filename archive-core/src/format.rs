//! Versioned on-disk formats: every durable record carries a format version that decoding
//! reads, and each version knows the one before it and how to migrate it up.
//!
//! The approach is garage's (`src/util/migrate.rs`): a record type implements [`Versioned`]
//! with its [`Versioned::VERSION`], the type of the format it replaced
//! ([`Versioned::Previous`], [`NoPrevious`] for the first format) and a
//! [`Versioned::migrate`] from that type. [`decode`] reads the stored version marker (the
//! `v` field of the JSON record) and then:
//!
//! - the current version: decodes the current type (one parse, the common case);
//! - an older version: decodes the type of that version and migrates it up, one version at
//!   a time, through the chain of `Previous` types;
//! - a newer version (written by a newer vna): refuses with
//!   [`FormatError::UnsupportedVersion`], never a panic and never a guess;
//! - a version no type of the chain has (older than the first format, or missing): refuses
//!   with [`FormatError::UnknownVersion`].
//!
//! # Adding a format version
//! To change a record's layout (say `StudyRecord` from version 1 to 2):
//! 1. keep the current struct as it is under a new name in a `v1` module
//!    (`pub struct StudyRecordV1 {..}`), with its `Versioned` impl unchanged (its
//!    `Previous` and `migrate` stay what they were);
//! 2. change the struct, set its `VERSION` to 2, `type Previous = v1::StudyRecordV1` and
//!    write `migrate` from the old struct (it sets `v` to 2);
//! 3. add a test that decodes bytes written by the old version (the fixtures under
//!    `testdata/formats/`, or a record encoded from the old struct) and checks the migrated
//!    value;
//! 4. record the change in `docs/formats.md`.
//!
//! Records are migrated when they are read; a record is stored in the new version the next
//! time it is written. Nothing rewrites the whole catalog.
//!
//! Audit records are the exception to "written in the new version": they are never
//! rewritten, and their hash covers the version they were written with
//! ([`crate::audit::AuditRecord::v`]), so a migration of an audit record keeps its stored `v`.
//!
//! Store-wide markers (the catalog's `schema_version` key, a warm segment's header, a tape
//! volume's label) are checked when the store opens, with the same error type.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why stored bytes could not be read as a format this vna knows.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer vna: this one knows formats up to `supported`.
    #[error(
        "{kind} format version {found} is newer than this vna supports (up to {supported}); \
         it was written by a newer vna"
    )]
    UnsupportedVersion {
        /// What was read (`study record`, `warm segment`…).
        kind: &'static str,
        /// The stored version.
        found: u32,
        /// The newest version this vna reads.
        supported: u32,
    },
    /// The stored version is none this vna ever wrote (older than the first format, or missing).
    #[error("{kind} has format version {found:?}, which no vna wrote (this one reads {oldest} to {supported})")]
    UnknownVersion {
        /// What was read.
        kind: &'static str,
        /// The stored version, `None` when there is no marker.
        found: Option<u32>,
        /// The oldest version this vna reads.
        oldest: u32,
        /// The newest version this vna reads.
        supported: u32,
    },
    /// The marker names a version this vna reads, but the bytes do not decode as it.
    #[error("{kind} (format version {version}) cannot be decoded")]
    Decode {
        /// What was read.
        kind: &'static str,
        /// The stored version.
        version: u32,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl FormatError {
    /// Whether the data was written by a newer vna (an upgrade of vna reads it).
    pub fn is_newer(&self) -> bool {
        matches!(self, FormatError::UnsupportedVersion { .. })
    }

    /// Checks a store-wide marker: `Ok(found)` when this vna reads that version.
    pub fn check_marker(kind: &'static str, found: u32, oldest: u32, supported: u32) -> Result<u32, FormatError> {
        if found > supported {
            Err(FormatError::UnsupportedVersion { kind, found, supported })
        } else if found < oldest {
            Err(FormatError::UnknownVersion { kind, found: Some(found), oldest, supported })
        } else {
            Ok(found)
        }
    }
}

/// A durable record with a format version and a migration from the format before it.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What the record is, for errors (`study record`).
    const KIND: &'static str;
    /// The version this type is, and the version new records are written in.
    const VERSION: u32;
    /// The format this one replaced ([`NoPrevious`] for the first one).
    type Previous: Versioned;
    /// Brings a record of the previous format up to this one.
    fn migrate(previous: Self::Previous) -> Self;
    /// The version marker stored in this record (its `v` field).
    fn stored_version(&self) -> u32;
}

/// The "format before the first one": a type with no values, so that the first format's
/// [`Versioned::migrate`] is `match previous {}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum NoPrevious {}

impl Versioned for NoPrevious {
    const KIND: &'static str = "nothing";
    const VERSION: u32 = 0;
    type Previous = NoPrevious;
    fn migrate(previous: Self::Previous) -> Self {
        previous
    }
    fn stored_version(&self) -> u32 {
        match *self {}
    }
}

/// Implements [`Versioned`] for the first format of a record type (its `Previous` is
/// [`NoPrevious`]); the type's version marker is its `v: u32` field.
///
/// `first_format!(StudyRecord, "study record", RECORD_VERSION);`
#[macro_export]
macro_rules! first_format {
    ($ty:ty, $kind:expr, $version:expr) => {
        impl $crate::format::Versioned for $ty {
            const KIND: &'static str = $kind;
            const VERSION: u32 = $version;
            type Previous = $crate::format::NoPrevious;
            fn migrate(previous: Self::Previous) -> Self {
                match previous {}
            }
            fn stored_version(&self) -> u32 {
                self.v
            }
        }
    };
}

/// The version marker alone (every other field ignored).
#[derive(Deserialize)]
struct Marker {
    #[serde(default)]
    v: Option<u32>,
}

/// The oldest version of `T`'s chain.
fn oldest<T: Versioned>() -> u32 {
    if T::Previous::VERSION == 0 {
        T::VERSION
    } else {
        oldest::<T::Previous>()
    }
}

/// Decodes a record written by this or any earlier version of `T`, migrating it up.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, FormatError> {
    // The common case in one parse: the current layout with the current marker.
    let first = match serde_json::from_slice::<T>(bytes) {
        Ok(value) if value.stored_version() == T::VERSION => return Ok(value),
        Ok(_) => None,
        Err(e) => Some(e),
    };
    let found = serde_json::from_slice::<Marker>(bytes).ok().and_then(|m| m.v);
    match found {
        Some(v) if v > T::VERSION => {
            Err(FormatError::UnsupportedVersion { kind: T::KIND, found: v, supported: T::VERSION })
        }
        Some(v) if v == T::VERSION => match first {
            Some(source) => Err(FormatError::Decode { kind: T::KIND, version: v, source }),
            // Unreachable: the fast path took it.
            None => serde_json::from_slice(bytes).map_err(|source| FormatError::Decode {
                kind: T::KIND,
                version: v,
                source,
            }),
        },
        Some(v) => decode_older::<T>(bytes, v),
        None => Err(FormatError::UnknownVersion {
            kind: T::KIND,
            found: None,
            oldest: oldest::<T>(),
            supported: T::VERSION,
        }),
    }
}

/// Decodes a record of version `found` (older than `T::VERSION`) through `T`'s chain.
fn decode_older<T: Versioned>(bytes: &[u8], found: u32) -> Result<T, FormatError> {
    let unknown = || FormatError::UnknownVersion {
        kind: T::KIND,
        found: Some(found),
        oldest: oldest::<T>(),
        supported: T::VERSION,
    };
    let previous = T::Previous::VERSION;
    if previous == 0 || found > previous {
        return Err(unknown());
    }
    let prev: T::Previous = if found == previous {
        serde_json::from_slice(bytes).map_err(|source| FormatError::Decode { kind: T::KIND, version: found, source })?
    } else {
        decode_older::<T::Previous>(bytes, found).map_err(|e| match e {
            FormatError::UnknownVersion { .. } => unknown(),
            other => other,
        })?
    };
    Ok(T::migrate(prev))
}

/// Encodes a record in the current format.
pub fn encode<T: Versioned>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1 of a test record: a name.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct RecV1 {
        v: u32,
        name: String,
    }
    first_format!(RecV1, "test record", 1);

    /// Version 2: the name split in two.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct RecV2 {
        v: u32,
        family: String,
        given: String,
    }
    impl Versioned for RecV2 {
        const KIND: &'static str = "test record";
        const VERSION: u32 = 2;
        type Previous = RecV1;
        fn migrate(p: RecV1) -> Self {
            let (family, given) = p.name.split_once('^').unwrap_or((&p.name, ""));
            RecV2 { v: 2, family: family.into(), given: given.into() }
        }
        fn stored_version(&self) -> u32 {
            self.v
        }
    }

    /// Version 3: a count added (defaults to zero).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct RecV3 {
        v: u32,
        family: String,
        given: String,
        count: u64,
    }
    impl Versioned for RecV3 {
        const KIND: &'static str = "test record";
        const VERSION: u32 = 3;
        type Previous = RecV2;
        fn migrate(p: RecV2) -> Self {
            RecV3 { v: 3, family: p.family, given: p.given, count: 0 }
        }
        fn stored_version(&self) -> u32 {
            self.v
        }
    }

    #[test]
    fn current_version_decodes_directly() {
        let r = RecV3 { v: 3, family: "Doe".into(), given: "Jo".into(), count: 4 };
        assert_eq!(decode::<RecV3>(&encode(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn older_versions_migrate_up_the_chain() {
        let v1 = encode(&RecV1 { v: 1, name: "Doe^Jo".into() }).unwrap();
        let want = RecV3 { v: 3, family: "Doe".into(), given: "Jo".into(), count: 0 };
        assert_eq!(decode::<RecV3>(&v1).unwrap(), want);
        let v2 = encode(&RecV2 { v: 2, family: "Doe".into(), given: "Jo".into() }).unwrap();
        assert_eq!(decode::<RecV3>(&v2).unwrap(), want);
    }

    #[test]
    fn a_newer_version_is_refused_with_a_typed_error() {
        // Decodes as the current struct (extra fields are ignored) but says version 4.
        let newer = br#"{"v":4,"family":"Doe","given":"Jo","count":1,"colour":"red"}"#;
        let e = decode::<RecV3>(newer).unwrap_err();
        assert!(matches!(e, FormatError::UnsupportedVersion { found: 4, supported: 3, .. }), "{e}");
        assert!(e.is_newer());
        // And one that does not decode as the current struct at all.
        let e = decode::<RecV1>(br#"{"v":9,"names":[1,2]}"#).unwrap_err();
        assert!(matches!(e, FormatError::UnsupportedVersion { found: 9, supported: 1, .. }), "{e}");
    }

    #[test]
    fn unknown_and_corrupt_records_are_errors_not_panics() {
        let e = decode::<RecV3>(br#"{"family":"Doe"}"#).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { found: None, oldest: 1, supported: 3, .. }), "{e}");
        let e = decode::<RecV3>(br#"{"v":0,"name":"x"}"#).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { found: Some(0), .. }), "{e}");
        let e = decode::<RecV3>(br#"{"v":3,"family":7}"#).unwrap_err();
        assert!(matches!(e, FormatError::Decode { version: 3, .. }), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = decode::<RecV3>(br#"{"v":1,"nom":"x"}"#).unwrap_err();
        assert!(matches!(e, FormatError::Decode { version: 1, .. }), "{e}");
        assert!(decode::<RecV3>(b"not json").is_err());
    }

    #[test]
    fn store_markers() {
        assert_eq!(FormatError::check_marker("warm segment", 1, 1, 2).unwrap(), 1);
        assert!(FormatError::check_marker("warm segment", 3, 1, 2).unwrap_err().is_newer());
        assert!(!FormatError::check_marker("warm segment", 0, 1, 2).unwrap_err().is_newer());
    }
}
