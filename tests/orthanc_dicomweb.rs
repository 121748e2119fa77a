//! End-to-end against a real PACS: Orthanc with its DICOMweb plugin.
//!
//! The harness (`tests/api/support/orthanc.rs`, shared with the imaging job
//! tests) starts a private Orthanc on a free loopback port with a throwaway
//! storage folder; this test uploads the fixture series through Orthanc's
//! REST API (`POST /instances`) and reads them back through our QIDO-RS and
//! WADO-RS client. Orthanc is stopped when the test ends (guard `Drop`).
//!
//! Orthanc comes from Debian: `apt-get install -y orthanc orthanc-dicomweb`
//! (`scripts/orthanc.sh install`). If it is missing the test FAILS with that
//! instruction; set `ONCOHOOKS_SKIP_ORTHANC=1` to skip it deliberately.

#[path = "api/support/orthanc.rs"]
mod orthanc;

use std::path::PathBuf;

use oncohooks::imaging::Volume;
use oncohooks::imaging::dicom::{
    AssembleOptions, DicomError, SegSelection, list_files, read_seg_mask,
};
use oncohooks::imaging::dicomweb::{
    DicomUid, DicomWebClient, DicomWebConfig, DicomWebError, SeriesRef,
};
use orthanc::{start_orthanc, upload_folder};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom")
}

fn expected_hu() -> Vec<f32> {
    std::fs::read(fixtures().join("expected_hu.i16"))
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
        .collect()
}

fn assert_geometry(v: &Volume<f32>, g: &serde_json::Value) {
    let arr = |k: &str| -> Vec<f64> {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(
        v.dims.iter().map(|d| *d as f64).collect::<Vec<_>>(),
        arr("dims")
    );
    for (a, b) in v.spacing.iter().zip(arr("spacing")) {
        assert!((a - b).abs() < 1e-9, "spacing {:?}", v.spacing);
    }
    for (a, b) in v.origin.iter().zip(arr("origin")) {
        assert!((a - b).abs() < 1e-9, "origin {:?}", v.origin);
    }
    assert_eq!(
        v.direction,
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_series_round_trip_through_qido_and_wado_is_exact() {
    let Some(orthanc) = start_orthanc().await else {
        return;
    };
    let geometry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected_geometry.json")).unwrap())
            .unwrap();
    let mut files = list_files(&fixtures().join("ct_explicit")).unwrap();
    files.extend(list_files(&fixtures().join("ct_rle")).unwrap());
    files.push(fixtures().join("seg_nodule.dcm"));
    upload_folder(&orthanc, &files).await;

    let base_url = format!("{}/dicom-web", orthanc.url());
    let client = DicomWebClient::new(&DicomWebConfig {
        allowed_base_urls: vec![base_url.clone()],
        deadline_secs: 60,
        ..DicomWebConfig::default()
    })
    .unwrap();
    let base = client.allowed_base(&base_url).unwrap();

    // QIDO-RS: study by PatientID, its series, one series' instances.
    let patient = geometry["patient_id"].as_str().unwrap();
    let studies = client.search_studies(&base, patient).await.unwrap();
    assert_eq!(studies.len(), 1, "{studies:?}");
    let study_uid = &studies[0].study_uid;
    assert_eq!(study_uid.as_str(), geometry["study_uid"].as_str().unwrap());
    assert!(
        client
            .search_studies(&base, "NOBODY")
            .await
            .unwrap()
            .is_empty()
    );

    let series = client.search_series(&base, study_uid).await.unwrap();
    let uid_of = |k: &str| geometry["series"][k].as_str().unwrap().to_owned();
    let modality_of = |uid: &str| {
        series
            .iter()
            .find(|s| s.series_uid.as_str() == uid)
            .and_then(|s| s.modality.clone())
    };
    assert_eq!(series.len(), 3, "{series:?}");
    assert_eq!(modality_of(&uid_of("ct_explicit")).as_deref(), Some("CT"));
    assert_eq!(modality_of(&uid_of("ct_rle")).as_deref(), Some("CT"));
    assert_eq!(modality_of(&uid_of("seg")).as_deref(), Some("SEG"));

    let series_ref = |key: &str| SeriesRef {
        base_url: base.clone(),
        study_uid: study_uid.clone(),
        series_uid: DicomUid::parse(&uid_of(key)).unwrap(),
    };
    let instances = client
        .search_instances(&series_ref("ct_explicit"))
        .await
        .unwrap();
    assert_eq!(instances.len(), 12);

    // WADO-RS: both transfer syntaxes come back as the exact HU volume.
    let expected = expected_hu();
    for key in ["ct_explicit", "ct_rle"] {
        let ct = client
            .retrieve_ct_volume(&series_ref(key), AssembleOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}\n{}", orthanc.log_tail()));
        assert_eq!(ct.volume.data, expected, "{key}");
        assert_geometry(&ct.volume, &geometry);
        assert_eq!(ct.series_uid, uid_of(key));
        assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
        // `transfer-syntax=*` returns instances as stored: the RLE series
        // crosses the wire encapsulated and is decoded by us.
        let stored = if key == "ct_rle" {
            "1.2.840.10008.1.2.5"
        } else {
            "1.2.840.10008.1.2.1"
        };
        assert_eq!(ct.transfer_syntaxes, vec![stored.to_owned()], "{key}");
    }

    // The SEG series is refused as a CT volume, naming its modality...
    let err = client
        .retrieve_ct_volume(&series_ref("seg"), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DicomWebError::Dicom(DicomError::NotCt { modality, .. }) if modality == "SEG"),
        "{err}"
    );
    // ...and read as a mask on the retrieved CT grid.
    let ct = client
        .retrieve_ct_volume(&series_ref("ct_explicit"), AssembleOptions::default())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let seg_ref = series_ref("seg");
    let fetch = client.retrieve_series(&seg_ref, tx);
    let collect = async {
        let mut parts = Vec::new();
        while let Some(p) = rx.recv().await {
            parts.push(p);
        }
        parts
    };
    let (stats, parts) = tokio::join!(fetch, collect);
    assert_eq!(stats.unwrap().instances, 1);
    let mask = read_seg_mask(
        "WADO-RS SEG",
        &parts[0].body,
        &ct.volume,
        ct.frame_of_reference_uid.as_deref(),
        SegSelection::Segment(1),
    )
    .unwrap();
    assert_eq!(
        mask.data,
        std::fs::read(fixtures().join("seg_expected.u8")).unwrap()
    );

    // A client whose allow-list lacks this Orthanc refuses to use it.
    let other = DicomWebClient::new(&DicomWebConfig {
        allowed_base_urls: vec!["https://pacs.example.org/dicom-web".into()],
        ..DicomWebConfig::default()
    })
    .unwrap();
    assert!(matches!(
        other
            .retrieve_ct_volume(&series_ref("ct_explicit"), AssembleOptions::default())
            .await,
        Err(DicomWebError::NotAllowed { .. })
    ));
}
