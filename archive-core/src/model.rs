//! Catalog records: patients, studies, series and instances.
//!
//! Every record carries a format version (`v`) that decoding reads (see [`crate::format`]):
//! a record of an older version is migrated up, one of a newer version is refused. Attribute values live in an [`AttrMap`]; counts, sizes, times and
//! locations are typed fields maintained by the catalog.

use crate::attribute::{AttrMap, Attribute};
use crate::checksum::Checksum;
use crate::tier::{ObjectKey, TierName};
use crate::uid::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid, TransferSyntaxUid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// Current version of the record formats.
pub const RECORD_VERSION: u32 = 1;

crate::first_format!(PatientRecord, "patient record", RECORD_VERSION);
crate::first_format!(StudyRecord, "study record", RECORD_VERSION);
crate::first_format!(SeriesRecord, "series record", RECORD_VERSION);
crate::first_format!(InstanceRecord, "instance record", RECORD_VERSION);

/// A patient's identity: the Patient ID within the domain of its issuer.
///
/// The same Patient ID from two hospitals is two patients; an empty issuer is a domain of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PatientKey {
    /// Issuer of Patient ID (0010,0021), empty when unknown.
    pub issuer: String,
    /// Patient ID (0010,0020), possibly empty.
    pub patient_id: String,
}

impl PatientKey {
    /// Builds a key; NUL characters are removed so that the key encodes unambiguously.
    pub fn new(issuer: impl Into<String>, patient_id: impl Into<String>) -> Self {
        let clean = |s: String| s.replace('\0', "");
        Self { issuer: clean(issuer.into()), patient_id: clean(patient_id.into()) }
    }
    /// The catalog key: issuer, NUL, patient id.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.issuer.len() + self.patient_id.len() + 1);
        k.extend_from_slice(self.issuer.as_bytes());
        k.push(0);
        k.extend_from_slice(self.patient_id.as_bytes());
        k
    }
}

/// Where one copy of an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The tier holding the copy.
    pub tier: TierName,
    /// The object's key in that tier.
    pub key: ObjectKey,
    /// When the copy was last read back and its checksum matched (at write time for ingest).
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: OffsetDateTime,
}

/// How many instances of a study or series have their copies on each combination of tiers.
///
/// The key is the sorted tier names of one instance's copies joined by `+` (`hot`,
/// `hot+s3`); the value counts the instances with exactly those copies. The combinations
/// are few, and they are enough to tell exactly which tiers a study is on and how
/// available its least available instance is, without reading its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Placement(pub std::collections::BTreeMap<String, u64>);

impl Placement {
    /// The key of an instance's copies.
    pub fn key_of(locations: &[Location]) -> String {
        let mut names: Vec<&str> = locations.iter().map(|l| l.tier.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join("+")
    }
    /// Counts an instance with these copies.
    pub fn add(&mut self, locations: &[Location]) {
        *self.0.entry(Self::key_of(locations)).or_default() += 1;
    }
    /// Stops counting an instance with these copies.
    pub fn remove(&mut self, locations: &[Location]) {
        let key = Self::key_of(locations);
        if let Some(n) = self.0.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }
    /// Whether nothing is counted (records written before placements were kept).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The tier-name sets and their instance counts.
    pub fn combinations(&self) -> impl Iterator<Item = (Vec<&str>, u64)> {
        self.0.iter().map(|(k, n)| (k.split('+').filter(|s| !s.is_empty()).collect(), *n))
    }
    /// Instances with a copy on a tier, per tier name.
    pub fn per_tier(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for (tiers, n) in self.combinations() {
            for t in tiers {
                *out.entry(t.to_string()).or_default() += n;
            }
        }
        out
    }
}

/// Who sent an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Calling AE title for DIMSE, `STOW-RS` (or `STOW-RS user NAME` for an authenticated
    /// user, see [`Source::http_user`]) for HTTP, the source name for `vna import`.
    pub actor: String,
    /// Network address or file path.
    pub address: String,
}

/// How [`Source::http_user`] marks an authenticated STOW-RS sender.
const HTTP_USER_PREFIX: &str = "STOW-RS user ";

impl Source {
    /// A STOW-RS upload by a user of `[[auth.users]]`.
    pub fn http_user(user: &str, address: impl Into<String>) -> Self {
        Self { actor: format!("{HTTP_USER_PREFIX}{user}"), address: address.into() }
    }

    /// The user of an authenticated STOW-RS upload.
    pub fn http_user_name(&self) -> Option<&str> {
        self.actor.strip_prefix(HTTP_USER_PREFIX)
    }
}

/// A patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    /// Format version.
    pub v: u32,
    /// Identity.
    pub key: PatientKey,
    /// Patient-level attributes.
    pub attrs: AttrMap,
    /// Studies of this patient.
    pub study_count: u64,
    /// Series of this patient.
    pub series_count: u64,
    /// Instances of this patient.
    pub instance_count: u64,
}

/// A study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Format version.
    pub v: u32,
    /// Study Instance UID.
    pub uid: StudyUid,
    /// The patient the study belongs to.
    pub patient: PatientKey,
    /// Study-level and patient-level attributes (patient values as received with the study).
    pub attrs: AttrMap,
    /// Modalities of its series.
    pub modalities: BTreeSet<String>,
    /// SOP classes of its instances.
    pub sop_classes: BTreeSet<String>,
    /// Number of series.
    pub series_count: u64,
    /// Number of instances.
    pub instance_count: u64,
    /// Bytes of all instances.
    pub size_bytes: u64,
    /// First instance received.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last instance received.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Last retrieve of any of its instances.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_access: Option<OffsetDateTime>,
    /// Where its instances' copies are: instances per [`Placement`] key.
    #[serde(default)]
    pub placement: Placement,
}

/// A series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesRecord {
    /// Format version.
    pub v: u32,
    /// The study.
    pub study: StudyUid,
    /// Series Instance UID.
    pub uid: SeriesUid,
    /// Series-level attributes.
    pub attrs: AttrMap,
    /// Number of instances.
    pub instance_count: u64,
    /// Bytes of all instances.
    pub size_bytes: u64,
    /// Who sent the first instance.
    pub source: Source,
    /// First instance received.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Where its instances' copies are: instances per [`Placement`] key.
    #[serde(default)]
    pub placement: Placement,
}

/// A stored SOP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Format version.
    pub v: u32,
    /// The study.
    pub study: StudyUid,
    /// The series.
    pub series: SeriesUid,
    /// SOP Instance UID.
    pub uid: SopInstanceUid,
    /// SOP Class UID.
    pub sop_class: SopClassUid,
    /// Transfer syntax the object is stored in (as received).
    pub transfer_syntax: TransferSyntaxUid,
    /// Instance-level attributes.
    pub attrs: AttrMap,
    /// Object size in bytes (the whole Part-10 file).
    pub size: u64,
    /// BLAKE3 of the stored object.
    pub checksum: Checksum,
    /// BLAKE3 of the data set alone (without the file meta group): two arrivals of the same
    /// instance are the same content when their data sets are, whatever their file meta says.
    pub dataset_checksum: Checksum,
    /// Copies of the object, first one preferred for reads.
    pub locations: Vec<Location>,
    /// Who sent it.
    pub source: Source,
    /// When it was received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

impl InstanceRecord {
    /// The value of an instance-level attribute, including those held as typed fields.
    pub fn attr(&self, a: Attribute) -> Option<&str> {
        match a {
            Attribute::SOPInstanceUID => Some(self.uid.as_str()),
            Attribute::SOPClassUID => Some(self.sop_class.as_str()),
            Attribute::TransferSyntaxUID => Some(self.transfer_syntax.as_str()),
            _ => self.attrs.get(a),
        }
    }
}
