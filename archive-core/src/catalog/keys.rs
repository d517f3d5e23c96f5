//! Column families and key layouts of the RocksDB catalog.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `patients` | issuer ␀ patient id | [`PatientRecord`](crate::model::PatientRecord) JSON |
//! | `studies` | study uid | [`StudyRecord`](crate::model::StudyRecord) JSON |
//! | `series` | study uid ␀ series uid | [`SeriesRecord`](crate::model::SeriesRecord) JSON |
//! | `instances` | study uid ␀ series uid ␀ sop uid | [`InstanceRecord`](crate::model::InstanceRecord) JSON |
//! | `metadata` | study uid ␀ series uid ␀ sop uid | DICOM JSON of the instance without bulk data |
//! | `series_by_uid` | series uid | study uid |
//! | `instance_by_uid` | sop uid | study uid ␀ series uid |
//! | `idx` | index id, value ␀ target | empty |
//! | `intents` | tier ␀ object key | [`WriteIntent`](super::WriteIntent) JSON |
//! | `audit` | seq (u64 big endian) | [`AuditRecord`](crate::audit::AuditRecord) JSON |
//! | `jobs` | job id (u64 big endian) | [`Job`](crate::lifecycle::job::Job) JSON |
//! | `deletions` | deletion id (u64 big endian) | [`Deletion`](crate::deletion::Deletion) JSON |
//! | `holds` | hold id (u64 big endian) | [`LegalHold`](crate::hold::LegalHold) JSON |
//! | `links` | link id (u64 big endian) | [`PatientLink`](crate::patient_link::PatientLink) JSON |
//! | `meta` | `schema_version` (the catalog's format marker, decimal), `stats` | version, [`CatalogStats`](super::CatalogStats) JSON |
//!
//! Every record whose value is a versioned JSON record carries its format version in `v`,
//! which decoding reads (see [`crate::format`]); the other values are covered by
//! `schema_version`.
//!
//! Hierarchical keys make "series of a study" and "instances of a series" prefix scans.
//! Index entries put the matched value first so that exact values and literal prefixes
//! are prefix scans and date ranges are range scans.

/// Column family names, in creation order.
pub const COLUMN_FAMILIES: &[&str] = &[
    CF_PATIENTS,
    CF_STUDIES,
    CF_SERIES,
    CF_INSTANCES,
    CF_METADATA,
    CF_SERIES_BY_UID,
    CF_INSTANCE_BY_UID,
    CF_IDX,
    CF_INTENTS,
    CF_AUDIT,
    CF_META,
    CF_JOBS,
    CF_DELETIONS,
    CF_HOLDS,
    CF_LINKS,
];
/// Patients.
pub const CF_PATIENTS: &str = "patients";
/// Studies.
pub const CF_STUDIES: &str = "studies";
/// Series.
pub const CF_SERIES: &str = "series";
/// Instances.
pub const CF_INSTANCES: &str = "instances";
/// Instance metadata (DICOM JSON without bulk data), keyed like instances.
pub const CF_METADATA: &str = "metadata";
/// Series UID → study UID.
pub const CF_SERIES_BY_UID: &str = "series_by_uid";
/// SOP Instance UID → study and series UIDs.
pub const CF_INSTANCE_BY_UID: &str = "instance_by_uid";
/// Secondary indexes.
pub const CF_IDX: &str = "idx";
/// Write intents.
pub const CF_INTENTS: &str = "intents";
/// Audit records.
pub const CF_AUDIT: &str = "audit";
/// Lifecycle jobs (migrations, recalls), resumed on start.
pub const CF_JOBS: &str = "jobs";
/// Deletions (marked, purging, purged with their certificates, cancelled).
pub const CF_DELETIONS: &str = "deletions";
/// Legal holds.
pub const CF_HOLDS: &str = "holds";
/// Patient identity links.
pub const CF_LINKS: &str = "links";
/// Catalog metadata: schema version, stats.
pub const CF_META: &str = "meta";

/// Version of this key layout (the catalog's format marker), stored under
/// [`SCHEMA_VERSION_KEY`] in `meta`: written when the catalog is created, checked when it
/// opens (a newer one is refused, an older one upgraded, see [`crate::format`]).
pub const SCHEMA_VERSION: u32 = 1;
/// The oldest catalog layout this vna opens (upgrading it to [`SCHEMA_VERSION`]).
pub const OLDEST_SCHEMA_VERSION: u32 = 1;
/// Key of the catalog's format marker in `meta` (its value: the version in decimal).
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Secondary index identifiers (first byte of an `idx` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IndexId {
    /// Studies by Patient ID.
    StudyPatientId = 1,
    /// Studies by normalised Patient Name.
    StudyPatientName = 2,
    /// Studies by Study Date (YYYYMMDD).
    StudyDate = 3,
    /// Studies by Accession Number.
    StudyAccession = 4,
    /// Studies by each modality of their series.
    StudyModality = 5,
    /// Patients by Patient ID.
    PatientId = 6,
    /// Patients by normalised Patient Name.
    PatientName = 7,
}

/// Joins parts with NUL separators.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// An index entry key: id, value, NUL, target.
pub fn index_key(id: IndexId, value: &str, target: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + value.len() + target.len());
    k.push(id as u8);
    k.extend_from_slice(clean(value).as_bytes());
    k.push(0);
    k.extend_from_slice(target);
    k
}

/// The prefix of every entry of an index whose value starts with `prefix`.
pub fn index_prefix(id: IndexId, prefix: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + prefix.len());
    k.push(id as u8);
    k.extend_from_slice(clean(prefix).as_bytes());
    k
}

/// The prefix of every entry of an index whose value is exactly `value`.
pub fn index_exact(id: IndexId, value: &str) -> Vec<u8> {
    let mut k = index_prefix(id, value);
    k.push(0);
    k
}

/// Splits an index key into value and target.
pub fn split_index_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = key.get(1..)?;
    let nul = body.iter().position(|b| *b == 0)?;
    Some((&body[..nul], &body[nul + 1..]))
}

/// Values are stored without NUL so that the separator stays unambiguous.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', ""))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Trims a value the way stored values are trimmed: spaces and NUL padding at both ends.
pub fn trim_value(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\0')
}

/// Audit key: big-endian sequence number, so that keys sort in chain order.
pub fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn index_keys_roundtrip() {
        let k = index_key(IndexId::StudyDate, "20200101", b"1.2.3");
        assert_eq!(split_index_key(&k), Some((&b"20200101"[..], &b"1.2.3"[..])));
        assert!(k.starts_with(&index_exact(IndexId::StudyDate, "20200101")));
        assert!(k.starts_with(&index_prefix(IndexId::StudyDate, "2020")));
        assert!(!k.starts_with(&index_exact(IndexId::StudyDate, "2020")));
    }
}
