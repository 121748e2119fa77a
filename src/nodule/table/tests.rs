use super::*;
use crate::nodule::lidc::{Annotation, Contour, Ratings, Scan};

fn scan(id: i64, patient: u32) -> Scan {
    Scan {
        id,
        patient_id: format!("LIDC-IDRI-{patient:04}"),
        patient_number: patient,
        slice_thickness: 2.0,
        pixel_spacing: 0.7,
        contrast_used: id % 2 == 0,
        slice_zvals: (0..40).map(|k| -200.0 + 2.0 * k as f64).collect(),
    }
}

fn ratings(malignancy: u8, texture: u8) -> Ratings {
    Ratings {
        subtlety: 4,
        internal_structure: 1,
        calcification: 6,
        sphericity: 4,
        margin: 4,
        lobulation: 2,
        spiculation: 2,
        texture,
        malignancy,
    }
}

/// An octagon outline of "radius" `r` pixels around `(ci, cj)`, every
/// boundary pixel a vertex (as LIDC readers draw).
fn outline(ci: i32, cj: i32, r: i32) -> Vec<[i32; 2]> {
    let c = r / 2;
    let corners = [
        [ci - r, cj - c],
        [ci - r, cj + c],
        [ci - c, cj + r],
        [ci + c, cj + r],
        [ci + r, cj + c],
        [ci + r, cj - c],
        [ci + c, cj - r],
        [ci - c, cj - r],
    ];
    let mut pts = vec![];
    for w in 0..8 {
        let a = corners[w];
        let b = corners[(w + 1) % 8];
        let n = (b[0] - a[0]).abs().max((b[1] - a[1]).abs());
        for t in 0..n {
            pts.push([a[0] + (b[0] - a[0]) * t / n, a[1] + (b[1] - a[1]) * t / n]);
        }
    }
    pts
}

#[allow(clippy::too_many_arguments)]
fn annotation(
    id: i64,
    s: &Scan,
    k0: usize,
    slices: usize,
    ci: i32,
    cj: i32,
    r: i32,
    m: u8,
    tex: u8,
) -> Annotation {
    Annotation {
        id,
        scan_id: s.id,
        reader_nodule_id: format!("n{id}"),
        ratings: ratings(m, tex),
        contours: (0..slices)
            .map(|n| {
                let k = k0 + n;
                // Smaller at the poles, as a round nodule.
                let rr = if n == 0 || n + 1 == slices {
                    (r * 2 / 3).max(3)
                } else {
                    r
                };
                Contour {
                    id: id * 100 + n as i64,
                    inclusion: true,
                    image_z_position: s.slice_zvals[k],
                    k,
                    points: outline(ci, cj, rr),
                }
            })
            .collect(),
    }
}

/// Three patients (one in the test range), five nodules with 1-2 readers.
fn tiny_db() -> LidcDatabase {
    let s1 = scan(1, 12);
    let s2 = scan(2, 345);
    let s3 = scan(3, 812);
    let anns = vec![
        annotation(10, &s1, 10, 5, 200, 200, 9, 5, 5),
        annotation(11, &s1, 10, 5, 201, 200, 9, 4, 5),
        annotation(12, &s1, 25, 3, 300, 120, 5, 1, 1),
        annotation(20, &s2, 5, 4, 250, 260, 7, 3, 3),
        annotation(30, &s3, 15, 6, 180, 300, 12, 5, 4),
        annotation(31, &s3, 15, 6, 180, 301, 11, 5, 5),
        annotation(32, &s3, 30, 3, 100, 100, 4, 2, 5),
    ];
    LidcDatabase::from_parts(vec![s1, s2, s3], anns)
}

fn cfg() -> TableConfig {
    TableConfig::new(16, 2.0, 11)
}

#[test]
fn a_small_table_is_written_and_read_back_identically_and_deterministically() {
    let db = tiny_db();
    let nodules = lidc::nodules(&db).unwrap();
    assert_eq!(nodules.len(), 5);
    let table = NoduleTable::build(&db, &nodules, &cfg()).unwrap();
    assert_eq!(table.len(), 5, "failures: {:?}", table.meta().failures);
    assert_eq!(table.feature_names().len(), 107);
    let dir = tempfile::tempdir().unwrap();
    table.write(dir.path()).unwrap();
    let back = NoduleTable::load(dir.path()).unwrap();
    assert_eq!(back.meta(), table.meta());
    for (a, b) in back.rows().iter().zip(table.rows()) {
        assert_eq!(a, b);
    }
    assert!(back.views == table.views, "views differ");
    assert!(back.radiomics == table.radiomics, "radiomics differ");
    assert_eq!(back, table);
    // Same inputs, same bytes.
    let again = NoduleTable::build(&db, &nodules, &cfg()).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    again.write(dir2.path()).unwrap();
    for f in [VIEWS_FILE, ROWS_FILE, META_FILE] {
        assert_eq!(
            std::fs::read(dir.path().join(f)).unwrap(),
            std::fs::read(dir2.path().join(f)).unwrap(),
            "{f}"
        );
    }
    // A different seed renders different pixels.
    let other = NoduleTable::build(&db, &nodules, &TableConfig::new(16, 2.0, 12)).unwrap();
    assert_ne!(other.views(0), table.views(0));

    // Baseline inputs of the two-reader solid nodule on scan 1.
    let r = &table.rows()[0];
    assert_eq!(r.key, "LIDC-IDRI-0012/scan1/ann10");
    assert_eq!(r.readers, 2);
    assert_eq!(r.nodules_on_scan, 2);
    assert_eq!(r.nodule_type, NoduleType::Solid);
    assert_eq!(r.median_malignancy, 4.5);
    assert_eq!(r.label, MalignancyLabel::Malignant);
    // Octagon of radius 9 px at 0.7 mm: the mask (interior) spans about
    // 17 px = 11.9 mm across.
    assert!(r.long_axis_mm > 10.0 && r.long_axis_mm < 14.5, "{r:?}");
    assert!(
        r.short_axis_mm > 9.0 && r.short_axis_mm <= r.long_axis_mm,
        "{r:?}"
    );
    assert!((r.volume_mm3 - r.mask_voxels as f64 * 0.7 * 0.7 * 2.0).abs() < 1e-6);
    // The ground-glass nodule (texture 1) is non-solid.
    let ggn = table
        .rows()
        .iter()
        .find(|r| r.key.ends_with("ann12"))
        .unwrap();
    assert_eq!(ggn.nodule_type, NoduleType::NonSolid);
    assert_eq!(ggn.label, MalignancyLabel::Benign);
}

#[test]
fn the_views_equal_the_model_input_of_the_rendered_patch() {
    let db = tiny_db();
    let nodules = lidc::nodules(&db).unwrap();
    let c = cfg();
    let table = NoduleTable::build(&db, &nodules, &c).unwrap();
    for (i, n) in nodules.iter().enumerate() {
        let (row, rendered) = dataset::render_nodule(&db, n, &c.render, c.seed).unwrap();
        let patch = extract_patch_at_mask(&rendered.hu, &rendered.mask, &c.patch).unwrap();
        let want = NoduleModelInput::from_patch(&patch, row.features.clone()).unwrap();
        let got = table.model_input(i);
        assert_eq!(got.views, want.views, "row {i}");
        assert_eq!(got.radiomics, want.radiomics, "row {i}");
        assert_eq!(got.views[0].len(), 16 * 16);
        // The nodule is in the middle of the axial view: brighter than the
        // lung around it (solid or ground-glass, both above −850 HU).
        let v = &got.views[0];
        let mut sorted = v.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        assert!(
            v[8 * 16 + 8] > median,
            "row {i}: centre {} median {median}",
            v[8 * 16 + 8]
        );
    }
}

#[test]
fn split_rules_hold() {
    let db = tiny_db();
    let nodules = lidc::nodules(&db).unwrap();
    let table = NoduleTable::build(&db, &nodules, &cfg()).unwrap();
    for r in table.rows() {
        let number = r.patient_number().unwrap();
        assert_eq!(r.split == Split::Test, number >= 800, "{}", r.key);
        assert_eq!(r.subset == Subset::Test, number >= 800, "{}", r.key);
    }
    assert_eq!(table.split(Split::Test).len(), 2);
    assert_eq!(table.subset(Subset::Test), table.split(Split::Test));

    // Over many patients: each in exactly one subset whatever its nodules,
    // about val_fraction of the 0001-0799 ones in validation, none of the
    // test range ever in train or validation.
    let mut subsets: HashMap<String, Subset> = HashMap::new();
    let mut val = 0;
    for number in 1..=1010u32 {
        let id = format!("LIDC-IDRI-{number:04}");
        let split = Split::of_patient(number);
        let s = subset_of(&id, split, 0.2, 5);
        assert_eq!(s, subset_of(&id, split, 0.2, 5));
        assert_eq!(s == Subset::Test, number >= 800);
        val += usize::from(s == Subset::Val);
        assert!(subsets.insert(id, s).is_none());
    }
    assert!((120..=200).contains(&val), "{val} of 799 in validation");
    // Another seed, another draw.
    let moved = (1..800u32)
        .filter(|n| {
            let id = format!("LIDC-IDRI-{n:04}");
            subset_of(&id, Split::TrainVal, 0.2, 5) != subset_of(&id, Split::TrainVal, 0.2, 6)
        })
        .count();
    assert!(moved > 100, "{moved}");
    let (train, val) = table.train_val(0.5, 3);
    assert_eq!(train.len() + val.len(), 3);
    assert!(
        train
            .iter()
            .chain(&val)
            .all(|&i| table.rows()[i].split == Split::TrainVal)
    );
}

#[test]
fn axial_axes_of_a_rectangle_are_its_diagonal_and_the_perpendicular_width() {
    // 10 × 4 pixels at 0.5 mm: 5 × 2 mm on one slice, a smaller 2 × 2 on
    // the next (not the slice of maximal extent).
    let (nx, ny) = (20, 12);
    let mut data = vec![0u8; nx * ny * 2];
    for y in 3..7 {
        for x in 5..15 {
            data[y * nx + x] = 1;
        }
    }
    for y in 3..5 {
        for x in 5..7 {
            data[nx * ny + y * nx + x] = 1;
        }
    }
    let m = Volume::new(data, [nx, ny, 2], [0.5, 0.5, 2.0]);
    let (long, short) = axial_axes(&m).unwrap();
    let diag = (25.0f64 + 4.0).sqrt();
    assert!((long - diag).abs() < 1e-9, "{long}");
    assert!((short - 2.0 * 5.0 * 2.0 / diag).abs() < 1e-9, "{short}");
    assert!(axial_axes(&Volume::new(vec![0u8; 8], [2, 2, 2], [1.0; 3])).is_none());
}

#[test]
fn texture_medians_map_to_attenuation_types() {
    assert_eq!(nodule_type_of_texture(1.0), NoduleType::NonSolid);
    assert_eq!(nodule_type_of_texture(2.0), NoduleType::NonSolid);
    assert_eq!(nodule_type_of_texture(2.5), NoduleType::PartSolid);
    assert_eq!(nodule_type_of_texture(4.0), NoduleType::PartSolid);
    assert_eq!(nodule_type_of_texture(4.5), NoduleType::Solid);
    assert_eq!(nodule_type_of_texture(5.0), NoduleType::Solid);
}

#[test]
fn bad_settings_and_bad_files_are_errors_not_panics() {
    let mut c = cfg();
    c.render.half_width_mm = 5.0;
    let db = tiny_db();
    let nodules = lidc::nodules(&db).unwrap();
    assert!(matches!(
        NoduleTable::build(&db, &nodules, &c),
        Err(TableError::Config(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        NoduleTable::load(dir.path()),
        Err(TableError::Io { .. })
    ));
    let table = NoduleTable::build(&db, &nodules, &cfg()).unwrap();
    table.write(dir.path()).unwrap();
    // One row fewer than the tensors hold.
    let rows = std::fs::read_to_string(dir.path().join(ROWS_FILE)).unwrap();
    let fewer: Vec<&str> = rows.lines().skip(1).collect();
    std::fs::write(dir.path().join(ROWS_FILE), fewer.join("\n")).unwrap();
    let err = NoduleTable::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("expected F32 [4, 3, 16, 16]"), "{err}");
}
