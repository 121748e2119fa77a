//! Parity with pyradiomics 3.1.0 on the reference cases in fixtures/radiomics
//! (reference JSON written by pyradiomics itself), plus behaviour on bad input.

use std::path::PathBuf;

use super::*;
use crate::imaging::nrrd::{read_nrrd_f32, read_nrrd_mask};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/radiomics")
        .join(name)
}

fn reference(case: &str) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture(&format!("{case}_features.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let settings = &v["settings"];
    // The references were made with the defaults this module reproduces.
    assert_eq!(settings["binWidth"], 25, "{case}: unexpected binWidth");
    assert_eq!(settings["label"], 1, "{case}: unexpected label");
    assert!(
        settings["resampling"].is_null(),
        "{case}: resampled reference"
    );
    v["features"].as_object().unwrap().clone()
}

/// Relative 1e-6, or absolute 1e-9 for values near zero.
fn close(got: f64, want: f64) -> bool {
    let diff = (got - want).abs();
    diff <= 1e-9 || diff <= 1e-6 * want.abs()
}

fn check_case(case: &str) -> (f64, String) {
    let image = read_nrrd_f32(&fixture(&format!("{case}_image.nrrd"))).unwrap();
    let mask = read_nrrd_mask(&fixture(&format!("{case}_mask.nrrd")), 1).unwrap();
    let features = extract(&image, &mask, &Settings::default()).unwrap();
    let want = reference(case);

    // Same names, same order.
    let got_names: Vec<&str> = features.iter().map(|(k, _)| k).collect();
    let want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got_names, want_names, "{case}: feature names/order differ");
    assert_eq!(features.len(), 107);

    let mut failures = Vec::new();
    let mut worst = (0.0f64, String::new());
    for (name, got) in features.iter() {
        let w = want[name].as_f64().unwrap();
        if !close(got, w) {
            failures.push(format!("{name}: got {got:.17e}, want {w:.17e}"));
        }
        let rel = if w != 0.0 {
            (got - w).abs() / w.abs()
        } else {
            got.abs()
        };
        if rel > worst.0 {
            worst = (rel, name.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{case}: {} of 107 features differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    worst
}

#[test]
fn lung1_crop_matches_pyradiomics() {
    let (worst, name) = check_case("lung1_crop");
    eprintln!("lung1_crop: worst relative error {worst:.3e} ({name})");
}

#[test]
fn lung2_crop_matches_pyradiomics() {
    let (worst, name) = check_case("lung2_crop");
    eprintln!("lung2_crop: worst relative error {worst:.3e} ({name})");
}

#[test]
fn synthetic_round_matches_pyradiomics() {
    let (worst, name) = check_case("synthetic_round");
    eprintln!("synthetic_round: worst relative error {worst:.3e} ({name})");
}

#[test]
fn synthetic_spiculated_matches_pyradiomics() {
    let (worst, name) = check_case("synthetic_spiculated");
    eprintln!("synthetic_spiculated: worst relative error {worst:.3e} ({name})");
}

#[test]
fn cli_extract_reads_files_and_matches_the_library() {
    let out = cli_extract(
        &fixture("lung1_crop_image.nrrd"),
        &fixture("lung1_crop_mask.nrrd"),
        None,
    )
    .unwrap();
    assert_eq!(out["mask_voxels"], 837);
    assert_eq!(out["settings"]["bin_width"], 25.0);
    let want = reference("lung1_crop");
    let got = out["features"].as_object().unwrap();
    assert_eq!(got.len(), 107);
    for (k, v) in &want {
        assert!(close(got[k].as_f64().unwrap(), v.as_f64().unwrap()), "{k}");
    }
    // A different bin width changes texture but not shape.
    let out50 = cli_extract(
        &fixture("lung1_crop_image.nrrd"),
        &fixture("lung1_crop_mask.nrrd"),
        Some(50.0),
    )
    .unwrap();
    let f50 = out50["features"].as_object().unwrap();
    assert_eq!(
        f50["original_shape_MeshVolume"],
        got["original_shape_MeshVolume"]
    );
    assert_ne!(
        f50["original_glcm_JointAverage"],
        got["original_glcm_JointAverage"]
    );
}

#[test]
fn directories_and_unknown_formats_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_image(dir.path()).unwrap_err().to_string();
    assert!(err.contains("directory") && err.contains("DICOM"), "{err}");
    let txt = dir.path().join("scan.png");
    std::fs::write(&txt, b"x").unwrap();
    let err = load_mask(&txt, 1).unwrap_err().to_string();
    assert!(err.contains("unsupported file type"), "{err}");
}

fn small_pair() -> (Volume<f32>, Volume<u8>) {
    let dims = [6, 5, 4];
    let n = dims[0] * dims[1] * dims[2];
    let image = Volume::new(
        (0..n).map(|i| (i * 37 % 200) as f32 - 100.0).collect(),
        dims,
        [0.8, 0.8, 2.0],
    );
    let mut mask = Volume::new(vec![0u8; n], dims, [0.8, 0.8, 2.0]);
    for z in 1..3 {
        for y in 1..4 {
            for x in 1..5 {
                let i = mask.index(x, y, z);
                mask.data[i] = 1;
            }
        }
    }
    (image, mask)
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let (image, mask) = small_pair();
    let s = Settings::default();
    assert!(extract(&image, &mask, &s).is_ok());

    let mut other = mask.clone();
    other.dims = [5, 6, 4];
    assert!(matches!(
        extract(&image, &other, &s),
        Err(RadiomicsError::SizeMismatch { .. })
    ));

    let mut moved = mask.clone();
    moved.origin[2] += 1.0;
    assert!(matches!(
        extract(&image, &moved, &s),
        Err(RadiomicsError::GeometryMismatch { what: "origin", .. })
    ));

    let mut spaced = mask.clone();
    spaced.spacing[0] = 0.9;
    assert!(matches!(
        extract(&image, &spaced, &s),
        Err(RadiomicsError::GeometryMismatch {
            what: "spacing",
            ..
        })
    ));

    let empty = Volume::new(vec![0u8; mask.len()], mask.dims, mask.spacing);
    assert!(matches!(
        extract(&image, &empty, &s),
        Err(RadiomicsError::EmptyRoi { label: 1 })
    ));

    let mut single = empty.clone();
    single.data[40] = 1;
    assert!(matches!(
        extract(&image, &single, &s),
        Err(RadiomicsError::SingleVoxel { .. })
    ));

    // A line of voxels spans one dimension; pyradiomics requires two.
    let mut line = empty.clone();
    for x in 0..4 {
        let i = line.index(x, 2, 2);
        line.data[i] = 1;
    }
    assert!(matches!(
        extract(&image, &line, &s),
        Err(RadiomicsError::TooFewDimensions {
            found: 1,
            required: 2
        })
    ));

    let mut nan = image.clone();
    let i = nan.index(2, 2, 1);
    nan.data[i] = f32::NAN;
    assert!(matches!(
        extract(&nan, &mask, &s),
        Err(RadiomicsError::NonFiniteIntensity { index: [2, 2, 1] })
    ));

    let mut broken = image.clone();
    broken.data.pop();
    assert!(matches!(
        extract(&broken, &mask, &s),
        Err(RadiomicsError::InvalidVolume(_))
    ));

    let bad = Settings {
        bin_width: -1.0,
        ..Settings::default()
    };
    assert!(matches!(
        extract(&image, &mask, &bad),
        Err(RadiomicsError::InvalidSettings(_))
    ));
}

#[test]
fn label_selects_the_roi() {
    let (image, mask) = small_pair();
    let relabelled = Volume {
        data: mask.data.iter().map(|&m| m * 3).collect(),
        ..mask.clone()
    };
    let a = extract(&image, &mask, &Settings::default()).unwrap();
    let b = extract(
        &image,
        &relabelled,
        &Settings {
            label: 3,
            ..Settings::default()
        },
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_flat_roi_gives_finite_or_pyradiomics_defined_values() {
    // One slice thick, constant intensity: no panic, no infinities.
    let (mut image, mut mask) = small_pair();
    image.data.iter_mut().for_each(|v| *v = 40.0);
    for z in 2..4 {
        for y in 0..5 {
            for x in 0..6 {
                let i = mask.index(x, y, z);
                mask.data[i] = 0;
            }
        }
    }
    let f = extract(&image, &mask, &Settings::default()).unwrap();
    assert_eq!(f.get("original_firstorder_Variance"), Some(0.0));
    assert_eq!(f.get("original_glcm_Correlation"), Some(1.0));
    assert_eq!(f.get("original_glcm_MCC"), Some(1.0));
    assert_eq!(f.get("original_ngtdm_Coarseness"), Some(1e6));
    for (k, v) in f.iter() {
        assert!(!v.is_infinite(), "{k} is infinite");
    }
}

#[test]
fn features_serialise_as_an_ordered_object() {
    let (image, mask) = small_pair();
    let f = extract(&image, &mask, &Settings::default()).unwrap();
    let json = serde_json::to_value(&f).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj.len(), 107);
    assert_eq!(obj.keys().next().unwrap(), "original_shape_Elongation");
    assert_eq!(obj.keys().next_back().unwrap(), "original_ngtdm_Strength");
}

#[test]
fn file_loading_reports_geometry_and_label_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (image, mask) = small_pair();
    let img = dir.path().join("img.nrrd");
    crate::imaging::nrrd::write_nrrd(&img, &image, true).unwrap();

    let shifted = dir.path().join("shifted.nrrd");
    let mut m = mask.clone();
    m.origin = [5.0, 0.0, 0.0];
    crate::imaging::nrrd::write_nrrd(&shifted, &m, true).unwrap();
    assert!(matches!(
        cli_extract(&img, &shifted, None),
        Err(RadiomicsError::GeometryMismatch { what: "origin", .. })
    ));

    let empty = dir.path().join("empty.nrrd");
    let e = Volume::new(vec![0u8; mask.len()], mask.dims, mask.spacing);
    crate::imaging::nrrd::write_nrrd(&empty, &e, false).unwrap();
    assert!(matches!(
        cli_extract(&img, &empty, None),
        Err(RadiomicsError::EmptyRoi { label: 1 })
    ));

    let good = dir.path().join("mask.nrrd");
    crate::imaging::nrrd::write_nrrd(&good, &mask, true).unwrap();
    let out = cli_extract(&img, &good, None).unwrap();
    let direct = extract(&image, &mask, &Settings::default()).unwrap();
    for (k, v) in direct.iter() {
        assert_eq!(out["features"][k].as_f64().unwrap(), v, "{k}");
    }
}
