//! The DICOM attributes the catalog stores, matches on and returns.
//!
//! Each [`Attribute`] knows its tag, keyword, matching VR and the level of the
//! information model it belongs to. Protocol adapters translate requested tags or
//! keywords to attributes with [`Attribute::from_tag`] and [`Attribute::from_keyword`].

use crate::matching::MatchVr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A level of the DICOM query/retrieve information model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Patient level.
    Patient,
    /// Study level.
    Study,
    /// Series level.
    Series,
    /// Instance (IMAGE) level.
    Instance,
}

impl Level {
    /// The Query/Retrieve Level (0008,0052) code string.
    pub fn as_dicom(&self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Instance => "IMAGE",
        }
    }
    /// Parses a Query/Retrieve Level code string.
    pub fn from_dicom(s: &str) -> Option<Level> {
        match s.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" | "INSTANCE" => Some(Level::Instance),
            _ => None,
        }
    }
}

macro_rules! attributes {
    ($( $(#[$doc:meta])* $name:ident = ($group:literal, $elem:literal, $vr:ident, $level:ident, $stored:literal); )*) => {
        /// A catalog attribute.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Attribute {
            $( $(#[$doc])* $name, )*
        }

        impl Attribute {
            /// Every attribute, in tag order within levels.
            pub const ALL: &'static [Attribute] = &[ $( Attribute::$name, )* ];

            /// The tag as `(group << 16) | element`.
            pub fn tag(&self) -> u32 {
                match self { $( Attribute::$name => ($group << 16) | $elem, )* }
            }
            /// The group and element of the tag.
            pub fn group_element(&self) -> (u16, u16) {
                match self { $( Attribute::$name => ($group, $elem), )* }
            }
            /// The DICOM keyword.
            pub fn keyword(&self) -> &'static str {
                match self { $( Attribute::$name => stringify!($name), )* }
            }
            /// How query values for this attribute are matched.
            pub fn match_vr(&self) -> MatchVr {
                match self { $( Attribute::$name => MatchVr::$vr, )* }
            }
            /// The level whose records hold this attribute.
            pub fn level(&self) -> Level {
                match self { $( Attribute::$name => Level::$level, )* }
            }
            /// Whether the value is read from the object at ingest (false: computed by the catalog).
            pub fn is_stored(&self) -> bool {
                match self { $( Attribute::$name => $stored, )* }
            }
            /// Finds an attribute by keyword.
            pub fn from_keyword(k: &str) -> Option<Attribute> {
                match k { $( stringify!($name) => Some(Attribute::$name), )* _ => None }
            }
        }
    };
}

attributes! {
    /// (0008,0016)
    SOPClassUID = (0x0008, 0x0016, Ui, Instance, true);
    /// (0008,0018)
    SOPInstanceUID = (0x0008, 0x0018, Ui, Instance, true);
    /// (0008,0020)
    StudyDate = (0x0008, 0x0020, Da, Study, true);
    /// (0008,0021)
    SeriesDate = (0x0008, 0x0021, Da, Series, true);
    /// (0008,0023)
    ContentDate = (0x0008, 0x0023, Da, Instance, true);
    /// (0008,0030)
    StudyTime = (0x0008, 0x0030, Tm, Study, true);
    /// (0008,0031)
    SeriesTime = (0x0008, 0x0031, Tm, Series, true);
    /// (0008,0033)
    ContentTime = (0x0008, 0x0033, Tm, Instance, true);
    /// (0008,0050)
    AccessionNumber = (0x0008, 0x0050, Text, Study, true);
    /// (0008,0060)
    Modality = (0x0008, 0x0060, Cs, Series, true);
    /// (0008,0061), computed from the series of the study.
    ModalitiesInStudy = (0x0008, 0x0061, Cs, Study, false);
    /// (0008,0062), computed from the instances of the study.
    SOPClassesInStudy = (0x0008, 0x0062, Ui, Study, false);
    /// (0008,0080)
    InstitutionName = (0x0008, 0x0080, Text, Study, true);
    /// (0008,0090)
    ReferringPhysicianName = (0x0008, 0x0090, Pn, Study, true);
    /// (0008,1030)
    StudyDescription = (0x0008, 0x1030, Text, Study, true);
    /// (0008,103E)
    SeriesDescription = (0x0008, 0x103E, Text, Series, true);
    /// (0010,0010)
    PatientName = (0x0010, 0x0010, Pn, Patient, true);
    /// (0010,0020)
    PatientID = (0x0010, 0x0020, Text, Patient, true);
    /// (0010,0021)
    IssuerOfPatientID = (0x0010, 0x0021, Text, Patient, true);
    /// (0010,0030)
    PatientBirthDate = (0x0010, 0x0030, Da, Patient, true);
    /// (0010,0040)
    PatientSex = (0x0010, 0x0040, Cs, Patient, true);
    /// (0010,1010)
    PatientAge = (0x0010, 0x1010, Text, Study, true);
    /// (0018,0015)
    BodyPartExamined = (0x0018, 0x0015, Cs, Series, true);
    /// (0020,000D)
    StudyInstanceUID = (0x0020, 0x000D, Ui, Study, true);
    /// (0020,000E)
    SeriesInstanceUID = (0x0020, 0x000E, Ui, Series, true);
    /// (0020,0010)
    StudyID = (0x0020, 0x0010, Text, Study, true);
    /// (0020,0011)
    SeriesNumber = (0x0020, 0x0011, Number, Series, true);
    /// (0020,0013)
    InstanceNumber = (0x0020, 0x0013, Number, Instance, true);
    /// (0020,1200), computed.
    NumberOfPatientRelatedStudies = (0x0020, 0x1200, Number, Patient, false);
    /// (0020,1202), computed.
    NumberOfPatientRelatedSeries = (0x0020, 0x1202, Number, Patient, false);
    /// (0020,1204), computed.
    NumberOfPatientRelatedInstances = (0x0020, 0x1204, Number, Patient, false);
    /// (0020,1206), computed.
    NumberOfStudyRelatedSeries = (0x0020, 0x1206, Number, Study, false);
    /// (0020,1208), computed.
    NumberOfStudyRelatedInstances = (0x0020, 0x1208, Number, Study, false);
    /// (0020,1209), computed.
    NumberOfSeriesRelatedInstances = (0x0020, 0x1209, Number, Series, false);
    /// (0028,0008)
    NumberOfFrames = (0x0028, 0x0008, Number, Instance, true);
    /// (0028,0010)
    Rows = (0x0028, 0x0010, Number, Instance, true);
    /// (0028,0011)
    Columns = (0x0028, 0x0011, Number, Instance, true);
    /// (0028,0100)
    BitsAllocated = (0x0028, 0x0100, Number, Instance, true);
    /// (0008,0005): the character set the text values were decoded from.
    SpecificCharacterSet = (0x0008, 0x0005, Cs, Instance, true);
    /// (0002,0010) of the stored object; returned as AvailableTransferSyntaxUID (0008,3002) by QIDO-RS.
    TransferSyntaxUID = (0x0002, 0x0010, Ui, Instance, true);
}

impl Attribute {
    /// Finds an attribute by tag.
    pub fn from_tag(group: u16, element: u16) -> Option<Attribute> {
        let tag = ((group as u32) << 16) | element as u32;
        Attribute::ALL.iter().copied().find(|a| a.tag() == tag)
    }
    /// The stored attributes of one level.
    pub fn stored_at(level: Level) -> impl Iterator<Item = Attribute> {
        Attribute::ALL.iter().copied().filter(move |a| a.is_stored() && a.level() == level)
    }
}

/// Attribute values of one record, as DICOM strings (multi-values joined by `\`),
/// text already decoded from the object's character set. Absent and empty values are not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttrMap(BTreeMap<Attribute, String>);

impl AttrMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// The value of an attribute, if present.
    pub fn get(&self, a: Attribute) -> Option<&str> {
        self.0.get(&a).map(String::as_str)
    }
    /// Sets a value; an empty value removes the attribute.
    pub fn set(&mut self, a: Attribute, v: impl Into<String>) {
        let v = v.into();
        if v.is_empty() {
            self.0.remove(&a);
        } else {
            self.0.insert(a, v);
        }
    }
    /// Iterates over present values.
    pub fn iter(&self) -> impl Iterator<Item = (Attribute, &str)> {
        self.0.iter().map(|(a, v)| (*a, v.as_str()))
    }
    /// The values of the given level only.
    pub fn of_level(&self, level: Level) -> AttrMap {
        AttrMap(self.0.iter().filter(|(a, _)| a.level() == level).map(|(a, v)| (*a, v.clone())).collect())
    }
    /// Adds every value of `other`, replacing existing ones.
    pub fn extend(&mut self, other: &AttrMap) {
        for (a, v) in other.iter() {
            self.0.insert(a, v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn lookups() {
        assert_eq!(Attribute::from_tag(0x0010, 0x0010), Some(Attribute::PatientName));
        assert_eq!(Attribute::from_keyword("StudyDate"), Some(Attribute::StudyDate));
        assert_eq!(Attribute::PatientID.tag(), 0x0010_0020);
        assert_eq!(Attribute::from_keyword("Nope"), None);
        assert!(Attribute::stored_at(Level::Series).any(|a| a == Attribute::Modality));
    }
}
