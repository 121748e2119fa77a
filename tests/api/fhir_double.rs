//! The EHR's FHIR server, played by wiremock with the `partial-prefetch`
//! patient's data from `fixtures/fhir/`.

use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{FHIR_TOKEN, TestApp, fixture};

fn fhir_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/fhir+json")
        .set_body_json(body)
}

/// Serve the patient's resources; every route requires the bearer token from
/// `fhirAuthorization` (a request without it gets wiremock's 404).
pub async fn mount_patient(app: &TestApp, delay: Option<Duration>) {
    let base = format!("{}/fhir", app.fhir.uri());
    let auth = format!("Bearer {FHIR_TOKEN}");
    let respond = |body: Value| {
        let r = fhir_json(body);
        match delay {
            Some(d) => r.set_delay(d),
            None => r,
        }
    };
    let dir = "fhir/partial-prefetch";
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/partial-prefetch"))
        .and(header("authorization", auth.as_str()))
        .respond_with(respond(fixture(&format!("{dir}/Patient.json"))))
        .mount(&app.fhir)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Condition"))
        .and(query_param("patient", "partial-prefetch"))
        .and(header("authorization", auth.as_str()))
        .respond_with(respond(fixture(&format!("{dir}/Condition.json"))))
        .mount(&app.fhir)
        .await;
    // Two pages: the first links to the second (Bundle.link[next]).
    let mut page1 = fixture(&format!("{dir}/Observation-page1.json"));
    page1["link"][1]["url"] = Value::String(format!("{base}/Observation?_getpages=t1&page=2"));
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .and(query_param("page", "2"))
        .and(header("authorization", auth.as_str()))
        .respond_with(respond(fixture(&format!("{dir}/Observation-page2.json"))))
        .with_priority(1)
        .mount(&app.fhir)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .and(query_param("patient", "partial-prefetch"))
        .and(header("authorization", auth.as_str()))
        .respond_with(respond(page1))
        .with_priority(2)
        .mount(&app.fhir)
        .await;
    for rt in ["DocumentReference", "DiagnosticReport", "ImagingStudy"] {
        Mock::given(method("GET"))
            .and(path(format!("/fhir/{rt}")))
            .and(query_param("patient", "partial-prefetch"))
            .and(header("authorization", auth.as_str()))
            .respond_with(respond(fixture(&format!("{dir}/{rt}.json"))))
            .mount(&app.fhir)
            .await;
    }
}

/// Requests the FHIR double received for a resource path.
pub async fn requests_to(app: &TestApp, path_prefix: &str) -> Vec<wiremock::Request> {
    app.fhir
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with(path_prefix))
        .collect()
}
