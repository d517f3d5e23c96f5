//! Deterministic synthetic DICOM studies for benchmarks and tests.
//!
//! The same seed always gives the same studies, UIDs and bytes. UIDs live under the
//! `2.25` (UUID-derived) root, so they never collide with real data.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Computed Radiography Image Storage.
pub const CR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1";
/// Digital X-Ray Image Storage – For Presentation.
pub const DX_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1.1";
/// Ultrasound Multi-frame Image Storage.
pub const US_MULTIFRAME_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.3.1";
/// Ultrasound Image Storage.
pub const US_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.6.1";
/// Every storage SOP class the generator produces (for association negotiation).
pub const GENERATED_STORAGE_CLASSES: &[&str] = &[
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    CR_IMAGE_STORAGE,
    DX_IMAGE_STORAGE,
    US_MULTIFRAME_STORAGE,
    US_IMAGE_STORAGE,
    KEY_OBJECT_SELECTION_STORAGE,
];
/// Key Object Selection Document Storage.
pub const KEY_OBJECT_SELECTION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.59";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

const FAMILY: &[&str] = &["DOE", "SMITH", "MÜLLER", "GARCÍA", "DUPONT", "ROSSI", "NOWAK", "JANSEN", "SILVA", "OKAFOR"];
const GIVEN: &[&str] = &["JOHN", "JANE", "ANNA", "LUIS", "AMÉLIE", "MARCO", "PIOTR", "SOFIE", "ANA", "CHIDI"];

/// One generated instance.
#[derive(Debug, Clone)]
pub struct SyntheticInstance {
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop_instance: String,
    /// The Part-10 file.
    pub bytes: Vec<u8>,
}

/// The shape of a generated study.
#[derive(Debug, Clone)]
pub struct StudySpec {
    /// Modality of every series (CT or MR).
    pub modality: &'static str,
    /// Number of series.
    pub series: u32,
    /// Instances in each series.
    pub instances_per_series: u32,
    /// Image rows.
    pub rows: u16,
    /// Image columns.
    pub columns: u16,
    /// Frames per instance (1: single-frame; more: multi-frame with Number of Frames).
    pub frames: u32,
    /// Bits allocated per sample (8 or 16).
    pub bits_allocated: u16,
    /// Samples per pixel (1: MONOCHROME2, 3: RGB).
    pub samples_per_pixel: u16,
}

impl StudySpec {
    /// A CT series of 512×512×16-bit images.
    pub fn ct(instances: u32) -> Self {
        Self {
            modality: "CT",
            series: 1,
            instances_per_series: instances,
            rows: 512,
            columns: 512,
            frames: 1,
            bits_allocated: 16,
            samples_per_pixel: 1,
        }
    }
    /// Small images, for metadata-heavy sets and fast tests.
    pub fn tiny(modality: &'static str, series: u32, instances_per_series: u32) -> Self {
        Self { modality, series, instances_per_series, rows: 8, columns: 8, ..Self::ct(0) }
    }
    /// One computed radiography image of 3000 rows × 2500 columns × 16 bit (about 15 MB).
    pub fn cr() -> Self {
        Self { modality: "CR", series: 1, instances_per_series: 1, rows: 3000, columns: 2500, ..Self::ct(0) }
    }
    /// One digital X-ray image (For Presentation) of 3000 rows × 2500 columns × 16 bit.
    pub fn dx() -> Self {
        Self { modality: "DX", ..Self::cr() }
    }
    /// One multi-frame ultrasound cine of `frames` frames of 640×480×8 bit, RGB when `rgb`
    /// (about 27.6 MB for 30 RGB frames), MONOCHROME2 otherwise.
    pub fn us(frames: u32, rgb: bool) -> Self {
        Self {
            modality: "US",
            series: 1,
            instances_per_series: 1,
            rows: 480,
            columns: 640,
            frames: frames.max(1),
            bits_allocated: 8,
            samples_per_pixel: if rgb { 3 } else { 1 },
        }
    }
    /// The storage SOP class of the instances.
    pub fn sop_class(&self) -> &'static str {
        match self.modality {
            "MR" => MR_IMAGE_STORAGE,
            "CR" => CR_IMAGE_STORAGE,
            "DX" => DX_IMAGE_STORAGE,
            "US" if self.frames > 1 => US_MULTIFRAME_STORAGE,
            "US" => US_IMAGE_STORAGE,
            _ => CT_IMAGE_STORAGE,
        }
    }
}

/// A deterministic generator.
#[derive(Debug, Clone)]
pub struct DatasetGenerator {
    state: u64,
    counter: u64,
}

impl DatasetGenerator {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed ^ 0x9E37_79B9_7F4A_7C15, counter: 0 }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A fresh UID under 2.25.
    pub fn uid(&mut self) -> String {
        self.counter += 1;
        let v = ((self.next() as u128) << 64 | self.next() as u128) | (1u128 << 127);
        format!("2.25.{v}")
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next() % list.len() as u64) as usize]
    }

    /// Generates one study.
    pub fn study(&mut self, spec: &StudySpec) -> Vec<SyntheticInstance> {
        let study = self.uid();
        let patient_id = format!("P{:08}", self.next() % 100_000_000);
        let name = format!("{}^{}", self.pick(FAMILY), self.pick(GIVEN));
        let year = 2011 + (self.next() % 15) as u32;
        let date = format!("{year}{:02}{:02}", 1 + self.next() % 12, 1 + self.next() % 28);
        let accession = format!("A{:09}", self.next() % 1_000_000_000);
        let mut out = Vec::new();
        for s in 0..spec.series {
            let series = self.uid();
            for i in 0..spec.instances_per_series {
                let sop = self.uid();
                let mut obj = InMemDicomObject::new_empty();
                let put = |obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str| {
                    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
                };
                let sop_class = spec.sop_class();
                put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
                put(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
                put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop);
                put(&mut obj, tags::STUDY_DATE, VR::DA, &date);
                put(&mut obj, tags::STUDY_TIME, VR::TM, "101500");
                put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, &accession);
                put(&mut obj, tags::MODALITY, VR::CS, spec.modality);
                put(&mut obj, tags::STUDY_DESCRIPTION, VR::LO, "SYNTHETIC STUDY");
                put(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &format!("SERIES {}", s + 1));
                put(&mut obj, tags::PATIENT_NAME, VR::PN, &name);
                put(&mut obj, tags::PATIENT_ID, VR::LO, &patient_id);
                put(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
                put(&mut obj, tags::PATIENT_SEX, VR::CS, "O");
                put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &study);
                put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series);
                put(&mut obj, tags::STUDY_ID, VR::SH, "1");
                put(&mut obj, tags::SERIES_NUMBER, VR::IS, &(s + 1).to_string());
                put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, &(i + 1).to_string());
                let rgb = spec.samples_per_pixel == 3;
                put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, if rgb { "RGB" } else { "MONOCHROME2" });
                obj.put(DataElement::new(
                    tags::SAMPLES_PER_PIXEL,
                    VR::US,
                    PrimitiveValue::from(spec.samples_per_pixel),
                ));
                if rgb {
                    obj.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)));
                }
                if spec.frames > 1 {
                    put(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &spec.frames.to_string());
                    put(&mut obj, tags::FRAME_TIME, VR::DS, "33.3");
                    obj.put(DataElement::new(
                        tags::FRAME_INCREMENT_POINTER,
                        VR::AT,
                        PrimitiveValue::Tags(vec![tags::FRAME_TIME].into()),
                    ));
                }
                obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)));
                obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)));
                let (bits, stored) = if spec.bits_allocated == 8 { (8u16, 8u16) } else { (16, 12) };
                obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)));
                obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(stored)));
                obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(stored - 1)));
                obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
                if bits == 8 {
                    let pixels = self.pixels8(spec.rows, spec.columns, spec.samples_per_pixel, spec.frames);
                    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)));
                } else {
                    let mut pixels = Vec::new();
                    for _ in 0..spec.frames * spec.samples_per_pixel as u32 {
                        pixels.extend(self.pixels(spec.rows, spec.columns));
                    }
                    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
                }
                let file = obj
                    .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
                    .expect("generated meta is complete");
                let mut bytes = Vec::new();
                file.write_all(&mut bytes).expect("writing to memory cannot fail");
                out.push(SyntheticInstance { study: study.clone(), series: series.clone(), sop_instance: sop, bytes });
            }
        }
        out
    }

    /// An IHE IOCM rejection note (Key Object Selection) titled `code`/`meaning` (scheme DCM)
    /// that rejects `rejected` (all of one study), in a new series of that study.
    pub fn rejection_note(&mut self, code: &str, meaning: &str, rejected: &[SyntheticInstance]) -> SyntheticInstance {
        use dicom_object::mem::InMemElement;
        let study = rejected.first().map(|r| r.study.clone()).unwrap_or_else(|| self.uid());
        let (series, sop) = (self.uid(), self.uid());
        let put = |obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        let mut obj = InMemDicomObject::new_empty();
        put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put(&mut obj, tags::SOP_CLASS_UID, VR::UI, KEY_OBJECT_SELECTION_STORAGE);
        put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop);
        put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &study);
        put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series);
        put(&mut obj, tags::MODALITY, VR::CS, "KO");
        put(&mut obj, tags::PATIENT_ID, VR::LO, "REJECTOR");
        put(&mut obj, tags::SERIES_NUMBER, VR::IS, "999");
        put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
        put(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
        let mut concept = InMemDicomObject::new_empty();
        put(&mut concept, tags::CODE_VALUE, VR::SH, code);
        put(&mut concept, tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM");
        put(&mut concept, tags::CODE_MEANING, VR::LO, meaning);
        obj.put(InMemElement::new(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![concept]),
        ));
        let mut by_series: Vec<(String, Vec<InMemDicomObject>)> = Vec::new();
        for r in rejected {
            let mut item = InMemDicomObject::new_empty();
            put(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE);
            put(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &r.sop_instance);
            match by_series.iter_mut().find(|(s, _)| *s == r.series) {
                Some((_, items)) => items.push(item),
                None => by_series.push((r.series.clone(), vec![item])),
            }
        }
        let series_items: Vec<InMemDicomObject> = by_series
            .into_iter()
            .map(|(uid, items)| {
                let mut s = InMemDicomObject::new_empty();
                put(&mut s, tags::SERIES_INSTANCE_UID, VR::UI, &uid);
                s.put(InMemElement::new(
                    tags::REFERENCED_SOP_SEQUENCE,
                    VR::SQ,
                    dicom_core::value::DataSetSequence::from(items),
                ));
                s
            })
            .collect();
        let mut evidence = InMemDicomObject::new_empty();
        put(&mut evidence, tags::STUDY_INSTANCE_UID, VR::UI, &study);
        evidence.put(InMemElement::new(
            tags::REFERENCED_SERIES_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(series_items),
        ));
        obj.put(InMemElement::new(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![evidence]),
        ));
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
            .expect("generated meta is complete");
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).expect("writing to memory cannot fail");
        SyntheticInstance { study, series, sop_instance: sop, bytes }
    }

    /// A smooth body outline with noise in the low bits: compresses about as well as real CT.
    fn pixels(&mut self, rows: u16, columns: u16) -> Vec<u8> {
        let (r, c) = (rows as i64, columns as i64);
        let mut out = Vec::with_capacity((r * c * 2) as usize);
        let mut noise = self.next();
        for y in 0..r {
            for x in 0..c {
                let (dx, dy) = (x - c / 2, y - r / 2);
                let inside = dx * dx + dy * dy < (r * r) / 5;
                noise = noise.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let base: u16 = if inside { 1000 + ((x + y) % 64) as u16 } else { 0 };
                let v = base + ((noise >> 60) as u16);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }
}

impl DatasetGenerator {
    /// 8-bit samples (interleaved when `samples` is 3) for `frames` frames: a moving sector
    /// shape with speckle noise, so that frames differ and compress like real ultrasound.
    fn pixels8(&mut self, rows: u16, columns: u16, samples: u16, frames: u32) -> Vec<u8> {
        let (r, c) = (rows as i64, columns as i64);
        let mut out = Vec::with_capacity((r * c) as usize * samples as usize * frames as usize);
        let mut noise = self.next();
        for f in 0..frames as i64 {
            for y in 0..r {
                for x in 0..c {
                    let dx = x - c / 2;
                    let inside = y > r / 8 && dx.abs() < y;
                    for s in 0..samples as i64 {
                        noise = noise.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                        let base: u8 = if inside { 60 + ((x + y + 3 * f + 7 * s) % 64) as u8 } else { 0 };
                        out.push(base.wrapping_add((noise >> 59) as u8));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn deterministic() {
        let a = DatasetGenerator::new(1).study(&StudySpec::tiny("CT", 2, 2));
        let b = DatasetGenerator::new(1).study(&StudySpec::tiny("CT", 2, 2));
        assert_eq!(a.len(), 4);
        assert_eq!(a[3].bytes, b[3].bytes);
        assert_ne!(a[0].sop_instance, a[1].sop_instance);
        assert_eq!(a[0].series, a[1].series);
        assert_ne!(a[1].series, a[2].series);
    }

    fn parse(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
        dicom_object::from_reader(&bytes[128..]).expect("parseable Part-10")
    }

    #[test]
    fn cr_dx_single_large_image() {
        for spec in [StudySpec::cr(), StudySpec::dx()] {
            let a = DatasetGenerator::new(7).study(&spec);
            let b = DatasetGenerator::new(7).study(&spec);
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].bytes, b[0].bytes);
            let obj = parse(&a[0].bytes);
            assert_eq!(
                obj.element(tags::SOP_CLASS_UID).unwrap().to_str().unwrap().trim_end_matches('\0'),
                spec.sop_class()
            );
            assert_eq!(obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 3000);
            assert_eq!(obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(), 2500);
            assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(), 3000 * 2500 * 2);
        }
    }

    #[test]
    fn multiframe_us() {
        for rgb in [true, false] {
            let spec = StudySpec::us(30, rgb);
            let a = DatasetGenerator::new(9).study(&spec);
            let b = DatasetGenerator::new(9).study(&spec);
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].bytes, b[0].bytes);
            let obj = parse(&a[0].bytes);
            assert_eq!(obj.element(tags::NUMBER_OF_FRAMES).unwrap().to_int::<u32>().unwrap(), 30);
            assert_eq!(
                obj.element(tags::SOP_CLASS_UID).unwrap().to_str().unwrap().trim_end_matches('\0'),
                US_MULTIFRAME_STORAGE
            );
            let spp = if rgb { 3 } else { 1 };
            assert_eq!(obj.element(tags::SAMPLES_PER_PIXEL).unwrap().to_int::<u16>().unwrap(), spp);
            let photometric = obj.element(tags::PHOTOMETRIC_INTERPRETATION).unwrap().to_str().unwrap();
            assert_eq!(photometric.trim(), if rgb { "RGB" } else { "MONOCHROME2" });
            assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(), 30 * 640 * 480 * spp as usize);
        }
        let one = DatasetGenerator::new(9).study(&StudySpec::us(1, false));
        assert!(parse(&one[0].bytes).element(tags::NUMBER_OF_FRAMES).is_err());
    }
}
