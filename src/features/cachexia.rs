//! The cachexia feature schema, extracted from a [`Timeline`].

use serde_json::{Value, json};

use crate::clinical::{Analyte, DerivedValue, Measurement, Timeline};
use crate::services::FeatureValue;

/// Bump when a feature is added, removed or changes meaning.
pub const SCHEMA_VERSION: &str = "cachexia-features/1";

/// The modalities of seed paper §1 (arXiv 2503.06797): demographics and
/// disease status, labs, weight history, CT body composition, clinical notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modality {
    Clinical,
    Labs,
    Weight,
    BodyComposition,
    Notes,
}

impl Modality {
    pub const ALL: [Modality; 5] = [
        Modality::Clinical,
        Modality::Labs,
        Modality::Weight,
        Modality::BodyComposition,
        Modality::Notes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Modality::Clinical => "demographics and disease status",
            Modality::Labs => "laboratory results",
            Modality::Weight => "weight history",
            Modality::BodyComposition => "CT body composition",
            Modality::Notes => "clinical notes",
        }
    }
}

fn measured(name: &str, m: Option<&Measurement>) -> FeatureValue {
    match m {
        Some(m) => FeatureValue {
            name: name.into(),
            value: Some(json!(m.value)),
            unit: Some(m.unit.into()),
            source: Some(m.source.to_string()),
            date: Some(m.date.to_string()),
            present: true,
        },
        None => absent(name, None),
    }
}

fn derived(name: &str, d: Option<&DerivedValue>) -> FeatureValue {
    match d {
        Some(d) => FeatureValue {
            name: name.into(),
            value: Some(json!(d.value)),
            unit: Some(d.unit.into()),
            source: Some(
                d.sources()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            date: Some(d.date.to_string()),
            present: true,
        },
        None => absent(name, None),
    }
}

fn absent(name: &str, unit: Option<&str>) -> FeatureValue {
    FeatureValue {
        name: name.into(),
        value: None,
        unit: unit.map(str::to_owned),
        source: None,
        date: None,
        present: false,
    }
}

fn plain(
    name: &str,
    value: Option<Value>,
    unit: Option<&str>,
    source: Option<String>,
) -> FeatureValue {
    FeatureValue {
        name: name.into(),
        present: value.is_some(),
        value,
        unit: unit.map(str::to_owned),
        source,
        date: None,
    }
}

/// The named inputs, in schema order.
pub fn extract(t: &Timeline) -> Vec<FeatureValue> {
    let d = &t.demographics;
    let patient_src = d.source.as_ref().map(|s| s.to_string());
    let cancer = t.primary_cancer();
    let mut f = vec![
        plain(
            "age",
            d.age.as_ref().map(|a| json!(a.years)),
            Some("a"),
            patient_src.clone(),
        ),
        plain(
            "sex",
            d.sex_for_cutoffs().map(|s| json!(s)),
            None,
            patient_src.clone(),
        ),
        plain(
            "race",
            d.race
                .as_ref()
                .filter(|r| !r.omb.is_empty())
                .map(|r| json!(r.omb.iter().map(|c| c.display.clone()).collect::<Vec<_>>())),
            None,
            patient_src.clone(),
        ),
        plain(
            "ethnicity",
            d.ethnicity
                .as_ref()
                .filter(|r| !r.omb.is_empty())
                .map(|r| json!(r.omb.iter().map(|c| c.display.clone()).collect::<Vec<_>>())),
            None,
            patient_src,
        ),
        plain(
            "cancer_type",
            cancer.map(|c| json!(c.cancer_type)),
            None,
            cancer.map(|c| c.source.to_string()),
        ),
        plain(
            "cancer_stage",
            cancer
                .and_then(|c| c.stage.as_ref())
                .and_then(|s| s.group.map(|g| json!(g))),
            None,
            cancer
                .and_then(|c| c.stage.as_ref())
                .map(|s| s.source.to_string()),
        ),
        plain(
            "months_since_diagnosis",
            cancer.and_then(|c| c.onset).map(|o| {
                json!(((t.index_date - o).num_days() as f64 / 30.44 * 10.0).round() / 10.0)
            }),
            Some("mo"),
            cancer.map(|c| c.source.to_string()),
        ),
        measured("weight", t.weight.current.as_ref()),
        measured("height", t.recent(Analyte::BodyHeight)),
        derived("bmi", t.bmi.as_ref()),
    ];
    for (name, change) in [
        ("weight_change_1m", &t.weight.one_month),
        ("weight_change_3m", &t.weight.three_months),
        ("weight_change_6m", &t.weight.six_months),
        ("weight_change_12m", &t.weight.twelve_months),
    ] {
        f.push(match change {
            Some(c) => FeatureValue {
                name: name.into(),
                value: Some(json!((c.percent_change * 100.0).round() / 100.0)),
                unit: Some("%".into()),
                source: Some(format!("{}, {}", c.reference.source, c.current.source)),
                date: Some(c.current.date.to_string()),
                present: true,
            },
            None => absent(name, Some("%")),
        });
    }
    for (name, a) in [
        ("albumin", Analyte::Albumin),
        ("crp", Analyte::Crp),
        ("neutrophils", Analyte::Neutrophils),
        ("lymphocytes", Analyte::Lymphocytes),
        ("hemoglobin", Analyte::Hemoglobin),
        ("total_protein", Analyte::TotalProtein),
        ("prealbumin", Analyte::Prealbumin),
        ("creatinine", Analyte::Creatinine),
        ("urea_nitrogen", Analyte::UreaNitrogen),
        ("ecog", Analyte::Ecog),
        ("karnofsky", Analyte::Karnofsky),
    ] {
        f.push(measured(name, t.recent(a)));
    }
    f.push(derived("nlr", t.nlr.as_ref()));
    f.push(derived("l3_smi", t.smi.as_ref()));
    for (name, a) in [
        ("l3_sma", Analyte::L3Sma),
        ("l3_muscle_hu", Analyte::L3MuscleHu),
        ("l3_vat", Analyte::L3Vat),
        ("l3_sat", Analyte::L3Sat),
    ] {
        f.push(measured(name, t.recent(a)));
    }
    f.push(plain(
        "notes",
        (!t.notes.is_empty()).then(|| json!(t.notes.len())),
        Some("{documents}"),
        (!t.notes.is_empty()).then(|| {
            t.notes
                .iter()
                .map(|n| n.source.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }),
    ));
    f
}

/// Which modalities have at least one present feature.
pub fn modality_of(feature: &str) -> Modality {
    match feature {
        "age"
        | "sex"
        | "race"
        | "ethnicity"
        | "cancer_type"
        | "cancer_stage"
        | "months_since_diagnosis"
        | "height"
        | "ecog"
        | "karnofsky" => Modality::Clinical,
        "weight" | "bmi" | "weight_change_1m" | "weight_change_3m" | "weight_change_6m"
        | "weight_change_12m" => Modality::Weight,
        "l3_smi" | "l3_sma" | "l3_muscle_hu" | "l3_vat" | "l3_sat" => Modality::BodyComposition,
        "notes" => Modality::Notes,
        _ => Modality::Labs,
    }
}

pub fn modalities_present(features: &[FeatureValue]) -> Vec<Modality> {
    Modality::ALL
        .into_iter()
        .filter(|m| {
            features
                .iter()
                .any(|f| f.present && modality_of(&f.name) == *m)
        })
        .collect()
}
