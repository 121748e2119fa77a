//! Tests against the pydicom/highdicom/GDCM fixtures in `fixtures/dicom/` and
//! against series written in memory by [`super::synthetic`].

use std::path::PathBuf;

use dicom_dictionary_std::uids;

use super::synthetic::{SyntheticSlice, series_from_volume};
use super::*;
use crate::imaging::Volume;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom")
}

/// The HU volume the fixture generator wrote (int16 LE, x fastest).
fn expected_hu() -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join("expected_hu.i16")).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
        .collect()
}

fn expected_geometry() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("expected_geometry.json")).unwrap())
        .unwrap()
}

fn assert_fixture_geometry(v: &Volume<f32>) {
    let g = expected_geometry();
    let f = |key: &str| -> Vec<f64> {
        g[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let dims: Vec<usize> = f("dims").iter().map(|d| *d as usize).collect();
    assert_eq!(v.dims.to_vec(), dims);
    for (a, b) in v.spacing.iter().zip(f("spacing")) {
        assert!((a - b).abs() < 1e-9, "spacing {:?}", v.spacing);
    }
    for (a, b) in v.origin.iter().zip(f("origin")) {
        assert!((a - b).abs() < 1e-9, "origin {:?}", v.origin);
    }
    assert_eq!(
        v.direction,
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    );
}

fn read_fixture_series(folder: &str) -> CtVolume {
    let ct = read_ct_dir(&fixtures().join(folder), None, &AssembleOptions::default())
        .unwrap_or_else(|e| panic!("{folder}: {e}"));
    let ts = match folder {
        "ct_explicit" => uids::EXPLICIT_VR_LITTLE_ENDIAN,
        "ct_implicit" => uids::IMPLICIT_VR_LITTLE_ENDIAN,
        "ct_deflate" => uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "ct_rle" => uids::RLE_LOSSLESS,
        "ct_jpegll" => uids::JPEG_LOSSLESS_SV1,
        other => panic!("unknown fixture {other}"),
    };
    // The fixture really is in the syntax its folder names.
    assert_eq!(ct.transfer_syntaxes, vec![ts.to_owned()], "{folder}");
    ct
}

#[test]
fn explicit_vr_le_fixture_gives_exact_hu_and_geometry() {
    let ct = read_fixture_series("ct_explicit");
    assert_fixture_geometry(&ct.volume);
    assert_eq!(ct.volume.data, expected_hu());
    assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    assert_eq!(
        ct.series_uid,
        expected_geometry()["series"]["ct_explicit"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn implicit_vr_le_signed_fixture_gives_exact_hu() {
    let ct = read_fixture_series("ct_implicit");
    assert_fixture_geometry(&ct.volume);
    assert_eq!(ct.volume.data, expected_hu());
}

#[test]
fn deflated_fixture_gives_exact_hu() {
    let ct = read_fixture_series("ct_deflate");
    assert_fixture_geometry(&ct.volume);
    assert_eq!(ct.volume.data, expected_hu());
}

#[test]
fn rle_lossless_fixture_gives_exact_hu() {
    let ct = read_fixture_series("ct_rle");
    assert_fixture_geometry(&ct.volume);
    assert_eq!(ct.volume.data, expected_hu());
}

#[test]
fn jpeg_lossless_fixture_gives_exact_hu() {
    let ct = read_fixture_series("ct_jpegll");
    assert_fixture_geometry(&ct.volume);
    assert_eq!(ct.volume.data, expected_hu());
}

#[test]
fn slices_are_ordered_by_position_not_instance_number() {
    // The fixture's InstanceNumber runs opposite to the position: if we
    // sorted by it, z would be reversed and the data would not match.
    let ct = read_fixture_series("ct_explicit");
    let dir = fixtures().join("ct_explicit");
    let mut by_uid = std::collections::HashMap::new();
    for f in list_files(&dir).unwrap() {
        let s = CtSlice::from_file(&f).unwrap();
        by_uid.insert(s.sop_instance_uid.clone(), s);
    }
    let positions: Vec<f64> = ct
        .sop_instance_uids
        .iter()
        .map(|u| by_uid[u].position[2])
        .collect();
    assert!(positions.windows(2).all(|w| w[1] > w[0]), "{positions:?}");
    let numbers: Vec<i32> = ct
        .sop_instance_uids
        .iter()
        .map(|u| by_uid[u].instance_number.unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] < w[0]), "{numbers:?}");
}

fn synthetic_volume() -> Volume<f32> {
    let dims = [5, 4, 6];
    let data = (0..dims[0] * dims[1] * dims[2])
        .map(|i| (i as f32 * 7.0) % 500.0 - 250.0)
        .collect();
    let mut v = Volume::new(data, dims, [0.6, 0.9, 1.25]);
    v.origin = [10.0, -20.0, 30.0];
    v
}

fn decode_all(slices: &[SyntheticSlice]) -> Result<Vec<CtSlice>, DicomError> {
    slices
        .iter()
        .enumerate()
        .map(|(i, s)| CtSlice::from_bytes(format!("part {}", i + 1), &s.to_bytes().unwrap()))
        .collect()
}

fn assemble_synthetic(slices: &[SyntheticSlice]) -> Result<CtVolume, DicomError> {
    assemble_ct(decode_all(slices)?, &AssembleOptions::default())
}

#[test]
fn synthetic_series_round_trips_exactly() {
    let v = synthetic_volume();
    let mut slices = series_from_volume(&v, "2.25.77");
    slices.reverse();
    let ct = assemble_synthetic(&slices).unwrap();
    assert_eq!(ct.volume.data, v.data);
    assert_eq!(ct.volume.dims, v.dims);
    assert!(ct.volume.same_grid(&v));
    assert!(ct.warnings.is_empty());
}

#[test]
fn implicit_vr_synthetic_series_round_trips() {
    let v = synthetic_volume();
    let mut slices = series_from_volume(&v, "2.25.78");
    for s in &mut slices {
        s.transfer_syntax = uids::IMPLICIT_VR_LITTLE_ENDIAN.into();
    }
    assert_eq!(assemble_synthetic(&slices).unwrap().volume.data, v.data);
}

#[test]
fn oblique_and_feet_first_orientations_keep_patient_geometry() {
    // A coronal acquisition with its normal pointing to -y, rotated 10° about
    // z: the direction matrix must come back, and every voxel must keep its
    // patient-space position.
    let (s, c) = 10f64.to_radians().sin_cos();
    let row = [c, s, 0.0];
    let col = [0.0, 0.0, -1.0];
    let n = super::slice::cross(row, col);
    let mut v = synthetic_volume();
    for r in 0..3 {
        v.direction[r] = [row[r], col[r], n[r]];
    }
    let slices = series_from_volume(&v, "2.25.79");
    let ct = assemble_synthetic(&slices).unwrap();
    assert_eq!(ct.volume.data, v.data);
    for r in 0..3 {
        for i in 0..3 {
            assert!((ct.volume.direction[r][i] - v.direction[r][i]).abs() < 1e-6);
        }
    }
    let p = ct.volume.index_to_physical([3.0, 2.0, 4.0]);
    let q = v.index_to_physical([3.0, 2.0, 4.0]);
    for k in 0..3 {
        assert!((p[k] - q[k]).abs() < 1e-4, "{p:?} vs {q:?}");
    }
}

#[test]
fn rescale_slope_and_intercept_are_applied() {
    let v = synthetic_volume();
    let mut slices = series_from_volume(&v, "2.25.80");
    for s in &mut slices {
        s.slope = 0.5;
        s.intercept = -1000.0;
    }
    let ct = assemble_synthetic(&slices).unwrap();
    let expected: Vec<f32> = v.data.iter().map(|x| x * 0.5 - 1000.0).collect();
    assert_eq!(ct.volume.data, expected);
}

#[test]
fn non_ct_modality_is_refused_with_its_name() {
    let mut slices = series_from_volume(&synthetic_volume(), "2.25.81");
    slices[2].modality = "MR".into();
    let err = assemble_synthetic(&slices).unwrap_err();
    assert!(
        matches!(&err, DicomError::NotCt { modality, file } if modality == "MR" && file == "part 3"),
        "{err}"
    );
    assert!(err.to_string().contains("MR"));
}

#[test]
fn missing_pixel_data_is_an_error() {
    let mut slices = series_from_volume(&synthetic_volume(), "2.25.82");
    slices[0].stored = None;
    let err = assemble_synthetic(&slices).unwrap_err();
    assert!(
        matches!(&err, DicomError::NoPixelData { file } if file == "part 1"),
        "{err}"
    );
}

#[test]
fn truncated_and_garbage_inputs_are_malformed_errors_naming_the_file() {
    let path = list_files(&fixtures().join("ct_explicit")).unwrap()[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 100, 132, 300, bytes.len() / 2, bytes.len() - 1] {
        let err = CtSlice::from_bytes("cut.dcm", &bytes[..cut]).unwrap_err();
        assert!(
            matches!(&err, DicomError::Malformed { file, .. } if file == "cut.dcm"),
            "cut at {cut}: {err}"
        );
    }
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = CtSlice::from_bytes("garbage.bin", &garbage).unwrap_err();
    assert!(matches!(err, DicomError::Malformed { .. }), "{err}");

    // From disk the error names the path.
    let dir = tempfile::tempdir().unwrap();
    let cut_path = dir.path().join("IM0001.dcm");
    std::fs::write(&cut_path, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_ct_dir(dir.path(), None, &AssembleOptions::default()).unwrap_err();
    assert!(err.to_string().contains("IM0001.dcm"), "{err}");
}

#[test]
fn pixel_data_shorter_than_rows_times_columns_is_an_error() {
    let mut slices = series_from_volume(&synthetic_volume(), "2.25.83");
    slices[1].stored.as_mut().unwrap().truncate(7);
    let err = assemble_synthetic(&slices).unwrap_err();
    assert!(matches!(err, DicomError::PixelDecode { .. }), "{err}");
}

#[test]
fn inconsistent_headers_name_the_tag() {
    let base = series_from_volume(&synthetic_volume(), "2.25.84");
    type Breaker = Box<dyn Fn(&mut SyntheticSlice)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "PixelSpacing",
            Box::new(|s: &mut SyntheticSlice| s.pixel_spacing[0] += 0.01),
        ),
        (
            "ImageOrientationPatient",
            Box::new(|s: &mut SyntheticSlice| {
                let (sn, c) = 5f64.to_radians().sin_cos();
                s.orientation = [c, sn, 0.0, -sn, c, 0.0];
            }),
        ),
        (
            "Rows",
            Box::new(|s: &mut SyntheticSlice| {
                s.rows = 2;
                s.stored.as_mut().unwrap().truncate(10);
            }),
        ),
        (
            "SeriesInstanceUID",
            Box::new(|s: &mut SyntheticSlice| s.series_uid = "2.25.999".into()),
        ),
        (
            "FrameOfReferenceUID",
            Box::new(|s: &mut SyntheticSlice| s.frame_of_reference_uid = "2.25.998".into()),
        ),
    ];
    for (tag, break_it) in cases {
        let mut slices = base.clone();
        break_it(&mut slices[3]);
        let err = assemble_synthetic(&slices).unwrap_err();
        match &err {
            DicomError::InconsistentSeries { tag: t, .. } => {
                assert!(t.starts_with(tag), "{tag}: {err}")
            }
            other => panic!("{tag}: expected InconsistentSeries, got {other}"),
        }
    }
}

#[test]
fn gantry_tilt_is_detected_and_its_angle_reported() {
    let mut slices = series_from_volume(&synthetic_volume(), "2.25.85");
    // A 15° tilt shifts each slice along the column direction by
    // spacing·tan(15°).
    let shift = 1.25 * 15f64.to_radians().tan();
    for (k, s) in slices.iter_mut().enumerate() {
        s.position[1] += k as f64 * shift;
    }
    let err = assemble_synthetic(&slices).unwrap_err();
    match err {
        DicomError::GantryTilt { tilt_degrees, .. } => {
            assert!((tilt_degrees - 15.0).abs() < 0.05, "{tilt_degrees}")
        }
        other => panic!("expected GantryTilt, got {other}"),
    }
}

#[test]
fn a_missing_slice_is_reported_as_irregular_spacing() {
    let mut slices = series_from_volume(&synthetic_volume(), "2.25.86");
    slices.remove(3);
    let err = assemble_synthetic(&slices).unwrap_err();
    match err {
        DicomError::IrregularSpacing {
            index,
            gap_mm,
            expected_mm,
            ..
        } => {
            assert_eq!(index, 2);
            assert!((gap_mm - 2.5).abs() < 1e-6 && (expected_mm - 1.25).abs() < 1e-6);
        }
        other => panic!("expected IrregularSpacing, got {other}"),
    }
}

#[test]
fn two_instances_at_one_position_are_an_error_but_a_resent_one_is_dropped() {
    let base = series_from_volume(&synthetic_volume(), "2.25.87");
    let mut slices = base.clone();
    let mut extra = slices[2].clone();
    extra.sop_instance_uid = "2.25.87.99".into();
    slices.push(extra);
    let err = assemble_synthetic(&slices).unwrap_err();
    assert!(matches!(err, DicomError::DuplicatePosition { .. }), "{err}");

    let mut slices = base.clone();
    slices.push(base[2].clone());
    let ct = assemble_synthetic(&slices).unwrap();
    assert_eq!(ct.volume.dims[2], base.len());
    assert_eq!(
        ct.warnings,
        vec![SeriesWarning::DuplicateInstanceDropped {
            sop_instance_uid: base[2].sop_instance_uid.clone()
        }]
    );
}

#[test]
fn small_position_jitter_is_accepted_with_a_warning() {
    let v = synthetic_volume();
    let mut slices = series_from_volume(&v, "2.25.88");
    slices[2].position[2] += 0.03;
    let ct = assemble_synthetic(&slices).unwrap();
    assert_eq!(ct.volume.data, v.data);
    assert!(matches!(
        ct.warnings.as_slice(),
        [SeriesWarning::PositionJitter { max_deviation_mm }] if (*max_deviation_mm - 0.03).abs() < 1e-3
    ));
}

#[test]
fn a_single_slice_is_accepted_with_a_warning() {
    let slices = series_from_volume(&synthetic_volume(), "2.25.89");
    let ct = assemble_synthetic(&slices[..1]).unwrap();
    assert_eq!(ct.volume.dims[2], 1);
    assert!(matches!(
        ct.warnings.as_slice(),
        [SeriesWarning::SingleSlice { .. }]
    ));
}

#[test]
fn mixed_slices_are_grouped_by_series_then_assembled() {
    let v = synthetic_volume();
    let mut all = series_from_volume(&v, "2.25.93");
    all.extend(series_from_volume(&v, "2.25.94"));
    let slices = decode_all(&all).unwrap();
    let err = assemble_ct(slices.clone(), &AssembleOptions::default()).unwrap_err();
    assert!(
        matches!(err, DicomError::InconsistentSeries { tag, .. } if tag.starts_with("SeriesInstanceUID")),
        "{err}"
    );
    let groups = group_by_series(slices);
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["2.25.93", "2.25.94"]);
    for (_, g) in groups {
        let ct = assemble_ct(g, &AssembleOptions::default()).unwrap();
        assert_eq!(ct.volume.data, v.data);
    }
}

#[test]
fn empty_series_is_an_error() {
    assert!(matches!(
        assemble_ct(Vec::new(), &AssembleOptions::default()),
        Err(DicomError::EmptySeries)
    ));
}

#[test]
fn a_folder_with_two_series_needs_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    let v = synthetic_volume();
    for (name, uid) in [("a", "2.25.90"), ("b", "2.25.91")] {
        for (k, s) in series_from_volume(&v, uid).iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("{name}{k}.dcm")),
                s.to_bytes().unwrap(),
            )
            .unwrap();
        }
    }
    let opts = AssembleOptions::default();
    let err = read_ct_dir(dir.path(), None, &opts).unwrap_err();
    assert!(
        matches!(&err, DicomError::MultipleSeries { count: 2, uids } if uids.contains("2.25.90") && uids.contains("2.25.91")),
        "{err}"
    );
    let ct = read_ct_dir(dir.path(), Some("2.25.91"), &opts).unwrap();
    assert_eq!(ct.series_uid, "2.25.91");
    assert_eq!(ct.volume.data, v.data);
    assert!(matches!(
        read_ct_dir(dir.path(), Some("2.25.92"), &opts),
        Err(DicomError::SeriesNotFound { .. })
    ));
}

fn seg_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("seg_nodule.dcm")).unwrap()
}

#[test]
fn seg_frames_land_on_the_ct_grid() {
    let ct = read_fixture_series("ct_explicit");
    let expected = std::fs::read(fixtures().join("seg_expected.u8")).unwrap();
    assert!(expected.iter().filter(|v| **v == 1).count() > 100);
    for which in [SegSelection::All, SegSelection::Segment(1)] {
        let mask = read_seg_mask(
            "seg_nodule.dcm",
            &seg_bytes(),
            &ct.volume,
            ct.frame_of_reference_uid.as_deref(),
            which,
        )
        .unwrap();
        assert!(mask.same_grid(&ct.volume));
        assert_eq!(mask.data, expected);
    }
}

#[test]
fn seg_errors_name_what_does_not_fit() {
    let ct = read_fixture_series("ct_explicit");
    let err = read_seg_mask(
        "s",
        &seg_bytes(),
        &ct.volume,
        None,
        SegSelection::Segment(2),
    )
    .unwrap_err();
    assert!(
        matches!(err, DicomError::SegmentNotFound { segment: 2, .. }),
        "{err}"
    );

    // A grid of another size.
    let small = Volume::new(vec![0f32; 32 * 32 * 12], [32, 32, 12], ct.volume.spacing);
    let err = read_seg_mask("s", &seg_bytes(), &small, None, SegSelection::All).unwrap_err();
    assert!(matches!(err, DicomError::MaskGridMismatch { .. }), "{err}");

    // Same size, but shifted by half a slice: frames fall between slices.
    let mut shifted = ct.volume.clone();
    shifted.origin[2] += 1.25;
    let err = read_seg_mask("s", &seg_bytes(), &shifted, None, SegSelection::All).unwrap_err();
    assert!(
        matches!(&err, DicomError::MaskGridMismatch { detail, .. } if detail.contains("not on an image slice")),
        "{err}"
    );

    let err = read_seg_mask(
        "s",
        &seg_bytes(),
        &ct.volume,
        Some("2.25.12345"),
        SegSelection::All,
    )
    .unwrap_err();
    assert!(matches!(err, DicomError::MaskGridMismatch { .. }), "{err}");

    // A CT instance is not a segmentation.
    let ct_file = list_files(&fixtures().join("ct_explicit")).unwrap()[0].clone();
    let err = read_seg_mask(
        "ct.dcm",
        &std::fs::read(ct_file).unwrap(),
        &ct.volume,
        None,
        SegSelection::All,
    )
    .unwrap_err();
    assert!(
        matches!(&err, DicomError::NotSegmentation { modality, .. } if modality == "CT"),
        "{err}"
    );
}
