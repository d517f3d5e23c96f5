//! Building DICOM JSON (PS3.18 Annex F) for query results and STOW-RS responses.

use archive_core::attribute::Attribute;
use serde_json::{json, Map, Value as Json};

/// A DICOM JSON object under construction, keyed by tag (sorted, as the model wants).
pub type JsonDataset = Map<String, Json>;

/// The VR of an attribute the catalog holds.
pub fn vr_of(a: Attribute) -> &'static str {
    use Attribute as A;
    match a {
        A::SOPClassUID
        | A::SOPInstanceUID
        | A::SOPClassesInStudy
        | A::StudyInstanceUID
        | A::SeriesInstanceUID
        | A::TransferSyntaxUID => "UI",
        A::StudyDate | A::SeriesDate | A::ContentDate | A::PatientBirthDate => "DA",
        A::StudyTime | A::SeriesTime | A::ContentTime => "TM",
        A::AccessionNumber | A::StudyID => "SH",
        A::Modality | A::ModalitiesInStudy | A::PatientSex | A::BodyPartExamined | A::SpecificCharacterSet => "CS",
        A::InstitutionName | A::StudyDescription | A::SeriesDescription | A::PatientID | A::IssuerOfPatientID => "LO",
        A::ReferringPhysicianName | A::PatientName => "PN",
        A::PatientAge => "AS",
        A::Rows | A::Columns | A::BitsAllocated => "US",
        A::SeriesNumber
        | A::InstanceNumber
        | A::NumberOfPatientRelatedStudies
        | A::NumberOfPatientRelatedSeries
        | A::NumberOfPatientRelatedInstances
        | A::NumberOfStudyRelatedSeries
        | A::NumberOfStudyRelatedInstances
        | A::NumberOfSeriesRelatedInstances
        | A::NumberOfFrames => "IS",
    }
}

/// The JSON key of an attribute; the stored transfer syntax is answered as
/// Available Transfer Syntax UID (0008,3002).
pub fn key_of(a: Attribute) -> String {
    if a == Attribute::TransferSyntaxUID {
        return "00083002".into();
    }
    let (g, e) = a.group_element();
    format!("{g:04X}{e:04X}")
}

/// An element with its values; no `Value` when there is none.
pub fn element(vr: &str, values: Vec<Json>) -> Json {
    if values.is_empty() || values.iter().all(Json::is_null) {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

/// The JSON values of a stored (backslash-separated) value of a given VR.
pub fn values_of(vr: &str, value: &str) -> Vec<Json> {
    if value.is_empty() {
        return Vec::new();
    }
    value
        .split('\\')
        .map(|v| {
            let v = v.trim_matches([' ', '\0']);
            if v.is_empty() {
                return Json::Null;
            }
            match vr {
                "PN" => json!({ "Alphabetic": v }),
                "IS" | "US" => v.parse::<i64>().map(Json::from).unwrap_or(Json::Null),
                "DS" => v.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Json::Null, Json::Number),
                _ => Json::String(v.to_string()),
            }
        })
        .collect()
}

/// Sets an attribute from its stored text value.
pub fn set_attr(ds: &mut JsonDataset, a: Attribute, value: Option<&str>) {
    let vr = vr_of(a);
    ds.insert(key_of(a), element(vr, value.map(|v| values_of(vr, v)).unwrap_or_default()));
}

/// Sets a string-valued element by tag key.
pub fn set_str(ds: &mut JsonDataset, key: &str, vr: &str, value: &str) {
    ds.insert(key.into(), element(vr, vec![Json::String(value.to_string())]));
}

/// Sets a US-valued element by tag key.
pub fn set_us(ds: &mut JsonDataset, key: &str, value: u16) {
    ds.insert(key.into(), element("US", vec![Json::from(value)]));
}

/// Sets a sequence element by tag key.
pub fn set_seq(ds: &mut JsonDataset, key: &str, items: Vec<JsonDataset>) {
    ds.insert(key.into(), element("SQ", items.into_iter().map(Json::Object).collect()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_vr() {
        assert_eq!(values_of("PN", "DOE^J\\X"), vec![json!({"Alphabetic":"DOE^J"}), json!({"Alphabetic":"X"})]);
        assert_eq!(values_of("IS", " 12 "), vec![json!(12)]);
        assert_eq!(values_of("CS", "CT\\\\MR"), vec![json!("CT"), Json::Null, json!("MR")]);
        assert_eq!(element("LO", vec![]), json!({"vr":"LO"}));
        assert_eq!(key_of(Attribute::TransferSyntaxUID), "00083002");
        assert_eq!(key_of(Attribute::PatientName), "00100010");
    }
}
