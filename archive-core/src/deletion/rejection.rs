//! IHE IOCM rejection notes: a Key Object Selection whose title is a rejection code hides the
//! instances it references and schedules their deletion by the usual two-phase path.

use serde_json::Value;

/// Key Object Selection Document Storage.
pub const KEY_OBJECT_SELECTION: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// The rejection titles of IHE IOCM (CID 7011), coding scheme DCM.
pub const REJECTION_CODES: &[(&str, &str)] = &[
    ("113001", "Rejected for Quality Reasons"),
    ("113037", "Rejected for Patient Safety Reasons"),
    ("113038", "Incorrect Modality Worklist Entry"),
    ("113039", "Data Retention Policy Expired"),
];

/// One instance a rejection note references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedInstance {
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop_instance: String,
}

/// A rejection note's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionNote {
    /// The title's code value (e.g. `113001`).
    pub code: String,
    /// The title's meaning.
    pub title: String,
    /// The instances it rejects.
    pub references: Vec<RejectedInstance>,
}

fn first<'a>(item: &'a Value, tag: &str) -> Option<&'a Value> {
    item.get(tag)?.get("Value")?.get(0)
}

fn text(item: &Value, tag: &str) -> Option<String> {
    first(item, tag)?.as_str().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn items<'a>(item: &'a Value, tag: &str) -> impl Iterator<Item = &'a Value> {
    item.get(tag).and_then(|e| e.get("Value")).and_then(Value::as_array).into_iter().flatten()
}

/// Reads a Key Object Selection's DICOM JSON (as the catalog stores it); `Some` when its
/// Concept Name (0040,A043) is an IOCM rejection title, with the instances of its Current
/// Requested Procedure Evidence Sequence (0040,A375).
pub fn rejection_note(metadata_json: &str) -> Option<RejectionNote> {
    let root: Value = serde_json::from_str(metadata_json).ok()?;
    let concept = first(&root, "0040A043")?;
    let code = text(concept, "00080100")?;
    let scheme = text(concept, "00080102").unwrap_or_default();
    let (_, meaning) = REJECTION_CODES.iter().find(|(c, _)| *c == code)?;
    if !scheme.eq_ignore_ascii_case("DCM") {
        return None;
    }
    let title = text(concept, "00080104").unwrap_or_else(|| meaning.to_string());
    let mut references = Vec::new();
    for study in items(&root, "0040A375") {
        let Some(study_uid) = text(study, "0020000D") else { continue };
        for series in items(study, "00081115") {
            let Some(series_uid) = text(series, "0020000E") else { continue };
            for sop in items(series, "00081199") {
                if let Some(sop_uid) = text(sop, "00081155") {
                    references.push(RejectedInstance {
                        study: study_uid.clone(),
                        series: series_uid.clone(),
                        sop_instance: sop_uid,
                    });
                }
            }
        }
    }
    Some(RejectionNote { code, title, references })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kos(code: &str, scheme: &str) -> String {
        serde_json::json!({
            "00080016": {"vr": "UI", "Value": [KEY_OBJECT_SELECTION]},
            "0040A043": {"vr": "SQ", "Value": [{
                "00080100": {"vr": "SH", "Value": [code]},
                "00080102": {"vr": "SH", "Value": [scheme]},
                "00080104": {"vr": "LO", "Value": ["Rejected for Quality Reasons"]}
            }]},
            "0040A375": {"vr": "SQ", "Value": [{
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "00081115": {"vr": "SQ", "Value": [{
                    "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                    "00081199": {"vr": "SQ", "Value": [
                        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}, "00081155": {"vr": "UI", "Value": ["1.2.3.4.5"]}},
                        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}, "00081155": {"vr": "UI", "Value": ["1.2.3.4.6"]}}
                    ]}
                }]}
            }]}
        })
        .to_string()
    }

    #[test]
    fn reads_rejection_notes_and_ignores_other_titles() {
        let note = rejection_note(&kos("113001", "DCM")).unwrap();
        assert_eq!(note.code, "113001");
        assert_eq!(note.references.len(), 2);
        assert_eq!(note.references[1].sop_instance, "1.2.3.4.6");
        assert_eq!(note.references[0].series, "1.2.3.4");
        assert!(rejection_note(&kos("113000", "DCM")).is_none(), "113000 is 'Of Interest', not a rejection");
        assert!(rejection_note(&kos("113001", "99LOCAL")).is_none());
        assert!(rejection_note("{}").is_none());
        assert!(rejection_note("not json").is_none());
    }
}
