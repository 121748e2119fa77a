//! Worked examples (probabilities computed independently in Python 3 from the
//! published formulas, see `docs/clinical-baselines.md`) and every threshold
//! edge of Lung-RADS.

use super::lung_rads::{Size, exam_category};
use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn brock_input() -> BrockInput {
    BrockInput {
        age_years: 62.0,
        female: false,
        family_history: false,
        emphysema: false,
        size_mm: 4.0,
        nodule_type: NoduleType::Solid,
        upper_lobe: false,
        nodule_count: 4,
        spiculation: false,
    }
}

#[test]
fn brock_reference_patient_is_the_intercept() {
    // Age 62, 4 mm, 4 nodules: every centred term is zero.
    let r = brock(&brock_input()).unwrap();
    assert!(close(r.logit, -6.789_200_000_453_395, 1e-9), "{}", r.logit);
    assert!(close(r.probability, 0.001_124_602_953_045_273_5, 1e-12));
}

#[test]
fn brock_worked_examples() {
    // 65 y woman, family history, emphysema, 12 mm part-solid, upper lobe,
    // 2 nodules, spiculated.
    let b = BrockInput {
        age_years: 65.0,
        female: true,
        family_history: true,
        emphysema: true,
        size_mm: 12.0,
        nodule_type: NoduleType::PartSolid,
        upper_lobe: true,
        nodule_count: 2,
        spiculation: true,
    };
    let r = brock(&b).unwrap();
    assert!(
        close(r.logit, 0.061_089_953_101_463_48, 1e-9),
        "{}",
        r.logit
    );
    assert!(close(r.probability, 0.515_267_740_325_868_6, 1e-9));

    // 70 y man, 25 mm non-solid, 1 nodule.
    let c = BrockInput {
        age_years: 70.0,
        size_mm: 25.0,
        nodule_type: NoduleType::NonSolid,
        nodule_count: 1,
        ..brock_input()
    };
    let r = brock(&c).unwrap();
    assert!(close(r.logit, -1.330_960_967_132_158_5, 1e-9));
    assert!(close(r.probability, 0.209_000_454_407_852_3, 1e-9));

    // 55 y woman, emphysema, 7 mm solid, upper lobe, 3 nodules.
    let d = BrockInput {
        age_years: 55.0,
        female: true,
        emphysema: true,
        size_mm: 7.0,
        upper_lobe: true,
        nodule_count: 3,
        ..brock_input()
    };
    let r = brock(&d).unwrap();
    assert!(close(r.probability, 0.036_441_706_096_603_71, 1e-9));
    // The terms add up to the logit.
    let sum: f64 = r.terms.iter().map(|(_, c)| c).sum();
    assert!(close(sum, r.logit, 1e-12));
}

#[test]
fn brock_risk_rises_with_size_and_flattens() {
    let p = |s: f64| {
        brock(&BrockInput {
            size_mm: s,
            ..brock_input()
        })
        .unwrap()
        .probability
    };
    assert!(p(3.0) < p(6.0) && p(6.0) < p(10.0) && p(10.0) < p(30.0));
    // The inverse-square-root transform: 4→8 mm adds more logit than 20→24 mm.
    let l = |s: f64| {
        brock(&BrockInput {
            size_mm: s,
            ..brock_input()
        })
        .unwrap()
        .logit
    };
    assert!(l(8.0) - l(4.0) > 5.0 * (l(24.0) - l(20.0)));
}

#[test]
fn brock_type_terms_relative_to_solid() {
    let l = |t| {
        brock(&BrockInput {
            nodule_type: t,
            ..brock_input()
        })
        .unwrap()
        .logit
    };
    assert!(close(
        l(NoduleType::PartSolid) - l(NoduleType::Solid),
        0.377,
        1e-12
    ));
    assert!(close(
        l(NoduleType::NonSolid) - l(NoduleType::Solid),
        -0.1276,
        1e-12
    ));
}

#[test]
fn brock_refuses_inputs_outside_its_domain() {
    for bad in [
        BrockInput {
            size_mm: 0.0,
            ..brock_input()
        },
        BrockInput {
            size_mm: f64::NAN,
            ..brock_input()
        },
        BrockInput {
            age_years: -1.0,
            ..brock_input()
        },
        BrockInput {
            nodule_count: 0,
            ..brock_input()
        },
    ] {
        assert!(brock(&bad).is_err(), "{bad:?}");
    }
}

fn mayo_input() -> MayoInput {
    MayoInput {
        age_years: 60.0,
        ever_smoker: true,
        extrathoracic_cancer_over_5y: false,
        diameter_mm: 12.0,
        spiculation: true,
        upper_lobe: true,
    }
}

#[test]
fn mayo_worked_examples() {
    let r = mayo(&mayo_input()).unwrap();
    assert!(close(r.logit, -0.336_2, 1e-9), "{}", r.logit);
    assert!(close(r.probability, 0.416_732_836_790_630_33, 1e-9));

    let r = mayo(&MayoInput {
        age_years: 45.0,
        ever_smoker: false,
        extrathoracic_cancer_over_5y: true,
        diameter_mm: 8.0,
        spiculation: false,
        upper_lobe: false,
    })
    .unwrap();
    assert!(close(r.probability, 0.062_403_401_841_040_05, 1e-9));

    let r = mayo(&MayoInput {
        age_years: 72.0,
        extrathoracic_cancer_over_5y: true,
        diameter_mm: 25.0,
        ..mayo_input()
    })
    .unwrap();
    assert!(close(r.logit, 3.128, 1e-9));
    assert!(close(r.probability, 0.958_033_055_122_910_7, 1e-9));
}

#[test]
fn mayo_derivation_range_and_domain() {
    assert!(!mayo::within_derivation_range(3.9));
    assert!(mayo::within_derivation_range(4.0));
    assert!(mayo::within_derivation_range(30.0));
    assert!(!mayo::within_derivation_range(30.1));
    assert!(
        mayo(&MayoInput {
            diameter_mm: -2.0,
            ..mayo_input()
        })
        .is_err()
    );
}

fn cat(t: NoduleType, size: Size) -> LungRadsCategory {
    lung_rads(&LungRadsInput::new(t, size)).unwrap().category
}

fn part_solid(total: Size, solid: Size) -> LungRadsCategory {
    lung_rads(&LungRadsInput {
        solid_component: Some(solid),
        ..LungRadsInput::new(NoduleType::PartSolid, total)
    })
    .unwrap()
    .category
}

use LungRadsCategory::*;
use Size::{MeanDiameterMm as D, VolumeMm3 as V};

#[test]
fn lung_rads_solid_diameter_edges() {
    let s = |d| cat(NoduleType::Solid, D(d));
    assert_eq!(s(0.0), C2);
    assert_eq!(s(5.9), C2);
    assert_eq!(s(5.94), C2); // rounds to 5.9
    assert_eq!(s(5.95), C3); // rounds to 6.0: not "< 6 mm"
    assert_eq!(s(6.0), C3);
    assert_eq!(s(7.9), C3);
    assert_eq!(s(8.0), C4A);
    assert_eq!(s(14.9), C4A);
    assert_eq!(s(15.0), C4B);
    assert_eq!(s(42.0), C4B);
}

#[test]
fn lung_rads_mean_diameter_is_mean_of_axes() {
    // 7 × 5 mm → 6.0 mm mean: category 3, although the short axis is < 6.
    assert_eq!(cat(NoduleType::Solid, Size::from_axes(7.0, 5.0)), C3);
    assert_eq!(cat(NoduleType::Solid, Size::from_axes(6.5, 5.3)), C2);
}

#[test]
fn lung_rads_solid_volume_edges() {
    let s = |v| cat(NoduleType::Solid, V(v));
    assert_eq!(s(112.9), C2);
    assert_eq!(s(113.0), C3);
    assert_eq!(s(267.9), C3);
    assert_eq!(s(268.0), C4A);
    assert_eq!(s(1766.9), C4A);
    assert_eq!(s(1767.0), C4B);
}

#[test]
fn lung_rads_part_solid_edges() {
    // Total < 6 mm: 2, whatever the solid component.
    assert_eq!(part_solid(D(5.9), D(5.0)), C2);
    // Total ≥ 6, solid < 6: 3.
    assert_eq!(part_solid(D(6.0), D(1.0)), C3);
    assert_eq!(part_solid(D(20.0), D(5.9)), C3);
    // Solid 6 to < 8: 4A.
    assert_eq!(part_solid(D(20.0), D(6.0)), C4A);
    assert_eq!(part_solid(D(20.0), D(7.9)), C4A);
    // Solid ≥ 8: 4B.
    assert_eq!(part_solid(D(20.0), D(8.0)), C4B);
    // Volumes.
    assert_eq!(part_solid(V(112.0), V(50.0)), C2);
    assert_eq!(part_solid(V(113.0), V(112.9)), C3);
    assert_eq!(part_solid(V(2000.0), V(113.0)), C4A);
    assert_eq!(part_solid(V(2000.0), V(267.9)), C4A);
    assert_eq!(part_solid(V(2000.0), V(268.0)), C4B);
}

#[test]
fn lung_rads_part_solid_needs_a_consistent_solid_component() {
    let no_solid = LungRadsInput::new(NoduleType::PartSolid, D(10.0));
    assert_eq!(
        lung_rads(&no_solid),
        Err(NoduleInputError::MissingSolidComponent)
    );
    let too_big = LungRadsInput {
        solid_component: Some(D(11.0)),
        ..no_solid
    };
    assert!(matches!(
        lung_rads(&too_big),
        Err(NoduleInputError::SolidComponentLargerThanNodule { .. })
    ));
}

#[test]
fn lung_rads_non_solid_edges() {
    let g = |s| cat(NoduleType::NonSolid, s);
    assert_eq!(g(D(29.9)), C2);
    assert_eq!(g(D(30.0)), C3);
    assert_eq!(g(V(14136.0)), C2);
    assert_eq!(g(V(14137.0)), C3);
}

#[test]
fn lung_rads_juxtapleural_rule() {
    let jp = |size, morphology| {
        lung_rads(&LungRadsInput {
            juxtapleural: true,
            juxtapleural_benign_morphology: morphology,
            ..LungRadsInput::new(NoduleType::Solid, size)
        })
        .unwrap()
        .category
    };
    assert_eq!(jp(D(9.9), true), C2);
    assert_eq!(jp(D(10.0), true), C4A); // back to the solid table
    assert_eq!(jp(V(523.0), true), C2);
    assert_eq!(jp(V(524.0), true), C4A);
    // Without smooth margins / benign shape the solid rows apply.
    assert_eq!(jp(D(9.9), false), C4A);
    // The rule is for solid nodules only.
    let ggn = LungRadsInput {
        juxtapleural: true,
        juxtapleural_benign_morphology: true,
        ..LungRadsInput::new(NoduleType::NonSolid, D(35.0))
    };
    assert_eq!(lung_rads(&ggn).unwrap().category, C3);
}

#[test]
fn lung_rads_category_1_and_4x() {
    let calcified = LungRadsInput {
        benign_calcification_or_fat: true,
        ..LungRadsInput::new(NoduleType::Solid, D(20.0))
    };
    assert_eq!(lung_rads(&calcified).unwrap().category, C1);
    let suspicious = |size| {
        lung_rads(&LungRadsInput {
            additional_suspicious_features: true,
            ..LungRadsInput::new(NoduleType::Solid, size)
        })
        .unwrap()
        .category
    };
    assert_eq!(suspicious(D(5.0)), C2); // 4X applies to 3 and 4 only
    assert_eq!(suspicious(D(6.0)), C4X);
    assert_eq!(suspicious(D(9.0)), C4X);
    assert_eq!(suspicious(D(16.0)), C4X);
}

#[test]
fn lung_rads_exam_category_is_the_highest() {
    assert_eq!(exam_category([]), C1);
    assert_eq!(exam_category([C2, C4A, C3]), C4A);
    assert!(C4B < C4X && C3 < C4A);
    assert_eq!(serde_json::to_value(C4A).unwrap(), "4A");
}

#[test]
fn lung_rads_refuses_bad_sizes() {
    assert!(lung_rads(&LungRadsInput::new(NoduleType::Solid, D(-1.0))).is_err());
    assert!(lung_rads(&LungRadsInput::new(NoduleType::Solid, V(f64::INFINITY))).is_err());
}
