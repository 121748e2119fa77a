//! Code systems and the codes the timeline recognises.
//!
//! Observation codes are LOINC except for L3 body composition, for which no
//! standard LOINC codes exist. Those use our own code system
//! [`BODY_COMPOSITION`] (`https://oncohooks.invalid/fhir/CodeSystem/body-composition`;
//! `.invalid` is reserved by RFC 2606, so it never resolves and never collides
//! with a real system). Codes, all measured on one axial CT slice at the
//! middle of the third lumbar vertebra (L3):
//!
//! | code           | meaning                                              | unit           |
//! |----------------|------------------------------------------------------|----------------|
//! | `l3-smi`       | skeletal muscle index = muscle area / height²         | `cm2/m2`       |
//! | `l3-sma`       | skeletal muscle area (−29..150 HU)                    | `cm2`          |
//! | `l3-muscle-hu` | mean skeletal muscle attenuation (radiodensity)       | `[hnsf'U]`     |
//! | `l3-vat`       | visceral adipose tissue area (−150..−50 HU)           | `cm2`          |
//! | `l3-sat`       | subcutaneous adipose tissue area (−190..−30 HU)       | `cm2`          |
//!
//! The imaging module writes its results with these codes; an EHR that stores
//! body composition with them is read the same way. One more code of the
//! system is not a measurement and not an [`Analyte`]: `l3-slice`, the
//! position of the L3 slice in a CT study (`valueQuantity` z in mm or
//! `valueString` SOPInstanceUID, `derivedFrom` the ImagingStudy), which tells
//! the CT body-composition job which slice to measure (`imaging::cache`).

use serde::Serialize;

pub const LOINC: &str = "http://loinc.org";
/// LOINC's OID form, seen in CDA-derived data.
pub const LOINC_OID: &str = "urn:oid:2.16.840.1.113883.6.1";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
pub const ICD10CM_OID: &str = "urn:oid:2.16.840.1.113883.6.90";
pub const ICD10_OID: &str = "urn:oid:2.16.840.1.113883.6.3";
pub const UCUM: &str = "http://unitsofmeasure.org";
/// Our code system for L3 body composition (see the module docs).
pub const BODY_COMPOSITION: &str = "https://oncohooks.invalid/fhir/CodeSystem/body-composition";
/// AJCC staging code system used by mCODE.
pub const AJCC: &str = "http://cancerstaging.org";

pub const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
pub const US_CORE_ETHNICITY: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
pub const US_CORE_BIRTHSEX: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
/// CDC Race & Ethnicity code system (OMB categories and detailed codes).
pub const CDC_RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";

/// A coding as found in the data, for provenance (`system|code "display"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coded {
    /// From a fhir-sdk coding; `None` when it carries no code.
    pub(crate) fn from_coding(c: &fhir_sdk::r4b::types::Coding) -> Option<Self> {
        let code = c.code.as_deref()?.trim();
        if code.is_empty() {
            return None;
        }
        Some(Self {
            system: c.system.clone(),
            code: code.to_owned(),
            display: c.display.clone(),
        })
    }
}

pub(crate) fn is_loinc(system: &str) -> bool {
    system == LOINC || system == LOINC_OID
}

pub(crate) fn is_icd10(system: &str) -> bool {
    matches!(system, ICD10CM | ICD10 | ICD10CM_OID | ICD10_OID)
}

/// Quantities the timeline keeps as series, each with one canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Analyte {
    BodyWeight,
    BodyHeight,
    Bmi,
    Albumin,
    /// CRP and high-sensitivity CRP share one series (both mg/L).
    Crp,
    Neutrophils,
    Lymphocytes,
    Hemoglobin,
    TotalProtein,
    Prealbumin,
    Creatinine,
    UreaNitrogen,
    Ecog,
    Karnofsky,
    L3Smi,
    L3Sma,
    L3MuscleHu,
    L3Vat,
    L3Sat,
}

impl Analyte {
    pub const ALL: [Analyte; 19] = [
        Analyte::BodyWeight,
        Analyte::BodyHeight,
        Analyte::Bmi,
        Analyte::Albumin,
        Analyte::Crp,
        Analyte::Neutrophils,
        Analyte::Lymphocytes,
        Analyte::Hemoglobin,
        Analyte::TotalProtein,
        Analyte::Prealbumin,
        Analyte::Creatinine,
        Analyte::UreaNitrogen,
        Analyte::Ecog,
        Analyte::Karnofsky,
        Analyte::L3Smi,
        Analyte::L3Sma,
        Analyte::L3MuscleHu,
        Analyte::L3Vat,
        Analyte::L3Sat,
    ];

    /// The canonical UCUM unit every value of this analyte is converted to.
    pub const fn unit(self) -> &'static str {
        match self {
            Analyte::BodyWeight => "kg",
            Analyte::BodyHeight => "cm",
            Analyte::Bmi => "kg/m2",
            Analyte::Albumin | Analyte::Hemoglobin | Analyte::TotalProtein => "g/dL",
            Analyte::Crp => "mg/L",
            Analyte::Neutrophils | Analyte::Lymphocytes => "10*9/L",
            Analyte::Prealbumin | Analyte::Creatinine | Analyte::UreaNitrogen => "mg/dL",
            Analyte::Ecog => "{score}",
            Analyte::Karnofsky => "%",
            Analyte::L3Smi => "cm2/m2",
            Analyte::L3Sma | Analyte::L3Vat | Analyte::L3Sat => "cm2",
            Analyte::L3MuscleHu => "[hnsf'U]",
        }
    }

    /// Human label used in reasons and cards.
    pub const fn label(self) -> &'static str {
        match self {
            Analyte::BodyWeight => "body weight",
            Analyte::BodyHeight => "body height",
            Analyte::Bmi => "BMI",
            Analyte::Albumin => "albumin",
            Analyte::Crp => "CRP",
            Analyte::Neutrophils => "neutrophils",
            Analyte::Lymphocytes => "lymphocytes",
            Analyte::Hemoglobin => "hemoglobin",
            Analyte::TotalProtein => "total protein",
            Analyte::Prealbumin => "prealbumin",
            Analyte::Creatinine => "creatinine",
            Analyte::UreaNitrogen => "urea nitrogen",
            Analyte::Ecog => "ECOG performance status",
            Analyte::Karnofsky => "Karnofsky performance status",
            Analyte::L3Smi => "L3 skeletal muscle index",
            Analyte::L3Sma => "L3 skeletal muscle area",
            Analyte::L3MuscleHu => "L3 muscle attenuation",
            Analyte::L3Vat => "L3 visceral adipose tissue area",
            Analyte::L3Sat => "L3 subcutaneous adipose tissue area",
        }
    }

    /// Scores are unit-less; a missing unit is not a reason to skip them.
    pub(crate) const fn is_score(self) -> bool {
        matches!(self, Analyte::Ecog | Analyte::Karnofsky)
    }

    /// The analyte a coding identifies, if any.
    pub fn from_coding(system: &str, code: &str) -> Option<Analyte> {
        let code = code.trim();
        if is_loinc(system) {
            Some(match code {
                // Body weight; 3141-9 is "Body weight Measured".
                "29463-7" | "3141-9" => Analyte::BodyWeight,
                // Body height; 8306-3 is "Body height --lying" (recumbent).
                "8302-2" | "8306-3" => Analyte::BodyHeight,
                "39156-5" => Analyte::Bmi,
                // 61151-7: albumin by bromocresol green, same units.
                "1751-7" | "61151-7" => Analyte::Albumin,
                // 1988-5 CRP, 30522-7 hs-CRP: same analyte and unit.
                "1988-5" | "30522-7" => Analyte::Crp,
                // Absolute counts only: 770-8 (neutrophils %) is not a count.
                "751-8" | "26499-4" => Analyte::Neutrophils,
                "731-0" | "26474-7" => Analyte::Lymphocytes,
                // 59260-0 is hemoglobin in mmol/L (Dutch/Scandinavian labs).
                "718-7" | "59260-0" => Analyte::Hemoglobin,
                "2885-2" => Analyte::TotalProtein,
                "14338-8" => Analyte::Prealbumin,
                // 14682-9 is creatinine in µmol/L (moles/volume).
                "2160-0" | "14682-9" => Analyte::Creatinine,
                "3094-0" => Analyte::UreaNitrogen,
                "89247-1" => Analyte::Ecog,
                "89243-0" => Analyte::Karnofsky,
                _ => return None,
            })
        } else if system == BODY_COMPOSITION {
            Some(match code {
                "l3-smi" => Analyte::L3Smi,
                "l3-sma" => Analyte::L3Sma,
                "l3-muscle-hu" => Analyte::L3MuscleHu,
                "l3-vat" => Analyte::L3Vat,
                "l3-sat" => Analyte::L3Sat,
                _ => return None,
            })
        } else {
            None
        }
    }
}

/// LOINC codes of cancer staging observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StagingCode {
    /// 21908-9 clinical / 21902-2 pathologic stage group.
    StageGroup,
    /// 21905-5 clinical / 21899-0 pathologic primary tumour (T).
    PrimaryTumor,
    /// 21906-3 clinical / 21900-6 pathologic regional nodes (N).
    RegionalNodes,
    /// 21907-1 clinical / 21901-4 pathologic distant metastases (M).
    DistantMetastases,
}

impl StagingCode {
    pub fn from_coding(system: &str, code: &str) -> Option<StagingCode> {
        if !is_loinc(system) {
            return None;
        }
        Some(match code.trim() {
            "21908-9" | "21902-2" => StagingCode::StageGroup,
            "21905-5" | "21899-0" => StagingCode::PrimaryTumor,
            "21906-3" | "21900-6" => StagingCode::RegionalNodes,
            "21907-1" | "21901-4" => StagingCode::DistantMetastases,
            _ => return None,
        })
    }
}

/// OMB race categories (US Core race extension, `ombCategory`), with the
/// null flavours US Core allows in their place.
pub(crate) fn omb_race_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "1002-5" => "American Indian or Alaska Native",
        "2028-9" => "Asian",
        "2054-5" => "Black or African American",
        "2076-8" => "Native Hawaiian or Other Pacific Islander",
        "2106-3" => "White",
        "UNK" => "Unknown",
        "ASKU" => "Asked but no answer",
        _ => return None,
    })
}

/// OMB ethnicity categories (US Core ethnicity extension, `ombCategory`).
pub(crate) fn omb_ethnicity_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "2135-2" => "Hispanic or Latino",
        "2186-5" => "Not Hispanic or Latino",
        "UNK" => "Unknown",
        "ASKU" => "Asked but no answer",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_analyte_has_a_code_that_maps_back() {
        let loinc = [
            "29463-7", "8302-2", "39156-5", "1751-7", "1988-5", "751-8", "731-0", "718-7",
            "2885-2", "14338-8", "2160-0", "3094-0", "89247-1", "89243-0",
        ];
        let ours = ["l3-smi", "l3-sma", "l3-muscle-hu", "l3-vat", "l3-sat"];
        let mut found: Vec<Analyte> = loinc
            .iter()
            .map(|c| Analyte::from_coding(LOINC, c).unwrap())
            .chain(
                ours.iter()
                    .map(|c| Analyte::from_coding(BODY_COMPOSITION, c).unwrap()),
            )
            .collect();
        found.sort();
        found.dedup();
        assert_eq!(found.len(), Analyte::ALL.len());
    }

    #[test]
    fn codes_from_other_systems_and_percentages_do_not_match() {
        assert_eq!(Analyte::from_coding(SNOMED, "29463-7"), None);
        assert_eq!(Analyte::from_coding(LOINC, "770-8"), None);
        assert_eq!(
            Analyte::from_coding(LOINC_OID, "1751-7"),
            Some(Analyte::Albumin)
        );
        assert_eq!(Analyte::from_coding(BODY_COMPOSITION, "L3-SMI"), None);
    }
}
