//! Unit normalisation: every value is converted to its analyte's canonical
//! UCUM unit ([`Analyte::unit`]) or skipped with a reason. A unit we do not
//! recognise is never guessed.
//!
//! Matching is on a canonical spelling: whitespace and UCUM annotations
//! (`{cells}`, `{score}`) removed, `µ`/`μ` read as `u`, superscripts and the
//! `10^3`/`10E3`/`x10E3` spellings folded to UCUM's `10*3`, and case ignored —
//! the one case-sensitive exception is `G/L` (giga per litre, a cell count in
//! French and Swiss labs), which must not be confused with `g/L` (grams).
//!
//! Conversion factors:
//! - weight: `g` ÷ 1000; `lb`, `[lb_av]` × 0.45359237 (international avoirdupois pound).
//! - height: `m` × 100; `mm` ÷ 10; `in`, `[in_i]` × 2.54.
//! - albumin, total protein, hemoglobin: `g/L` ÷ 10; hemoglobin `mmol/L` × 1.6114
//!   (Hb monomer, 16 114.5 g/mol).
//! - CRP: `mg/dL` × 10; `ug/mL` = `mg/L`.
//! - cell counts: `10*3/uL` = `K/uL` = `10*9/L` = `/nL` = `G/L`; `/uL` and `cells/uL` ÷ 1000.
//! - prealbumin: `mg/L` ÷ 10; `g/L` × 100.
//! - creatinine: `umol/L` ÷ 88.42 (113.12 g/mol); `mmol/L` × 1000 / 88.42; `mg/L` ÷ 10.
//! - urea nitrogen: `mmol/L` × 2.801 (28.014 g/mol of N₂ per mol of urea).
//! - body composition: areas `mm2` ÷ 100.

use super::codes::Analyte;
use super::provenance::RecordedQuantity;

/// A value converted to the canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Normalised {
    pub value: f64,
    /// Set when a conversion changed the number.
    pub recorded: Option<RecordedQuantity>,
}

/// Convert `value`, recorded with UCUM `code` and/or free-text `unit`, to the
/// canonical unit of `analyte`. The UCUM code is tried first, then the text.
pub(crate) fn normalise(
    analyte: Analyte,
    value: f64,
    code: Option<&str>,
    unit: Option<&str>,
) -> Result<Normalised, String> {
    if !value.is_finite() {
        return Err(format!("{} value is not a finite number", analyte.label()));
    }
    let candidates: Vec<&str> = [code, unit]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if candidates.is_empty() {
        if analyte.is_score() {
            return Ok(Normalised {
                value,
                recorded: None,
            });
        }
        return Err(format!("{} has no unit", analyte.label()));
    }
    for raw in &candidates {
        if let Some(factor) = factor(analyte, raw) {
            let converted = value * factor;
            #[allow(clippy::float_cmp, reason = "exactly 1.0 marks 'no conversion'")]
            let recorded = (factor != 1.0).then(|| RecordedQuantity {
                value,
                unit: (*raw).to_owned(),
            });
            return Ok(Normalised {
                value: converted,
                recorded,
            });
        }
    }
    let shown = candidates.join("' / '");
    if analyte_is_count(analyte) && candidates.iter().any(|u| canonical(u) == "%") {
        return Err(format!(
            "{} given as a percentage '{shown}', not an absolute count",
            analyte.label()
        ));
    }
    Err(format!(
        "unit '{shown}' is not a recognised unit for {} (expected {})",
        analyte.label(),
        analyte.unit()
    ))
}

/// Reject values that cannot be physical (they are data errors, not findings).
pub(crate) fn check_plausible(analyte: Analyte, value: f64) -> Result<(), String> {
    let label = analyte.label();
    if !value.is_finite() {
        return Err(format!("{label} value is not a finite number"));
    }
    match analyte {
        // Attenuation in HU is legitimately negative (fatty muscle).
        Analyte::L3MuscleHu => Ok(()),
        Analyte::Ecog if !(0.0..=5.0).contains(&value) || value.fract() != 0.0 => {
            Err(format!("ECOG {value} is not a grade 0-5"))
        }
        Analyte::Karnofsky if !(0.0..=100.0).contains(&value) => {
            Err(format!("Karnofsky {value} is outside 0-100"))
        }
        // Counts, CRP and scores may be exactly zero; masses and sizes may not.
        Analyte::Neutrophils
        | Analyte::Lymphocytes
        | Analyte::Crp
        | Analyte::Ecog
        | Analyte::Karnofsky
        | Analyte::L3Vat
        | Analyte::L3Sat
            if value < 0.0 =>
        {
            Err(format!("{label} value {value} is negative"))
        }
        Analyte::Neutrophils
        | Analyte::Lymphocytes
        | Analyte::Crp
        | Analyte::Ecog
        | Analyte::Karnofsky
        | Analyte::L3Vat
        | Analyte::L3Sat => Ok(()),
        _ if value <= 0.0 => Err(format!("{label} value {value} is not positive")),
        _ => Ok(()),
    }
}

const fn analyte_is_count(analyte: Analyte) -> bool {
    matches!(analyte, Analyte::Neutrophils | Analyte::Lymphocytes)
}

/// Multiplicative factor from `raw` to the canonical unit, if `raw` is known.
fn factor(analyte: Analyte, raw: &str) -> Option<f64> {
    // Case matters for this one: G/L is giga/L (counts), g/L is grams/L.
    if analyte_is_count(analyte) && raw.trim() == "G/L" {
        return Some(1.0);
    }
    let u = canonical(raw);
    const LB: f64 = 0.453_592_37;
    const CREATININE_UMOL_PER_MG_DL: f64 = 88.42;
    let f = match (analyte, u.as_str()) {
        (Analyte::BodyWeight, "kg" | "kgs" | "kilogram" | "kilograms") => 1.0,
        (Analyte::BodyWeight, "g") => 0.001,
        (Analyte::BodyWeight, "lb" | "lbs" | "[lb_av]" | "pound" | "pounds") => LB,

        (Analyte::BodyHeight, "cm") => 1.0,
        (Analyte::BodyHeight, "m") => 100.0,
        (Analyte::BodyHeight, "mm") => 0.1,
        (Analyte::BodyHeight, "in" | "[in_i]" | "inch" | "inches") => 2.54,

        (Analyte::Bmi, "kg/m2") => 1.0,

        (Analyte::Albumin | Analyte::TotalProtein | Analyte::Hemoglobin, "g/dl") => 1.0,
        (Analyte::Albumin | Analyte::TotalProtein | Analyte::Hemoglobin, "g/l") => 0.1,
        (Analyte::Hemoglobin, "mmol/l") => 1.6114,

        (Analyte::Crp, "mg/l" | "ug/ml") => 1.0,
        (Analyte::Crp, "mg/dl") => 10.0,

        (
            Analyte::Neutrophils | Analyte::Lymphocytes,
            "10*9/l" | "10*3/ul" | "10*3/mm3" | "k/ul" | "k/mm3" | "thou/ul" | "/nl" | "1/nl",
        ) => 1.0,
        (
            Analyte::Neutrophils | Analyte::Lymphocytes,
            "/ul" | "1/ul" | "cells/ul" | "/mm3" | "cells/mm3",
        ) => 0.001,

        (Analyte::Prealbumin, "mg/dl") => 1.0,
        (Analyte::Prealbumin, "mg/l") => 0.1,
        (Analyte::Prealbumin, "g/l") => 100.0,

        (Analyte::Creatinine, "mg/dl") => 1.0,
        (Analyte::Creatinine, "umol/l") => 1.0 / CREATININE_UMOL_PER_MG_DL,
        (Analyte::Creatinine, "mmol/l") => 1000.0 / CREATININE_UMOL_PER_MG_DL,
        (Analyte::Creatinine, "mg/l") => 0.1,

        (Analyte::UreaNitrogen, "mg/dl") => 1.0,
        (Analyte::UreaNitrogen, "mmol/l") => 2.801,

        // `{score}` canonicalises to the empty string.
        (Analyte::Ecog, "" | "1" | "score") => 1.0,
        (Analyte::Karnofsky, "" | "1" | "%" | "score") => 1.0,

        (Analyte::L3Smi, "cm2/m2") => 1.0,
        (Analyte::L3Sma | Analyte::L3Vat | Analyte::L3Sat, "cm2") => 1.0,
        (Analyte::L3Sma | Analyte::L3Vat | Analyte::L3Sat, "mm2") => 0.01,
        (Analyte::L3MuscleHu, "[hnsf'u]" | "hu") => 1.0,
        _ => return None,
    };
    Some(f)
}

/// Canonical spelling of a unit string (see the module docs).
fn canonical(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut in_annotation = false;
    for c in raw.trim().chars() {
        match c {
            '{' => in_annotation = true,
            '}' => in_annotation = false,
            _ if in_annotation => {}
            c if c.is_whitespace() => {}
            'µ' | 'μ' => s.push('u'),
            '×' => s.push('x'),
            '²' => s.push_str("^2"),
            '³' => s.push_str("^3"),
            '⁹' => s.push_str("^9"),
            c => s.extend(c.to_lowercase()),
        }
    }
    // `x10E3/uL`, `x10^3/uL` -> `10*3/ul`.
    if let Some(rest) = s.strip_prefix('x').filter(|r| r.starts_with("10")) {
        s = rest.to_owned();
    }
    let s = s.replace("10^", "10*").replace("10e", "10*");
    s.replace('^', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(analyte: Analyte, value: f64, unit: &str) -> Result<f64, String> {
        normalise(analyte, value, None, Some(unit)).map(|n| n.value)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn albumin_g_per_l_is_divided_by_ten_and_recorded() {
        let n = normalise(Analyte::Albumin, 31.0, Some("g/L"), Some("g/L")).unwrap();
        assert!(close(n.value, 3.1));
        let rec = n.recorded.unwrap();
        assert!(close(rec.value, 31.0));
        assert_eq!(rec.unit, "g/L");
        let n = normalise(Analyte::Albumin, 3.1, Some("g/dL"), None).unwrap();
        assert!(close(n.value, 3.1));
        assert_eq!(n.recorded, None);
    }

    #[test]
    fn pounds_and_grams_become_kilograms() {
        assert!(close(
            conv(Analyte::BodyWeight, 150.0, "[lb_av]").unwrap(),
            68.038_855_5
        ));
        assert!(close(
            conv(Analyte::BodyWeight, 150.0, "lbs").unwrap(),
            68.038_855_5
        ));
        assert!(close(
            conv(Analyte::BodyWeight, 70_500.0, "g").unwrap(),
            70.5
        ));
    }

    #[test]
    fn inches_and_metres_become_centimetres() {
        assert!(close(
            conv(Analyte::BodyHeight, 70.0, "[in_i]").unwrap(),
            177.8
        ));
        assert!(close(conv(Analyte::BodyHeight, 70.0, "in").unwrap(), 177.8));
        assert!(close(conv(Analyte::BodyHeight, 1.75, "m").unwrap(), 175.0));
    }

    #[test]
    fn cell_count_spellings_share_one_magnitude() {
        for unit in [
            "10*9/L",
            "10*3/uL",
            "10^3/uL",
            "K/uL",
            "x10E3/uL",
            "10³/µL",
            "10*3/mm3",
            "G/L",
            "/nL",
            "10*3{cells}/uL",
        ] {
            assert!(
                close(conv(Analyte::Neutrophils, 4.2, unit).unwrap(), 4.2),
                "{unit}"
            );
        }
        for unit in ["/uL", "cells/uL", "{cells}/uL", "/mm3", "cells/µL"] {
            assert!(
                close(conv(Analyte::Lymphocytes, 1500.0, unit).unwrap(), 1.5),
                "{unit}"
            );
        }
    }

    #[test]
    fn lower_case_g_per_l_is_not_a_cell_count() {
        assert!(conv(Analyte::Neutrophils, 4.2, "g/l").is_err());
        let err = conv(Analyte::Neutrophils, 60.0, "%").unwrap_err();
        assert!(err.contains("percentage"), "{err}");
    }

    #[test]
    fn lab_conversions() {
        assert!(close(conv(Analyte::Crp, 1.2, "mg/dL").unwrap(), 12.0));
        assert!(close(
            conv(Analyte::Creatinine, 88.42, "umol/L").unwrap(),
            1.0
        ));
        assert!(close(
            conv(Analyte::Creatinine, 88.42, "µmol/L").unwrap(),
            1.0
        ));
        assert!(close(
            conv(Analyte::UreaNitrogen, 5.0, "mmol/L").unwrap(),
            14.005
        ));
        assert!(close(
            conv(Analyte::Hemoglobin, 125.0, "g/L").unwrap(),
            12.5
        ));
        assert!(close(conv(Analyte::Prealbumin, 0.2, "g/L").unwrap(), 20.0));
        assert!(close(conv(Analyte::L3Sma, 14_000.0, "mm2").unwrap(), 140.0));
        assert!(close(conv(Analyte::L3Smi, 45.0, "cm²/m²").unwrap(), 45.0));
        assert!(close(
            conv(Analyte::L3MuscleHu, -3.0, "[hnsf'U]").unwrap(),
            -3.0
        ));
    }

    #[test]
    fn unknown_or_missing_units_are_refused_not_guessed() {
        let err = conv(Analyte::Albumin, 3.1, "mmol/L").unwrap_err();
        assert!(err.contains("mmol/L") && err.contains("albumin"), "{err}");
        assert!(normalise(Analyte::BodyWeight, 70.0, None, None).is_err());
        assert!(normalise(Analyte::BodyWeight, 70.0, None, Some("  ")).is_err());
        assert!(normalise(Analyte::BodyWeight, f64::NAN, None, Some("kg")).is_err());
        // Scores need no unit.
        assert!(close(
            normalise(Analyte::Ecog, 1.0, None, None).unwrap().value,
            1.0
        ));
        assert!(close(conv(Analyte::Ecog, 2.0, "{score}").unwrap(), 2.0));
    }

    #[test]
    fn ucum_code_wins_over_display_text() {
        // The display text is a local spelling; the UCUM code is authoritative.
        let n = normalise(Analyte::BodyWeight, 150.0, Some("[lb_av]"), Some("pounds")).unwrap();
        assert!(close(n.value, 68.038_855_5));
        assert_eq!(n.recorded.unwrap().unit, "[lb_av]");
        // An unknown code falls back to a known text.
        let n = normalise(Analyte::BodyWeight, 70.0, Some("kilo"), Some("kg")).unwrap();
        assert!(close(n.value, 70.0));
    }

    #[test]
    fn implausible_values_are_rejected() {
        assert!(check_plausible(Analyte::BodyWeight, 0.0).is_err());
        assert!(check_plausible(Analyte::Lymphocytes, 0.0).is_ok());
        assert!(check_plausible(Analyte::Crp, -1.0).is_err());
        assert!(check_plausible(Analyte::L3MuscleHu, -12.0).is_ok());
        assert!(check_plausible(Analyte::Ecog, 6.0).is_err());
        assert!(check_plausible(Analyte::Ecog, 1.5).is_err());
        assert!(check_plausible(Analyte::Karnofsky, 70.0).is_ok());
    }
}
