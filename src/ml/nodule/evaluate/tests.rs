use super::*;
use crate::imaging::patch::PatchConfig;
use crate::ml::nodule::{NoduleModelInfo, NoduleModelInput};
use crate::nodule::table::{TableConfig, TableMeta, counts, definitions};

#[test]
fn auroc_counts_ties_as_one_half() {
    // Pairs (pos, neg): 0.8>0.1, 0.8>0.4, 0.4>0.1, 0.4=0.4 → 3.5 / 4.
    let (a, _) = auroc_with_ci(&[0.1, 0.4, 0.4, 0.8], &[false, false, true, true], 0, 1);
    assert_eq!(a, Some(0.875));
    let (none, ci) = auroc_with_ci(&[0.1, 0.2], &[true, true], 100, 1);
    assert_eq!((none, ci), (None, None));
}

#[test]
fn bootstrap_interval_is_deterministic_for_a_seed() {
    let scores: Vec<f64> = (0..60).map(|i| f64::from(i % 17) / 17.0).collect();
    let labels: Vec<bool> = (0..60).map(|i| (i % 17) > 6 || i % 5 == 0).collect();
    let (a, ci1) = auroc_with_ci(&scores, &labels, 500, 7);
    let (_, ci2) = auroc_with_ci(&scores, &labels, 500, 7);
    let (_, ci3) = auroc_with_ci(&scores, &labels, 500, 8);
    let (a, (lo, hi)) = (a.unwrap(), ci1.unwrap());
    assert_eq!(ci1, ci2);
    assert_ne!(ci1, ci3);
    assert!(lo < a && a < hi && hi <= 1.0 && lo > 0.5, "{lo} {a} {hi}");
}

#[test]
fn ece_confusion_and_quantiles_by_hand() {
    // Bins: [0.05] y 0 → 0.05 (weight 1/4); [0.55] y 1 → 0.45 (1/4);
    // [0.95, 0.95] y 0.5 → 0.45 (2/4). ECE = 0.0125 + 0.1125 + 0.225.
    let e = ece(&[0.05, 0.95, 0.95, 0.55], &[false, true, false, true], 10);
    assert!((e - 0.35).abs() < 1e-12, "{e}");
    // tp 2, fp 1, tn 1, fn 1.
    let (acc, f1, sens, spec) = confusion(
        &[true, true, true, false, false],
        &[true, true, false, false, true],
    );
    assert_eq!((acc, sens, spec), (0.6, 2.0 / 3.0, 0.5));
    assert!((f1 - 4.0 / 6.0).abs() < 1e-12);
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
    assert!((quantile(&[0.0, 10.0], 0.975) - 9.75).abs() < 1e-12);
    let roc = roc_curve(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]);
    assert_eq!(roc, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
}

fn row(i: usize, patient: u32, label: MalignancyLabel, long: f64, spic: f64) -> TableRow {
    let split = Split::of_patient(patient);
    TableRow {
        key: format!("LIDC-IDRI-{patient:04}/scan{i}/ann{i}"),
        patient_id: format!("LIDC-IDRI-{patient:04}"),
        scan_id: i as i64,
        split,
        subset: match (split, patient % 5) {
            (Split::Test, _) => Subset::Test,
            (_, 0) => Subset::Val,
            _ => Subset::Train,
        },
        label,
        median_malignancy: match label {
            MalignancyLabel::Benign => 2.0,
            MalignancyLabel::Unsure => 3.0,
            MalignancyLabel::Malignant => 4.0,
        },
        readers: 4,
        annotation_ids: vec![i as i64],
        render_seed: 0,
        mask_voxels: 100,
        volume_mm3: std::f64::consts::PI / 6.0 * long.powi(3),
        long_axis_mm: long,
        short_axis_mm: long * 0.8,
        mean_diameter_mm: long * 0.9,
        equivalent_diameter_mm: long,
        texture_median: 5.0,
        spiculation_median: spic,
        calcification_median: 6.0,
        internal_structure_median: 1.0,
        nodule_type: NoduleType::Solid,
        nodules_on_scan: 2,
        slice_thickness_mm: 1.25,
        pixel_spacing_mm: 0.7,
        contrast: false,
    }
}

/// 200 train/val and 60 test nodules; malignant ones are larger, and the
/// first radiomics feature tracks the label with noise.
fn table() -> NoduleTable {
    let mut cfg = TableConfig::new(4, 12.0, 1);
    cfg.patch = PatchConfig {
        size: 4,
        spacing_mm: 12.0,
        ..PatchConfig::default()
    };
    let mut rows = vec![];
    let mut rad = vec![];
    let mut views = vec![];
    for i in 0..260usize {
        let patient = if i < 200 {
            1 + i as u32 * 3
        } else {
            800 + i as u32
        };
        let label = match i % 7 {
            0 => MalignancyLabel::Unsure,
            1..=3 => MalignancyLabel::Benign,
            _ => MalignancyLabel::Malignant,
        };
        let y = f64::from(u8::from(label == MalignancyLabel::Malignant));
        let noise = ((i * 37) % 11) as f64 / 10.0;
        let long = 4.0 + 10.0 * y + 3.0 * noise;
        rows.push(row(
            i,
            patient,
            label,
            long,
            if i % 3 == 0 { 4.0 } else { 1.0 },
        ));
        rad.extend([y + noise, noise * 3.0, 7.0]);
        // The test double reads its probability from the first pixel.
        let p = (0.15 + 0.6 * y + 0.2 * noise).min(0.99) as f32;
        views.extend(std::iter::repeat_n(p, 3 * 16));
    }
    let meta = TableMeta {
        format_version: crate::nodule::table::FORMAT_VERSION,
        config: cfg,
        feature_names: vec!["a".into(), "b".into(), "c".into()],
        counts: counts(&rows, 0),
        failures: vec![],
        definitions: definitions(),
    };
    NoduleTable::from_parts(meta, rows, views, rad).unwrap()
}

/// A test double: probability = first axial pixel; review when 0.3–0.7.
struct Double(NoduleModelInfo);

impl NoduleClassifier for Double {
    fn info(&self) -> &NoduleModelInfo {
        &self.0
    }
    fn predict(
        &self,
        inputs: &[NoduleModelInput],
    ) -> Result<Vec<NoduleModelOutput>, NoduleModelError> {
        Ok(inputs
            .iter()
            .map(|x| {
                let p = f64::from(x.views[0][0]);
                let review = p > 0.3 && p < 0.7;
                NoduleModelOutput {
                    probability: p,
                    interval: (p, p),
                    confidence: p.max(1.0 - p),
                    confidence_level: "moderate",
                    prediction_set: if review {
                        vec!["benign", "malignant"]
                    } else if p >= 0.5 {
                        vec!["malignant"]
                    } else {
                        vec!["benign"]
                    },
                    review_suggested: review,
                    radiomics_drivers: vec![],
                }
            })
            .collect())
    }
}

fn double(patch: PatchConfig) -> Double {
    Double(NoduleModelInfo {
        id: "double".into(),
        version: "1".into(),
        source_label: "test double".into(),
        trained_on_rendered_pixels: true,
        patch,
        alpha: 0.1,
    })
}

#[test]
fn evaluation_with_a_test_classifier_writes_the_report() {
    let t = table();
    let clf = double(*t.patch_config());
    let cfg = EvalConfig {
        bootstrap: 200,
        ..EvalConfig::default()
    };
    let e = evaluate(&t, "toy", Some(&clf as &dyn NoduleClassifier), None, &cfg).unwrap();
    // Test split: i in 200..260, labels by i % 7.
    let test: Vec<usize> = (200..260).collect();
    let unsure = test.iter().filter(|i| *i % 7 == 0).count();
    let malignant = test.iter().filter(|i| *i % 7 >= 4).count();
    assert_eq!(e.test_unsure, unsure);
    assert_eq!(e.test_malignant, malignant);
    assert_eq!(e.test_benign, 60 - unsure - malignant);
    let names: Vec<&str> = e.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(
        names,
        [
            "full model",
            "radiomics-only logistic",
            "Brock (PanCan 2b)",
            "Mayo",
            "Lung-RADS v2022"
        ]
    );
    // The double separates the classes on the test split (p ≥ 0.75 for
    // malignant, ≤ 0.35 for benign): AUROC 1, accuracy 1.
    let m = e.method("full model").unwrap();
    assert_eq!(m.auroc, Some(1.0));
    assert_eq!(m.accuracy, 1.0);
    // Size carries the label too, so Brock discriminates; Lung-RADS ECE n/a.
    assert!(e.method("Brock (PanCan 2b)").unwrap().auroc.unwrap() > 0.8);
    let lr = e.method("Lung-RADS v2022").unwrap();
    assert_eq!(
        (lr.ece, lr.brier, lr.score),
        (None, None, "ordinal category")
    );
    assert!(e.method("radiomics-only logistic").unwrap().auroc.unwrap() > 0.8);
    // Review gate, by hand from the double's rule.
    let s = e.model.as_ref().unwrap();
    let probs: Vec<f64> = test
        .iter()
        .filter(|i| *i % 7 != 0)
        .map(|&i| f64::from(t.views(i)[0][0]))
        .collect();
    let reviewed = probs.iter().filter(|p| **p > 0.3 && **p < 0.7).count();
    assert_eq!(s.review.n_not_reviewed, probs.len() - reviewed);
    assert!((s.review.share_sent_to_review - reviewed as f64 / probs.len() as f64).abs() < 1e-12);
    assert_eq!(s.review.coverage, 1.0);
    assert_eq!(s.unsure.as_ref().unwrap().n, unsure);
    assert_eq!(
        s.unsure.as_ref().unwrap().histogram.iter().sum::<usize>(),
        unsure
    );

    let dir = tempfile::tempdir().unwrap();
    e.write(dir.path()).unwrap();
    for f in ["report.md", "metrics.json", "roc.png", "calibration.png"] {
        assert!(dir.path().join(f).metadata().unwrap().len() > 100, "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["methods"][0]["auroc"], 1.0);
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        md.contains("| Lung-RADS v2022 | ordinal category |"),
        "{md}"
    );
    assert!(md.contains("0.92"));
    assert!(md.contains("handicapped"));
    // Same seed, same report.
    let again = evaluate(&t, "toy", Some(&clf as &dyn NoduleClassifier), None, &cfg).unwrap();
    assert_eq!(again.markdown(), e.markdown());
}

#[test]
fn baselines_only_and_a_mismatched_patch_is_refused() {
    let t = table();
    let cfg = EvalConfig {
        bootstrap: 50,
        ..EvalConfig::default()
    };
    let e = evaluate(&t, "toy", None, None, &cfg).unwrap();
    assert_eq!(e.methods.len(), 4);
    assert!(e.markdown().contains("baselines only"));
    let wrong = double(PatchConfig::default());
    let err = evaluate(&t, "toy", Some(&wrong as &dyn NoduleClassifier), None, &cfg).unwrap_err();
    assert!(err.to_string().contains("expects patch"), "{err}");
}

#[test]
fn baseline_inputs_follow_the_stated_rules() {
    let cfg = EvalConfig::default();
    let small = row(1, 900, MalignancyLabel::Benign, 5.0, 1.0);
    let big_spiculated = row(2, 900, MalignancyLabel::Malignant, 20.0, 4.0);
    let s = baseline_scores(&small, &cfg);
    let b = baseline_scores(&big_spiculated, &cfg);
    assert!(b.brock.unwrap() > s.brock.unwrap());
    assert!(b.mayo.unwrap() > s.mayo.unwrap());
    // Mean diameter 0.9 × 5 = 4.5 mm solid: category 2; 18 mm spiculated: 4X.
    assert_eq!(s.lung_rads, Some(LungRadsCategory::C2));
    assert_eq!(b.lung_rads, Some(LungRadsCategory::C4X));
    // Central calcification (rating 5) is benign: category 1.
    let mut calcified = big_spiculated.clone();
    calcified.calcification_median = 5.0;
    assert_eq!(
        baseline_scores(&calcified, &cfg).lung_rads,
        Some(LungRadsCategory::C1)
    );
    // Part-solid gets a solid component (half the mean diameter): scorable.
    let mut ps = big_spiculated.clone();
    ps.nodule_type = NoduleType::PartSolid;
    assert!(baseline_scores(&ps, &cfg).lung_rads.is_some());
    // Brock refuses a zero size: not scored rather than a number.
    let mut zero = small.clone();
    zero.long_axis_mm = 0.0;
    assert_eq!(baseline_scores(&zero, &cfg).brock, None);
}
