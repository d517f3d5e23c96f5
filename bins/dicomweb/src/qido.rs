//! QIDO-RS (PS3.18 §10.6): searches for studies, series and instances on the core's
//! matching rules, answered as `application/dicom+json`.
//!
//! Query keys are keywords or tags; `limit`, `offset`, `fuzzymatching` and `includefield`
//! (a list or `all`) are understood. Keys the catalog cannot match on are ignored with a
//! `Warning: 299` header, as the standard asks; names that are no DICOM attribute at all
//! are a 400. At the instance level, `includefield` may name any attribute: values the
//! catalog does not index come from the instance metadata stored at ingest.

use crate::dicom_json::{key_of, set_attr, set_str, JsonDataset};
use crate::error::ApiError;
use crate::{media, AppState};
use archive_core::attribute::{Attribute, Level};
use archive_core::model::InstanceRecord;
use archive_core::query::{Query, QueryRow};
use archive_core::tier::Availability;
use archive_core::uid::{SeriesUid, StudyUid};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::DataDictionary;
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::Value as Json;

/// What a search is scoped to by its path.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `/studies/{study}/...`
    pub study: Option<StudyUid>,
    /// `/studies/{study}/series/{series}/...`
    pub series: Option<SeriesUid>,
}

/// What to return besides the level's defaults.
#[derive(Debug, Clone, Default)]
struct Include {
    all: bool,
    attributes: Vec<Attribute>,
    /// Other attributes by JSON key (instance level: answered from the stored metadata).
    other_keys: Vec<String>,
}

/// A parsed search request.
struct Search {
    query: Query,
    include: Include,
    unsupported: Vec<String>,
    limit_given: bool,
}

/// Attributes returned at each level when not asked for (PS3.18 tables 10.6.3-3 to -5, as
/// far as the catalog holds them).
fn defaults(level: Level, scope: &Scope) -> Vec<Attribute> {
    use Attribute as A;
    let study = [
        A::StudyDate,
        A::StudyTime,
        A::AccessionNumber,
        A::ModalitiesInStudy,
        A::ReferringPhysicianName,
        A::PatientName,
        A::PatientID,
        A::PatientBirthDate,
        A::PatientSex,
        A::StudyInstanceUID,
        A::StudyID,
        A::NumberOfStudyRelatedSeries,
        A::NumberOfStudyRelatedInstances,
    ];
    let series =
        [A::Modality, A::SeriesDescription, A::SeriesInstanceUID, A::SeriesNumber, A::NumberOfSeriesRelatedInstances];
    let instance = [
        A::SOPClassUID,
        A::SOPInstanceUID,
        A::InstanceNumber,
        A::Rows,
        A::Columns,
        A::BitsAllocated,
        A::NumberOfFrames,
        A::TransferSyntaxUID,
    ];
    let mut out = vec![A::SpecificCharacterSet];
    match level {
        Level::Patient | Level::Study => out.extend(study),
        Level::Series => {
            if scope.study.is_none() {
                out.extend(study);
            }
            out.push(A::StudyInstanceUID);
            out.extend(series);
        }
        Level::Instance => {
            if scope.study.is_none() {
                out.extend(study);
            }
            if scope.series.is_none() {
                out.extend(series);
            }
            out.extend([A::StudyInstanceUID, A::SeriesInstanceUID]);
            out.extend(instance);
        }
    }
    out
}

/// Resolves a keyword or 8-hex-digit tag: a catalog attribute, or the JSON key of another
/// DICOM attribute, or `None` when it names nothing.
fn resolve(name: &str) -> Option<Result<Attribute, String>> {
    let name = name.trim();
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&name[..4], 16).ok()?;
        let e = u16::from_str_radix(&name[4..], 16).ok()?;
        if (g, e) == (0x0008, 0x3002) {
            return Some(Ok(Attribute::TransferSyntaxUID));
        }
        return Some(Attribute::from_tag(g, e).ok_or_else(|| name.to_ascii_uppercase()));
    }
    if name == "AvailableTransferSyntaxUID" {
        return Some(Ok(Attribute::TransferSyntaxUID));
    }
    if name == "TransferSyntaxUID" {
        return None;
    }
    if let Some(a) = Attribute::from_keyword(name) {
        return Some(Ok(a));
    }
    StandardDataDictionary
        .by_name(name)
        .map(|entry| Err(format!("{:04X}{:04X}", entry.tag.inner().group(), entry.tag.inner().element())))
}

fn parse_search(level: Level, scope: &Scope, raw_query: Option<&str>, max: usize) -> Result<Search, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let mut query = Query::new(level);
    let mut include = Include::default();
    let mut unsupported = Vec::new();
    let mut limit_given = false;
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => {
                let n: usize =
                    value.parse().map_err(|_| ApiError::bad_request(format!("limit {value:?} is not a number")))?;
                query.limit = Some(n.min(max));
                limit_given = true;
            }
            "offset" => {
                query.offset =
                    value.parse().map_err(|_| ApiError::bad_request(format!("offset {value:?} is not a number")))?;
            }
            "fuzzymatching" => {
                if !matches!(value.as_str(), "true" | "false") {
                    return Err(ApiError::bad_request("fuzzymatching must be true or false"));
                }
            }
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include.all = true;
                        continue;
                    }
                    match resolve(field) {
                        Some(Ok(a)) => include.attributes.push(a),
                        Some(Err(key)) => include.other_keys.push(key),
                        None if field.contains('.') => unsupported.push(field.to_string()),
                        None => {
                            return Err(ApiError::bad_request(format!(
                                "includefield {field:?} names no DICOM attribute"
                            )))
                        }
                    }
                }
            }
            _ => {
                if name.contains('.') {
                    unsupported.push(name);
                    continue;
                }
                match resolve(&name) {
                    Some(Ok(a)) if a.level() > level && !(a.level() == Level::Study && level == Level::Patient) => {
                        return Err(ApiError::bad_request(format!(
                            "{} is an attribute of a lower level than the {} search",
                            a.keyword(),
                            level.as_dicom().to_lowercase()
                        )));
                    }
                    Some(Ok(a)) => {
                        let v = if a.match_vr() == archive_core::matching::MatchVr::Ui {
                            value.replace(',', "\\")
                        } else {
                            value
                        };
                        query
                            .add(a, &v)
                            .map_err(|e| ApiError::bad_request(format!("{}={v:?}: {}", e.attribute, e.source)))?;
                    }
                    Some(Err(_)) => unsupported.push(name),
                    None => return Err(ApiError::bad_request(format!("{name:?} names no DICOM attribute"))),
                }
            }
        }
    }
    if let Some(s) = &scope.study {
        query.add(Attribute::StudyInstanceUID, s.as_str()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(s) = &scope.series {
        query.add(Attribute::SeriesInstanceUID, s.as_str()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(Search { query, include, unsupported, limit_given })
}

/// Answers a search at `level`.
pub async fn search(
    state: AppState,
    level: Level,
    scope: Scope,
    raw_query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let accept = media::parse_accept(headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()));
    let json_ok = accept.iter().any(|m| {
        m.covers("application/dicom+json")
            || m.essence == "application/json"
            || (m.essence == "multipart/related" && m.param("type") == Some("application/dicom+json"))
    });
    if !json_ok {
        return Err(ApiError::not_acceptable("search results are available as application/dicom+json only"));
    }
    let max = state.archive.config().query.max_results;
    let search = parse_search(level, &scope, raw_query.as_deref(), max)?;
    let archive = state.archive.clone();
    let query = search.query.clone();
    let page = tokio::task::spawn_blocking(move || archive.query(&query)).await??;
    state.archive.audit_query("QIDO-RS", &crate::peer_of(&headers), &search.query, &page.rows);

    let base = state.base_url(&headers);
    let mut attrs = defaults(level, &scope);
    if search.include.all {
        attrs.extend(Attribute::ALL.iter().copied().filter(|a| a.level() <= level || a.level() == Level::Patient));
    }
    attrs.extend(search.include.attributes.iter().copied());
    attrs.extend(search.query.keys.iter().map(|k| k.attribute));
    attrs.sort();
    attrs.dedup();

    // Instance level: attributes beyond the catalog's come from the stored metadata.
    let wants_metadata = level == Level::Instance && (search.include.all || !search.include.other_keys.is_empty());
    let metadata = if wants_metadata {
        let records: Vec<InstanceRecord> = page.rows.iter().filter_map(|r| r.instance.clone()).collect();
        Some(state.archive.retrieve().metadata(&records).await?)
    } else {
        None
    };

    let mut results = Vec::with_capacity(page.rows.len());
    for (i, row) in page.rows.iter().enumerate() {
        let mut ds = JsonDataset::new();
        if let Some(meta) = metadata.as_ref().and_then(|m| m.get(i)) {
            let absolute = archive_core::metadata::absolutize(meta, &base);
            if let Ok(Json::Object(full)) = serde_json::from_slice::<Json>(&absolute) {
                for (k, v) in full {
                    if search.include.all || search.include.other_keys.contains(&k) {
                        ds.insert(k, v);
                    }
                }
            }
        }
        for a in &attrs {
            if *a == Attribute::SpecificCharacterSet {
                set_str(&mut ds, &key_of(*a), "CS", "ISO_IR 192");
                continue;
            }
            set_attr(&mut ds, *a, row.value(*a).as_deref());
        }
        set_str(&mut ds, "00080056", "CS", availability(&state, row).as_dicom());
        set_str(&mut ds, "00081190", "UR", &retrieve_url(&base, row));
        set_str(&mut ds, "00080054", "AE", &state.settings.ae_title);
        results.push(Json::Object(ds));
    }

    let mut rsp = (StatusCode::OK, Json::Array(results).to_string()).into_response();
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom+json"));
    let mut warnings = Vec::new();
    if !search.unsupported.is_empty() {
        warnings.push(format!(
            "299 vna \"The following attributes are not supported for matching and were ignored: {}\"",
            search.unsupported.join(", ")
        ));
    }
    if page.more && !search.limit_given {
        warnings.push(
            "299 vna \"The number of results exceeded the maximum supported by the server. Additional results can be requested.\""
                .into(),
        );
    }
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&w) {
            rsp.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(rsp)
}

/// The availability of a row, from the tiers its copies are on.
fn availability(state: &AppState, row: &QueryRow) -> Availability {
    state.archive.availability_of_row(row)
}

/// The WADO-RS URL of a row's resource.
fn retrieve_url(base: &str, row: &QueryRow) -> String {
    let study = row.study.as_ref().map(|s| s.uid.as_str()).unwrap_or_default();
    match (&row.series, &row.instance) {
        (_, Some(i)) => format!("{base}/studies/{}/series/{}/instances/{}", i.study, i.series, i.uid),
        (Some(s), None) => format!("{base}/studies/{study}/series/{}", s.uid),
        (None, None) => format!("{base}/studies/{study}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_by_keyword_or_tag() {
        assert_eq!(resolve("PatientName"), Some(Ok(Attribute::PatientName)));
        assert_eq!(resolve("00100010"), Some(Ok(Attribute::PatientName)));
        assert_eq!(resolve("00083002"), Some(Ok(Attribute::TransferSyntaxUID)));
        assert_eq!(resolve("ImageType"), Some(Err("00080008".into())));
        assert_eq!(resolve("NoSuchKeyword"), None);
    }

    #[test]
    fn bad_parameters_are_client_errors() {
        let scope = Scope::default();
        for q in ["limit=x", "NoSuchKeyword=1", "StudyDate=2020-01-01", "fuzzymatching=maybe", "SOPInstanceUID=1.2"] {
            let e = parse_search(Level::Study, &scope, Some(q), 100).err().unwrap_or_else(|| panic!("{q} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
        }
        let s = parse_search(
            Level::Study,
            &scope,
            Some("PatientName=DOE*&limit=5000&ImageType=X&includefield=00100020,all"),
            100,
        )
        .unwrap();
        assert_eq!(s.query.limit, Some(100));
        assert_eq!(s.unsupported, vec!["ImageType".to_string()]);
        assert!(s.include.all);
    }
}
