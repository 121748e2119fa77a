//! Observation series by code, normalised to canonical units.
//!
//! Rules:
//! - Observations with status `entered-in-error` or `cancelled` are skipped.
//! - The date is the effective date (`effectiveDateTime`, `effectivePeriod.start`,
//!   `effectiveInstant`), else `issued`; it must be a full date (weight windows
//!   need days). Values dated after the index date are skipped: the timeline
//!   describes what was known on the index date, so a replay of a past date
//!   (and the synthetic cohort) never sees the future.
//! - `valueQuantity` with a recognised unit (see `units`); a comparator (`<5`)
//!   means a censored value and is skipped. Scores (ECOG, Karnofsky) also
//!   accept `valueInteger` and, for ECOG, LOINC answer codes LA9622-7..LA9627-6
//!   (grades 0–5) or a numeric code.
//! - Components are read with the same rules when the component code is one
//!   we know (e.g. a body-composition panel); other components are ignored.
//! - Every recognised value that is not used leaves a `SkippedValue` with the
//!   reason. Observations with codes we do not use are only counted.

use chrono::NaiveDate;
use fhir_sdk::r4b::codes::ObservationStatus;
use fhir_sdk::r4b::resources::{
    Observation, ObservationComponentValue, ObservationEffective, ObservationValue,
};
use fhir_sdk::r4b::types::{CodeableConcept, Quantity};
use std::collections::BTreeMap;

use super::codes::{Analyte, StagingCode, UCUM};
use super::dates;
use super::diagnoses::{self, StagingObservation};
use super::provenance::{Measurement, SourceRef};
use super::timeline::SkippedValue;
use super::units;

#[derive(Debug, Default)]
pub(crate) struct ObservationExtraction {
    pub series: BTreeMap<Analyte, Vec<Measurement>>,
    pub staging: Vec<StagingObservation>,
    pub ignored: usize,
}

/// The value part shared by `Observation.value[x]` and `component.value[x]`.
enum Value<'a> {
    Quantity(&'a Quantity),
    Integer(i32),
    Concept(&'a CodeableConcept),
    Other(&'static str),
    Missing,
}

impl<'a> From<Option<&'a ObservationValue>> for Value<'a> {
    fn from(v: Option<&'a ObservationValue>) -> Self {
        match v {
            Some(ObservationValue::Quantity(q)) => Value::Quantity(q),
            Some(ObservationValue::Integer(i)) => Value::Integer(*i),
            Some(ObservationValue::CodeableConcept(c)) => Value::Concept(c),
            Some(ObservationValue::String(_)) => Value::Other("a string"),
            Some(ObservationValue::Range(_)) => Value::Other("a range"),
            Some(ObservationValue::Ratio(_)) => Value::Other("a ratio"),
            Some(_) => Value::Other("not a quantity"),
            None => Value::Missing,
        }
    }
}

impl<'a> From<Option<&'a ObservationComponentValue>> for Value<'a> {
    fn from(v: Option<&'a ObservationComponentValue>) -> Self {
        match v {
            Some(ObservationComponentValue::Quantity(q)) => Value::Quantity(q),
            Some(ObservationComponentValue::Integer(i)) => Value::Integer(*i),
            Some(ObservationComponentValue::CodeableConcept(c)) => Value::Concept(c),
            Some(ObservationComponentValue::String(_)) => Value::Other("a string"),
            Some(_) => Value::Other("not a quantity"),
            None => Value::Missing,
        }
    }
}

/// First coding of `code` that identifies one of our analytes.
fn analyte_of(code: &CodeableConcept) -> Option<(Analyte, String)> {
    code.coding.iter().flatten().find_map(|c| {
        let system = c.system.as_deref()?;
        let code = c.code.as_deref()?;
        Analyte::from_coding(system, code).map(|a| (a, format!("{system}|{}", code.trim())))
    })
}

fn staging_of(code: &CodeableConcept) -> Option<StagingCode> {
    code.coding
        .iter()
        .flatten()
        .find_map(|c| StagingCode::from_coding(c.system.as_deref()?, c.code.as_deref()?))
}

fn effective_date(obs: &Observation) -> Result<NaiveDate, String> {
    match &obs.effective {
        Some(ObservationEffective::DateTime(dt)) => dates::exact_day(dt),
        Some(ObservationEffective::Period(p)) => match &p.start {
            Some(start) => dates::exact_day(start),
            None => Err("effectivePeriod has no start".to_owned()),
        },
        Some(ObservationEffective::Instant(i)) => {
            dates::instant_date(i).ok_or_else(|| "effectiveInstant is out of range".to_owned())
        }
        Some(ObservationEffective::Timing(_)) | None => match &obs.issued {
            Some(i) => dates::instant_date(i).ok_or_else(|| "issued is out of range".to_owned()),
            None => Err("no effective date and no issued date".to_owned()),
        },
    }
}

pub(crate) fn extract(
    observations: &[Observation],
    index_date: NaiveDate,
    skipped: &mut Vec<SkippedValue>,
) -> ObservationExtraction {
    let mut out = ObservationExtraction::default();
    for (position, obs) in observations.iter().enumerate() {
        let source = SourceRef::new("Observation", obs.id.as_deref(), position);

        if let Some(kind) = staging_of(&obs.code) {
            match diagnoses::staging_observation(obs, kind, source.clone(), index_date) {
                Ok(s) => out.staging.push(s),
                Err(reason) => skipped.push(SkippedValue::new(source, None, reason)),
            }
            continue;
        }

        let main = analyte_of(&obs.code);
        let components: Vec<_> = obs
            .component
            .iter()
            .flatten()
            .filter_map(|c| analyte_of(&c.code).map(|a| (a, Value::from(c.value.as_ref()))))
            .collect();
        if main.is_none() && components.is_empty() {
            out.ignored += 1;
            continue;
        }
        let wanted = main
            .iter()
            .map(|(_, code)| code.clone())
            .chain(components.iter().map(|((_, code), _)| code.clone()));

        if matches!(
            obs.status,
            ObservationStatus::EnteredInError | ObservationStatus::Cancelled
        ) {
            for code in wanted {
                skipped.push(SkippedValue::new(
                    source.clone(),
                    Some(code),
                    format!("observation status is {}", obs.status),
                ));
            }
            continue;
        }
        let date = match effective_date(obs) {
            Ok(d) if d > index_date => {
                Err(format!("observed {d}, after the index date {index_date}"))
            }
            other => other,
        };
        let date = match date {
            Ok(d) => d,
            Err(reason) => {
                for code in wanted {
                    skipped.push(SkippedValue::new(
                        source.clone(),
                        Some(code),
                        reason.clone(),
                    ));
                }
                continue;
            }
        };

        let values = main
            .map(|a| (a, Value::from(obs.value.as_ref())))
            .into_iter()
            .chain(components);
        for ((analyte, code), value) in values {
            match read_value(analyte, &value) {
                Ok((value, recorded)) => {
                    out.series.entry(analyte).or_default().push(Measurement {
                        value,
                        unit: analyte.unit(),
                        date,
                        source: source.clone(),
                        code,
                        recorded,
                    });
                }
                Err(reason) => skipped.push(SkippedValue::new(source.clone(), Some(code), reason)),
            }
        }
    }
    for series in out.series.values_mut() {
        // Chronological; same-day values ordered by source for determinism.
        series.sort_by(|a, b| (a.date, &a.source).cmp(&(b.date, &b.source)));
    }
    out
}

type Read = (f64, Option<super::provenance::RecordedQuantity>);

fn read_value(analyte: Analyte, value: &Value<'_>) -> Result<Read, String> {
    let label = analyte.label();
    let (v, recorded) = match value {
        Value::Quantity(q) => {
            if let Some(c) = &q.comparator {
                return Err(format!("{label} is censored (comparator {c})"));
            }
            let v = q
                .value
                .ok_or_else(|| format!("{label} quantity has no value"))?;
            // The UCUM code counts only when the quantity says it is UCUM (or
            // names no system at all).
            let code = q
                .code
                .as_deref()
                .filter(|_| q.system.as_deref().is_none_or(|s| s == UCUM));
            let n = units::normalise(analyte, v, code, q.unit.as_deref())?;
            (n.value, n.recorded)
        }
        Value::Integer(i) if analyte.is_score() => (f64::from(*i), None),
        Value::Integer(_) => return Err(format!("{label} is an integer without a unit")),
        Value::Concept(cc) if analyte == Analyte::Ecog => (ecog_from_concept(cc)?, None),
        Value::Concept(cc) if analyte == Analyte::Karnofsky => (
            numeric_code(cc).ok_or("Karnofsky answer is not a number")?,
            None,
        ),
        Value::Concept(_) => return Err(format!("{label} value is a code, not a quantity")),
        Value::Other(what) => return Err(format!("{label} value is {what}")),
        Value::Missing => return Err(format!("{label} has no value")),
    };
    units::check_plausible(analyte, v)?;
    Ok((v, recorded))
}

/// ECOG grade from LOINC answer list LL529-9 (LA9622-7 = 0 … LA9627-6 = 5)
/// or a plain numeric code.
fn ecog_from_concept(cc: &CodeableConcept) -> Result<f64, String> {
    for c in cc.coding.iter().flatten() {
        let grade = match c.code.as_deref().map(str::trim) {
            Some("LA9622-7") => 0.0,
            Some("LA9623-5") => 1.0,
            Some("LA9624-3") => 2.0,
            Some("LA9625-0") => 3.0,
            Some("LA9626-8") => 4.0,
            Some("LA9627-6") => 5.0,
            _ => continue,
        };
        return Ok(grade);
    }
    numeric_code(cc).ok_or_else(|| "ECOG answer code is not recognised".to_owned())
}

fn numeric_code(cc: &CodeableConcept) -> Option<f64> {
    cc.coding
        .iter()
        .flatten()
        .filter_map(|c| c.code.as_deref())
        .find_map(|c| c.trim().parse::<u32>().ok())
        .map(f64::from)
}
