//! Demographics from the Patient resource: age at the index date, sex, and the
//! US Core race and ethnicity extensions.

use chrono::{Datelike, NaiveDate};
use fhir_sdk::r4b::codes::AdministrativeGender;
use fhir_sdk::r4b::resources::Patient;
use fhir_sdk::r4b::types::{Extension, ExtensionValue};
use serde::Serialize;

use super::codes::{
    Coded, US_CORE_BIRTHSEX, US_CORE_ETHNICITY, US_CORE_RACE, omb_ethnicity_display,
    omb_race_display,
};
use super::dates::{self, DatePrecision};
use super::provenance::SourceRef;

/// Sex as recorded (administrative gender, or US Core birth sex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
    Other,
    Unknown,
}

/// Age in whole years at the index date.
///
/// With a partial birth date the true age lies in `min_years..=max_years`;
/// `years` then assumes the middle of the period (1 July for `1956`, the 15th
/// for `1956-03`). Cut-offs that depend on age (GLIM's 70 years) use the range
/// and only decide when the whole range falls on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Age {
    pub years: u32,
    pub min_years: u32,
    pub max_years: u32,
    /// The birth date as recorded (`1956`, `1956-03` or `1956-03-10`).
    pub birth_date: String,
    pub precision: DatePrecision,
}

/// One OMB category: the code and its standard display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OmbCategory {
    pub code: String,
    pub display: String,
}

/// Contents of a US Core race or ethnicity extension.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RaceEthnicity {
    /// `ombCategory` codings (race: up to 5, ethnicity: at most 1).
    pub omb: Vec<OmbCategory>,
    /// `detailed` codings (CDC Race & Ethnicity code system).
    pub detailed: Vec<Coded>,
    /// The required `text` sub-extension.
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Demographics {
    pub source: Option<SourceRef>,
    pub age: Option<Age>,
    /// `Patient.gender` (administrative gender).
    pub sex: Option<Sex>,
    /// US Core birth sex (`M`/`F`); `UNK` and other values are left out.
    pub birth_sex: Option<Sex>,
    pub race: Option<RaceEthnicity>,
    pub ethnicity: Option<RaceEthnicity>,
    /// Why something above is missing although the data had it.
    pub notes: Vec<String>,
}

impl Demographics {
    pub(crate) fn from_patient(patient: Option<&Patient>, index_date: NaiveDate) -> Self {
        let Some(patient) = patient else {
            return Self {
                notes: vec!["no Patient resource".to_owned()],
                ..Self::default()
            };
        };
        let mut out = Self {
            source: Some(SourceRef::new("Patient", patient.id.as_deref(), 0)),
            sex: patient.gender.as_ref().map(|g| match g {
                AdministrativeGender::Male => Sex::Male,
                AdministrativeGender::Female => Sex::Female,
                AdministrativeGender::Other => Sex::Other,
                AdministrativeGender::Unknown => Sex::Unknown,
            }),
            ..Self::default()
        };
        if let Some(birth) = &patient.birth_date {
            match age_at(birth, index_date) {
                Ok(age) => out.age = Some(age),
                Err(reason) => out.notes.push(reason),
            }
        }
        for ext in &patient.extension {
            match ext.url.as_str() {
                US_CORE_RACE => out.race = Some(race_ethnicity(ext, omb_race_display)),
                US_CORE_ETHNICITY => {
                    out.ethnicity = Some(race_ethnicity(ext, omb_ethnicity_display));
                }
                US_CORE_BIRTHSEX => {
                    out.birth_sex = match &ext.value {
                        Some(ExtensionValue::Code(c)) if c == "M" => Some(Sex::Male),
                        Some(ExtensionValue::Code(c)) if c == "F" => Some(Sex::Female),
                        _ => None,
                    };
                }
                _ => {}
            }
        }
        out
    }

    /// The sex used to pick sex-specific cut-offs (Prado, Martin, Fearon
    /// sarcopenia, CXI). The cut-offs are physiological, so US Core birth sex
    /// is preferred when it is male or female; otherwise administrative gender
    /// when it is male or female. `None` (other/unknown/absent) makes the
    /// indices decide only when both sexes' cut-offs agree.
    pub fn sex_for_cutoffs(&self) -> Option<Sex> {
        [self.birth_sex, self.sex]
            .into_iter()
            .flatten()
            .find(|s| matches!(s, Sex::Male | Sex::Female))
    }
}

fn age_at(birth: &fhir_sdk::Date, index_date: NaiveDate) -> Result<Age, String> {
    let range = dates::date_range(birth).ok_or("birthDate is out of range")?;
    if range.first > index_date {
        return Err(format!("birthDate is after the index date {index_date}"));
    }
    // Youngest possible: born on the last day of the period (clamped to the
    // index date when the period is the current one).
    let youngest_birth = range.last.min(index_date);
    let min_years = dates::whole_years(youngest_birth, index_date).unwrap_or(0);
    let max_years = dates::whole_years(range.first, index_date).unwrap_or(0);
    let assumed_birth = match range.precision {
        DatePrecision::Day => range.first,
        DatePrecision::Month => range.first.with_day(15).unwrap_or(range.first),
        DatePrecision::Year => range
            .first
            .with_month(7)
            .and_then(|d| d.with_day(1))
            .unwrap_or(range.first),
    };
    let years = dates::whole_years(assumed_birth.min(index_date), index_date)
        .unwrap_or(min_years)
        .clamp(min_years, max_years);
    let birth_date = match range.precision {
        DatePrecision::Year => range.first.format("%Y").to_string(),
        DatePrecision::Month => range.first.format("%Y-%m").to_string(),
        DatePrecision::Day => range.first.format("%Y-%m-%d").to_string(),
    };
    Ok(Age {
        years,
        min_years,
        max_years,
        birth_date,
        precision: range.precision,
    })
}

/// Read a US Core race/ethnicity extension. OMB displays come from our table
/// (the standard wording), falling back to the coding's own display for a
/// code we do not know.
fn race_ethnicity(ext: &Extension, omb_display: fn(&str) -> Option<&'static str>) -> RaceEthnicity {
    let mut out = RaceEthnicity::default();
    for sub in &ext.extension {
        match (sub.url.as_str(), &sub.value) {
            ("ombCategory", Some(ExtensionValue::Coding(c))) => {
                if let Some(coded) = Coded::from_coding(c) {
                    let display = omb_display(&coded.code)
                        .map(str::to_owned)
                        .or(coded.display)
                        .unwrap_or_else(|| coded.code.clone());
                    out.omb.push(OmbCategory {
                        code: coded.code,
                        display,
                    });
                }
            }
            ("detailed", Some(ExtensionValue::Coding(c))) => {
                if let Some(coded) = Coded::from_coding(c) {
                    out.detailed.push(coded);
                }
            }
            ("text", Some(ExtensionValue::String(t))) => out.text = Some(t.clone()),
            _ => {}
        }
    }
    out
}
