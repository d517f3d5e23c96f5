//! Source profiles: per-source patient identity domains and attribute coercion on ingest.
//!
//! A profile (`[[sources]]` in the configuration) matches the objects a source sends: by the
//! calling AE title over DIMSE, or by its name (`vna import --source NAME`). It stamps the
//! source's Issuer of Patient ID (and its qualifiers) so that the same Patient ID from two
//! hospitals stays two patients, and applies coercion rules (set, remove, copy, map through a
//! table, regex replace) to top-level text attributes, before the object is parsed for the
//! catalog. Every change is recorded in the object's Original Attributes Sequence (0400,0561)
//! with the previous values, the time, the modifying system, the source and the reason
//! `COERCE`, as PS3.3 C.12.1.1.9 requires. Objects no rule changes are stored byte-exact.

use crate::model::Source;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[[sources.coerce]]`: one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoercionRuleConfig {
    /// The attribute: a keyword (`AccessionNumber`) or a tag (`(0008,0050)` or `00080050`).
    pub attribute: String,
    /// `set`, `remove`, `copy`, `map` or `regex_replace`.
    pub action: String,
    /// `set`: the new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `set`: only when the attribute is absent or empty.
    #[serde(default)]
    pub only_if_empty: bool,
    /// `copy`: the attribute to copy from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `map`: old value → new value (values not listed are kept, unless `default` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<BTreeMap<String, String>>,
    /// `map`: the value for anything not in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `regex_replace`: the pattern (Rust regex syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `regex_replace`: the replacement (`$1` refers to groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// `[[sources]]`: what vna knows of one sending system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceProfileConfig {
    /// The profile's name (`vna import --source NAME` uses it).
    pub name: String,
    /// Calling AE titles whose objects this profile applies to.
    #[serde(default)]
    pub calling_aes: Vec<String>,
    /// Users (names under `[[auth.users]]`) whose STOW-RS uploads this profile applies to:
    /// a sending system that uploads over DICOMweb with its own bearer token.
    #[serde(default)]
    pub http_users: Vec<String>,
    /// Issuer of Patient ID (0010,0021) to stamp on every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_of_patient_id: Option<String>,
    /// Universal Entity ID (0040,0032) of the issuer, in the qualifiers sequence (0010,0024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_universal_entity_id: Option<String>,
    /// Universal Entity ID Type (0040,0033), e.g. `ISO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_universal_entity_id_type: Option<String>,
    /// Replace an issuer the object already carries (default: only stamp when it has none).
    #[serde(default)]
    pub replace_issuer: bool,
    /// Coercion rules, applied in order after the issuer is stamped.
    #[serde(default)]
    pub coerce: Vec<CoercionRuleConfig>,
}

/// Why a profile or its application failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoercionError {
    /// A profile or rule is invalid (names the profile, the rule and the problem).
    #[error("source profile {profile:?}: {message}")]
    Config {
        /// The profile.
        profile: String,
        /// What is wrong.
        message: String,
    },
    /// The object cannot be decoded or encoded again to apply the profile.
    #[error("cannot apply source profile {profile:?}: {message}")]
    Apply {
        /// The profile.
        profile: String,
        /// What failed.
        message: String,
    },
}

#[derive(Debug, Clone)]
enum Action {
    Set { value: String, only_if_empty: bool },
    Remove,
    Copy { from: Tag },
    Map { table: BTreeMap<String, String>, default: Option<String> },
    Regex { pattern: regex::Regex, replacement: String },
}

#[derive(Debug, Clone)]
struct Rule {
    tag: Tag,
    vr: VR,
    action: Action,
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct SourceProfile {
    /// The configuration it was built from.
    pub config: SourceProfileConfig,
    rules: Vec<Rule>,
}

const TEXT_VRS: &[VR] = &[
    VR::AE,
    VR::AS,
    VR::CS,
    VR::DA,
    VR::DS,
    VR::DT,
    VR::IS,
    VR::LO,
    VR::LT,
    VR::PN,
    VR::SH,
    VR::ST,
    VR::TM,
    VR::UC,
    VR::UI,
    VR::UR,
    VR::UT,
];

/// Resolves a keyword or tag to a tag and its VR (text VRs only).
fn attribute(profile: &str, name: &str) -> Result<(Tag, VR), CoercionError> {
    let err = |message: String| CoercionError::Config { profile: profile.to_string(), message };
    let n = name.trim();
    let hex: String = n.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let by_tag = (n.starts_with('(') || (n.len() == 8 && hex.len() == 8)) && hex.len() == 8;
    let entry = if by_tag {
        let g = u16::from_str_radix(&hex[..4], 16).map_err(|_| err(format!("bad tag {n:?}")))?;
        let e = u16::from_str_radix(&hex[4..], 16).map_err(|_| err(format!("bad tag {n:?}")))?;
        StandardDataDictionary.by_tag(Tag(g, e))
    } else {
        StandardDataDictionary.by_name(n)
    };
    let entry = entry.ok_or_else(|| {
        err(format!("unknown attribute {n:?}: use a keyword such as AccessionNumber or a tag (0008,0050)"))
    })?;
    let tag = match entry.tag_range() {
        dicom_core::dictionary::TagRange::Single(t) => t,
        _ => return Err(err(format!("{n:?} names a range of tags"))),
    };
    let vr = match entry.vr() {
        VirtualVr::Exact(vr) => vr,
        _ => return Err(err(format!("{n:?} has no single value representation"))),
    };
    if !TEXT_VRS.contains(&vr) {
        return Err(err(format!("{n:?} is {vr:?}; only text attributes can be coerced")));
    }
    if tag.group() == 0x0002
        || tag == tags::SOP_INSTANCE_UID
        || tag == tags::SOP_CLASS_UID
        || tag == tags::SPECIFIC_CHARACTER_SET
    {
        return Err(err(format!("{n:?} cannot be coerced (file meta, SOP identity or character set)")));
    }
    Ok((tag, vr))
}

impl SourceProfile {
    /// Validates a profile: known text attributes, complete rules, regexes that compile.
    pub fn compile(config: &SourceProfileConfig) -> Result<Self, CoercionError> {
        let p = config.name.clone();
        let err = |i: usize, message: String| CoercionError::Config {
            profile: p.clone(),
            message: format!("rule {}: {message}", i + 1),
        };
        if config.name.trim().is_empty() {
            return Err(CoercionError::Config {
                profile: String::new(),
                message: "a source profile needs a name".into(),
            });
        }
        let mut rules = Vec::new();
        for (i, r) in config.coerce.iter().enumerate() {
            let (tag, vr) = attribute(&p, &r.attribute)?;
            let action = match r.action.as_str() {
                "set" => Action::Set {
                    value: r.value.clone().ok_or_else(|| err(i, "action set needs value".into()))?,
                    only_if_empty: r.only_if_empty,
                },
                "remove" => Action::Remove,
                "copy" => Action::Copy {
                    from: attribute(&p, r.from.as_deref().ok_or_else(|| err(i, "action copy needs from".into()))?)?.0,
                },
                "map" => Action::Map {
                    table: r.table.clone().ok_or_else(|| err(i, "action map needs table".into()))?,
                    default: r.default.clone(),
                },
                "regex_replace" => {
                    let pat =
                        r.pattern.as_deref().ok_or_else(|| err(i, "action regex_replace needs pattern".into()))?;
                    Action::Regex {
                        pattern: regex::Regex::new(pat).map_err(|e| err(i, format!("pattern {pat:?}: {e}")))?,
                        replacement: r.replacement.clone().unwrap_or_default(),
                    }
                }
                other => {
                    return Err(err(
                        i,
                        format!("unknown action {other:?}: use set, remove, copy, map or regex_replace"),
                    ))
                }
            };
            rules.push(Rule { tag, vr, action });
        }
        Ok(Self { config: config.clone(), rules })
    }

    /// Whether the profile applies to objects from `source`.
    pub fn matches(&self, source: &Source) -> bool {
        if let Some(user) = source.http_user_name() {
            return self.config.http_users.iter().any(|u| u == user);
        }
        let actor = source.actor.trim();
        actor == self.config.name || self.config.calling_aes.iter().any(|ae| ae.trim() == actor)
    }
}

/// All configured profiles.
#[derive(Debug, Clone, Default)]
pub struct SourceProfiles {
    list: Vec<SourceProfile>,
}

impl SourceProfiles {
    /// Validates every profile (names must be unique, AE titles and HTTP users claimed once).
    pub fn compile(configs: &[SourceProfileConfig]) -> Result<Self, CoercionError> {
        let mut list: Vec<SourceProfile> = Vec::new();
        for c in configs {
            if list.iter().any(|p| p.config.name == c.name) {
                return Err(CoercionError::Config {
                    profile: c.name.clone(),
                    message: "the name is used twice".into(),
                });
            }
            for ae in &c.calling_aes {
                if let Some(other) = list.iter().find(|p| p.config.calling_aes.iter().any(|a| a.trim() == ae.trim())) {
                    return Err(CoercionError::Config {
                        profile: c.name.clone(),
                        message: format!("calling AE {ae:?} is already claimed by profile {:?}", other.config.name),
                    });
                }
            }
            for user in &c.http_users {
                if let Some(other) = list.iter().find(|p| p.config.http_users.contains(user)) {
                    return Err(CoercionError::Config {
                        profile: c.name.clone(),
                        message: format!("HTTP user {user:?} is already claimed by profile {:?}", other.config.name),
                    });
                }
            }
            list.push(SourceProfile::compile(c)?);
        }
        Ok(Self { list })
    }

    /// The profile for a source, if any.
    pub fn for_source(&self, source: &Source) -> Option<&SourceProfile> {
        self.list.iter().find(|p| p.matches(source))
    }

    /// Whether any profile is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

fn put_text(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Adds an Original Attributes Sequence item (PS3.3 C.12.1.1.9) with the previous values of
/// `originals` (empty for attributes that were added); returns the changed attributes' names.
fn record_originals(
    obj: &mut InMemDicomObject,
    originals: &[(Tag, VR, Option<InMemElement>)],
    source_of_previous: &str,
    reason: &str,
) -> Vec<String> {
    let mut modified = InMemDicomObject::new_empty();
    let mut changed = Vec::new();
    for (tag, vr, old) in originals {
        changed.push(StandardDataDictionary.by_tag(*tag).map_or_else(|| tag.to_string(), |e| e.alias().to_string()));
        match old {
            Some(e) => modified.put(e.clone()),
            None => modified.put(DataElement::new(*tag, *vr, PrimitiveValue::Empty)),
        };
    }
    let now = time::OffsetDateTime::now_utc();
    let dt = now
        .format(time::macros::format_description!("[year][month][day][hour][minute][second].[subsecond digits:6]+0000"))
        .unwrap_or_default();
    let mut item = InMemDicomObject::new_empty();
    item.put(InMemElement::new(tags::MODIFIED_ATTRIBUTES_SEQUENCE, VR::SQ, DataSetSequence::from(vec![modified])));
    put_text(&mut item, tags::ATTRIBUTE_MODIFICATION_DATE_TIME, VR::DT, &dt);
    put_text(&mut item, tags::MODIFYING_SYSTEM, VR::LO, "vna");
    put_text(&mut item, tags::SOURCE_OF_PREVIOUS_VALUES, VR::LO, source_of_previous);
    put_text(&mut item, tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION, VR::CS, reason);
    let mut items: Vec<InMemDicomObject> = match obj.element_opt(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).ok().flatten() {
        Some(e) => e.items().map(|i| i.to_vec()).unwrap_or_default(),
        None => Vec::new(),
    };
    items.push(item);
    obj.put(InMemElement::new(tags::ORIGINAL_ATTRIBUTES_SEQUENCE, VR::SQ, DataSetSequence::from(items)));
    changed
}

/// Sets (or, for `None`, removes) top-level text attributes of a Part-10 object, recording the
/// previous values in its Original Attributes Sequence with `reason` (`CORRECT` for patient
/// links); `None` when nothing differs.
pub fn rewrite_attributes(
    file: &[u8],
    changes: &[(Tag, VR, Option<String>)],
    source_of_previous: &str,
    reason: &str,
) -> Result<Option<Vec<u8>>, CoercionError> {
    let fail = |message: String| CoercionError::Apply { profile: "patient link".into(), message };
    let parsed = crate::parse::parse_part10(file).map_err(|e| fail(e.to_string()))?;
    let ts = TransferSyntaxRegistry
        .get(parsed.transfer_syntax.as_str())
        .ok_or_else(|| fail(format!("unknown transfer syntax {}", parsed.transfer_syntax)))?;
    let mut obj =
        InMemDicomObject::read_dataset_with_ts(&file[parsed.dataset_offset..], ts).map_err(|e| fail(e.to_string()))?;
    let mut originals = Vec::new();
    for (tag, vr, new) in changes {
        let current = text_of(&obj, *tag);
        let same = match (current.as_deref().map(str::trim), new.as_deref().map(str::trim)) {
            (None, None) => true,
            (Some(c), Some(n)) => c == n,
            (Some(c), None) => c.is_empty(),
            (None, Some(n)) => n.is_empty(),
        };
        if same {
            continue;
        }
        originals.push((*tag, *vr, obj.element_opt(*tag).ok().flatten().cloned()));
        match new {
            Some(v) if !v.is_empty() => put_text(&mut obj, *tag, *vr, v),
            _ => {
                obj.remove_element(*tag);
            }
        }
    }
    if originals.is_empty() {
        return Ok(None);
    }
    record_originals(&mut obj, &originals, source_of_previous, reason);
    let mut out = file[..parsed.dataset_offset].to_vec();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| fail(e.to_string()))?;
    Ok(Some(out))
}

/// What applying a profile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coerced {
    /// Attributes changed, added or removed, by keyword or tag.
    pub changed: Vec<String>,
}

impl SourceProfile {
    /// Applies the profile to a Part-10 object whose data set starts at `dataset_offset`;
    /// `None` when nothing changes (the object stays byte-exact).
    pub fn apply(
        &self,
        file: &[u8],
        dataset_offset: usize,
        transfer_syntax: &str,
        source: &Source,
    ) -> Result<Option<(Vec<u8>, Coerced)>, CoercionError> {
        let fail = |message: String| CoercionError::Apply { profile: self.config.name.clone(), message };
        let ts = TransferSyntaxRegistry
            .get(transfer_syntax)
            .ok_or_else(|| fail(format!("unknown transfer syntax {transfer_syntax}")))?;
        let mut obj =
            InMemDicomObject::read_dataset_with_ts(&file[dataset_offset..], ts).map_err(|e| fail(e.to_string()))?;

        // Original values of every attribute touched, in the order first touched.
        let mut originals: Vec<(Tag, VR, Option<InMemElement>)> = Vec::new();
        let remember =
            |obj: &InMemDicomObject, tag: Tag, vr: VR, originals: &mut Vec<(Tag, VR, Option<InMemElement>)>| {
                if !originals.iter().any(|(t, _, _)| *t == tag) {
                    originals.push((tag, vr, obj.element_opt(tag).ok().flatten().cloned()));
                }
            };

        if let Some(issuer) = &self.config.issuer_of_patient_id {
            let current = text_of(&obj, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default();
            if (current.trim().is_empty() || self.config.replace_issuer) && current.trim() != issuer.trim() {
                remember(&obj, tags::ISSUER_OF_PATIENT_ID, VR::LO, &mut originals);
                put_text(&mut obj, tags::ISSUER_OF_PATIENT_ID, VR::LO, issuer);
            }
            if let Some(uid) = &self.config.issuer_universal_entity_id {
                let has = obj.element_opt(tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE).ok().flatten().is_some();
                if !has || self.config.replace_issuer {
                    let mut q = InMemDicomObject::new_empty();
                    put_text(&mut q, tags::UNIVERSAL_ENTITY_ID, VR::UT, uid);
                    if let Some(t) = &self.config.issuer_universal_entity_id_type {
                        put_text(&mut q, tags::UNIVERSAL_ENTITY_ID_TYPE, VR::CS, t);
                    }
                    if !originals.iter().any(|(t, _, _)| *t == tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE) {
                        let old =
                            obj.element_opt(tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE).ok().flatten().cloned();
                        originals.push((tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE, VR::SQ, old));
                    }
                    obj.put(InMemElement::new(
                        tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
                        VR::SQ,
                        DataSetSequence::from(vec![q]),
                    ));
                }
            }
        }

        for rule in &self.rules {
            let current = text_of(&obj, rule.tag);
            let new: Option<Option<String>> = match &rule.action {
                Action::Set { value, only_if_empty } => {
                    let empty = current.as_deref().is_none_or(|c| c.trim().is_empty());
                    (!*only_if_empty || empty).then(|| Some(value.clone()))
                }
                Action::Remove => current.is_some().then_some(None),
                Action::Copy { from } => text_of(&obj, *from).map(Some),
                Action::Map { table, default } => match current.as_deref().map(str::trim) {
                    Some(c) => table.get(c).cloned().or_else(|| default.clone()).map(Some),
                    None => None,
                },
                Action::Regex { pattern, replacement } => {
                    current.as_deref().map(|c| pattern.replace_all(c, replacement.as_str()).into_owned()).map(Some)
                }
            };
            let Some(new) = new else { continue };
            if new.as_deref() == current.as_deref() {
                continue;
            }
            remember(&obj, rule.tag, rule.vr, &mut originals);
            match new {
                Some(v) => put_text(&mut obj, rule.tag, rule.vr, &v),
                None => {
                    obj.remove_element(rule.tag);
                }
            }
        }

        if originals.is_empty() {
            return Ok(None);
        }
        let from = if source.actor.is_empty() { self.config.name.clone() } else { source.actor.clone() };
        let changed = record_originals(&mut obj, &originals, &from, "COERCE");
        let mut out = file[..dataset_offset].to_vec();
        obj.write_dataset_with_ts(&mut out, ts).map_err(|e| fail(e.to_string()))?;
        Ok(Some((out, Coerced { changed })))
    }
}
