//! Client tests against wiremock. The real-PACS test (Orthanc) is
//! `tests/orthanc_dicomweb.rs`.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::imaging::Volume;
use crate::imaging::dicom::synthetic::series_from_volume;

fn client_for(allowed: &[String]) -> DicomWebClient {
    DicomWebClient::new(&DicomWebConfig {
        allowed_base_urls: allowed.to_vec(),
        deadline_secs: 5,
        ..DicomWebConfig::default()
    })
    .unwrap()
}

fn volume() -> Volume<f32> {
    let dims = [6, 5, 4];
    let data = (0..120).map(|i| (i * 13 % 700) as f32 - 300.0).collect();
    let mut v = Volume::new(data, dims, [0.75, 0.8, 2.0]);
    v.origin = [-3.0, 4.0, -50.0];
    v
}

fn multipart_body(boundary: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn series_ref(base: &str) -> SeriesRef {
    SeriesRef {
        base_url: DicomWebBase::parse(base).unwrap(),
        study_uid: DicomUid::parse("2.25.1001").unwrap(),
        series_uid: DicomUid::parse("2.25.55").unwrap(),
    }
}

#[test]
fn tokens_are_validated_and_never_printed() {
    assert!(matches!(
        BearerToken::new(SecretString::from("bad token\n")),
        Err(DicomWebError::InvalidToken)
    ));
    assert!(BearerToken::new(SecretString::from("")).is_err());
    let t = BearerToken::new(SecretString::from("abc.DEF-123_~+/=")).unwrap();
    assert_eq!(format!("{t:?}"), "BearerToken([REDACTED])");
    assert!(t.header().is_sensitive());
}

#[test]
fn uids_and_base_urls_are_validated() {
    assert!(DicomUid::parse("1.2.840.10008.5.1.4.1.1.2").is_ok());
    for bad in ["", "1..2", "1.2.a", "../etc", &"1".repeat(65)] {
        assert!(DicomUid::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        DicomWebBase::parse("https://PACS.example.org:443/dicom-web/")
            .unwrap()
            .as_str(),
        "https://pacs.example.org/dicom-web"
    );
    for bad in [
        "ftp://pacs/",
        "https://user:pw@pacs/",
        "https://pacs/dw?x=1",
        "not a url",
    ] {
        assert!(DicomWebBase::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_base_outside_the_allow_list_is_never_contacted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let client = client_for(&["https://pacs.example.org/dicom-web".into()]);
    let base = DicomWebBase::parse(&server.uri()).unwrap();
    let err = client.search_studies(&base, "P1").await.unwrap_err();
    assert!(matches!(err, DicomWebError::NotAllowed { .. }), "{err}");
    let err = client
        .retrieve_ct_volume(&series_ref(&server.uri()), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DicomWebError::NotAllowed { .. }), "{err}");
    assert!(client.allowed_base(&server.uri()).is_err());
    // `expect(0)` is verified when the server drops.
}

#[test]
fn the_loopback_keyword_allows_local_bases_only() {
    let client = client_for(&["loopback".into(), "https://pacs.example.org/dw".into()]);
    for ok in [
        "http://127.0.0.1:8042/dicom-web",
        "http://127.1.2.3/dw",
        "http://[::1]:9/dw",
        "http://LOCALHOST:8042/dicom-web",
        "https://pacs.example.org/dw/",
    ] {
        assert!(client.allowed_base(ok).is_ok(), "{ok}");
    }
    for refused in [
        "http://10.0.0.1/dicom-web",
        "http://localhost.example.org/dw",
        "https://pacs.example.org/other",
        "http://127.0.0.1.nip.io/dw",
    ] {
        assert!(
            matches!(
                client.allowed_base(refused),
                Err(DicomWebError::NotAllowed { .. })
            ),
            "{refused}"
        );
    }
    assert!(client_for(&[]).allowed_base("http://127.0.0.1/dw").is_err());
}

#[tokio::test]
async fn qido_searches_send_the_token_and_parse_dicom_json() {
    let server = MockServer::start().await;
    let base_url = format!("{}/dicom-web", server.uri());
    Mock::given(method("GET"))
        .and(path("/dicom-web/studies"))
        .and(query_param("PatientID", "P 1&2"))
        .and(header("authorization", "Bearer s3cret-token"))
        .and(header("accept", "application/dicom+json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"0020000D": {"vr": "UI", "Value": ["2.25.1001"]},
             "00080061": {"vr": "CS", "Value": ["CT"]}}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/dicom-web/studies/2.25.1001/series"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"0020000E": {"vr": "UI", "Value": ["2.25.55"]},
             "00080060": {"vr": "CS", "Value": ["CT"]}}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/dicom-web/studies/2.25.1001/series/2.25.55/instances",
        ))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let token = BearerToken::new(SecretString::from("s3cret-token")).unwrap();
    let client = client_for(std::slice::from_ref(&base_url)).with_bearer_token(token);
    assert!(!format!("{client:?}").contains("s3cret"));
    let base = client.allowed_base(&base_url).unwrap();
    let studies = client.search_studies(&base, "P 1&2").await.unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(studies[0].modalities, vec!["CT"]);
    let series = client
        .search_series(&base, &studies[0].study_uid)
        .await
        .unwrap();
    assert_eq!(series[0].series_uid.as_str(), "2.25.55");
    let instances = client
        .search_instances(&series_ref(&base_url))
        .await
        .unwrap();
    assert!(instances.is_empty());
}

#[tokio::test]
async fn http_errors_do_not_echo_the_patient_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let client = client_for(&[server.uri()]);
    let base = client.allowed_base(&server.uri()).unwrap();
    let err = client
        .search_studies(&base, "PATIENT-4711")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DicomWebError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("4711"));
    // A connection failure must not carry the URL with its query either.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let client = client_for(std::slice::from_ref(&closed));
    let base = client.allowed_base(&closed).unwrap();
    let err = client
        .search_studies(&base, "PATIENT-4711")
        .await
        .unwrap_err();
    assert!(matches!(err, DicomWebError::Http { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("4711"), "{err:?}");
}

#[tokio::test]
async fn wado_multipart_series_is_streamed_into_an_exact_volume() {
    let server = MockServer::start().await;
    let v = volume();
    let parts: Vec<Vec<u8>> = series_from_volume(&v, "2.25.55")
        .iter()
        .rev()
        .map(|s| s.to_bytes().unwrap())
        .collect();
    let boundary = "6f1e2d3c-boundary";
    Mock::given(method("GET"))
        .and(path("/studies/2.25.1001/series/2.25.55"))
        .and(header(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            multipart_body(boundary, &parts),
            &format!("multipart/related; type=\"application/dicom\"; boundary=\"{boundary}\""),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&[server.uri()]);
    let ct = client
        .retrieve_ct_volume(&series_ref(&server.uri()), AssembleOptions::default())
        .await
        .unwrap();
    assert_eq!(ct.volume.data, v.data);
    assert!(ct.volume.same_grid(&v));
    assert_eq!(ct.series_uid, "2.25.55");
}

#[tokio::test]
async fn a_corrupt_instance_is_reported_by_part_number() {
    let server = MockServer::start().await;
    let v = volume();
    let mut parts: Vec<Vec<u8>> = series_from_volume(&v, "2.25.55")
        .iter()
        .map(|s| s.to_bytes().unwrap())
        .collect();
    let half = parts[1].len() / 2;
    parts[1].truncate(half);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            multipart_body("b", &parts),
            "multipart/related; type=\"application/dicom\"; boundary=b",
        ))
        .mount(&server)
        .await;
    let client = client_for(&[server.uri()]);
    let err = client
        .retrieve_ct_volume(&series_ref(&server.uri()), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DicomWebError::Dicom(DicomError::Malformed { file, .. }) if file == "WADO-RS part 2"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_content_type_and_truncated_bodies_are_errors() {
    let server = MockServer::start().await;
    let part = series_from_volume(&volume(), "2.25.55")[0]
        .to_bytes()
        .unwrap();
    Mock::given(method("GET"))
        .and(path("/a/studies/2.25.1001/series/2.25.55"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(part.clone(), "application/dicom"))
        .mount(&server)
        .await;
    let mut cut = multipart_body("b", &[part]);
    cut.truncate(cut.len() - 6);
    Mock::given(method("GET"))
        .and(path("/b/studies/2.25.1001/series/2.25.55"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            cut,
            "multipart/related; type=\"application/dicom\"; boundary=b",
        ))
        .mount(&server)
        .await;
    let (a, b) = (format!("{}/a", server.uri()), format!("{}/b", server.uri()));
    let client = client_for(&[a.clone(), b.clone()]);
    let err = client
        .retrieve_ct_volume(&series_ref(&a), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DicomWebError::ContentType { .. }), "{err}");
    let err = client
        .retrieve_ct_volume(&series_ref(&b), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DicomWebError::Multipart(MultipartError::Truncated)),
        "{err}"
    );
}

#[tokio::test]
async fn the_overall_deadline_stops_a_slow_server() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let client = DicomWebClient::new(&DicomWebConfig {
        allowed_base_urls: vec![server.uri()],
        deadline_secs: 1,
        ..DicomWebConfig::default()
    })
    .unwrap();
    let base = client.allowed_base(&server.uri()).unwrap();
    let started = std::time::Instant::now();
    let err = client.search_studies(&base, "P1").await.unwrap_err();
    assert!(
        matches!(err, DicomWebError::Deadline { seconds: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_series_over_the_size_limit_is_refused() {
    let server = MockServer::start().await;
    let parts: Vec<Vec<u8>> = series_from_volume(&volume(), "2.25.55")
        .iter()
        .map(|s| s.to_bytes().unwrap())
        .collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            multipart_body("b", &parts),
            "multipart/related; type=\"application/dicom\"; boundary=b",
        ))
        .mount(&server)
        .await;
    let client = DicomWebClient::new(&DicomWebConfig {
        allowed_base_urls: vec![server.uri()],
        max_series_bytes: 1000,
        ..DicomWebConfig::default()
    })
    .unwrap();
    let err = client
        .retrieve_ct_volume(&series_ref(&server.uri()), AssembleOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DicomWebError::SeriesTooLarge { limit: 1000 }),
        "{err}"
    );
}
