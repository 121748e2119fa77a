//! `spawn_app()`: the real server on port 0 with a fresh database, a
//! throwaway spool folder, and a wiremock standing in for the EHR's FHIR server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oncohooks::Application;
use oncohooks::config::Settings;
use oncohooks::startup::ServiceOverrides;
use serde_json::Value;
use wiremock::MockServer;

use crate::support::db::{Backend, TestDb};

pub const INDEX_DATE: &str = "2026-11-20";
pub const FHIR_TOKEN: &str = "demo-access-token-not-a-secret";

pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub fhir: MockServer,
    pub http: reqwest::Client,
    pub settings: Settings,
    pub spool_dir: tempfile::TempDir,
}

pub fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

pub fn fixture(rel: &str) -> Value {
    let text = std::fs::read_to_string(fixture_path(rel))
        .unwrap_or_else(|e| panic!("reading fixture {rel}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A hook fixture whose `fhirServer` points at this test's FHIR double.
pub fn hook_for(app: &TestApp, rel: &str) -> Value {
    let mut h = fixture(rel);
    if h.get("fhirServer").is_some() {
        h["fhirServer"] = Value::String(format!("{}/fhir", app.fhir.uri()));
    }
    h
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_overrides(backend, configure, ServiceOverrides::default()).await
}

/// [`spawn_app_with`] with service overrides (a test classifier).
pub async fn spawn_app_with_overrides(
    backend: Backend,
    configure: impl FnOnce(&mut Settings),
    overrides: ServiceOverrides,
) -> TestApp {
    let db = TestDb::new(backend).await;
    let fhir = MockServer::start().await;
    let spool_dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    settings.server.bind = "127.0.0.1:0".into();
    settings.database.url = db.url().to_owned().into();
    settings.database.spool_dir = spool_dir.path().to_owned();
    settings.database.spool_replay_interval_seconds = 1;
    settings.services.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks");
    settings.scoring.index_date = Some(INDEX_DATE.parse().unwrap());
    settings.server.workers = Some(2);
    configure(&mut settings);

    let app = Application::build_with(settings.clone(), overrides)
        .await
        .expect("building the application");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        db,
        fhir,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        settings,
        spool_dir,
    }
}

impl TestApp {
    /// A fresh demo-EHR token whose `aud` is the URL being called.
    pub fn token_for(&self, path: &str) -> String {
        oncohooks::auth::dev_token(
            &self.settings.auth,
            &format!("{}{}", self.address, path),
            Duration::from_secs(120),
        )
        .unwrap()
    }

    pub async fn discovery(&self) -> reqwest::Response {
        self.http
            .get(format!("{}/cds-services", self.address))
            .bearer_auth(self.token_for("/cds-services"))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_hook(&self, service: &str, body: &Value) -> reqwest::Response {
        let path = format!("/cds-services/{service}");
        self.post_hook_with_token(service, body, Some(&self.token_for(&path)))
            .await
    }

    pub async fn post_hook_with_token(
        &self,
        service: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/cds-services/{service}", self.address))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_feedback(&self, service: &str, body: &Value) -> reqwest::Response {
        let path = format!("/cds-services/{service}/feedback");
        self.http
            .post(format!("{}{path}", self.address))
            .bearer_auth(self.token_for(&path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Wait until the spool folder holds no pending entries (replayer ran).
    pub async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..100 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    pub async fn cleanup(self) {
        self.db.cleanup().await;
    }
}
