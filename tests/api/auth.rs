//! CDS client authentication over HTTP (CDS Hooks 2.0 §"Trusting CDS Clients").

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, fixture, fixture_path, spawn_app};

const KID: &str = "oncohooks-demo-es384-1";
const PATH: &str = "/cds-services/cachexia-risk";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(app: &TestApp) -> Value {
    json!({
        "iss": oncohooks::auth::DEMO_ISSUER,
        "sub": "test-ehr",
        "aud": format!("{}{PATH}", app.address),
        "iat": now(),
        "exp": now() + 120,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn sign(header: Header, claims: &Value) -> String {
    let pem = std::fs::read(fixture_path("keys/demo-es384.pem")).unwrap();
    encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

fn es384() -> Header {
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(KID.into());
    h.typ = Some("JWT".into());
    h
}

async fn status_with(app: &TestApp, token: Option<&str>) -> u16 {
    app.post_hook_with_token("cachexia-risk", &fixture("hooks/cachexia-full.json"), token)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_valid_es384_token_is_accepted() {
    let app = spawn_app().await;
    let t = sign(es384(), &claims(&app));
    assert_eq!(status_with(&app, Some(&t)).await, 200);
    app.cleanup().await;
}

#[tokio::test]
async fn missing_token_is_a_bare_401() {
    let app = spawn_app().await;
    let resp = app
        .post_hook_with_token("cachexia-risk", &fixture("hooks/cachexia-full.json"), None)
        .await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "unauthorized"}),
        "no reason is returned"
    );
    // Discovery and feedback are protected too.
    let r = app
        .http
        .get(format!("{}/cds-services", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(format!("{}{PATH}/feedback", app.address))
        .json(&json!({"feedback": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.cleanup().await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    let app = spawn_app().await;
    let mut c = claims(&app);
    c["iat"] = json!(now() - 600);
    c["exp"] = json!(now() - 400);
    assert_eq!(status_with(&app, Some(&sign(es384(), &c))).await, 401);
    app.cleanup().await;
}

#[tokio::test]
async fn token_for_another_audience_is_refused() {
    let app = spawn_app().await;
    let mut c = claims(&app);
    c["aud"] = json!(format!("{}/cds-services/other-service", app.address));
    assert_eq!(status_with(&app, Some(&sign(es384(), &c))).await, 401);
    app.cleanup().await;
}

#[tokio::test]
async fn replayed_jti_is_refused() {
    let app = spawn_app().await;
    let t = sign(es384(), &claims(&app));
    assert_eq!(status_with(&app, Some(&t)).await, 200);
    assert_eq!(status_with(&app, Some(&t)).await, 401);
    app.cleanup().await;
}

#[tokio::test]
async fn unlisted_jku_is_never_fetched() {
    let app = spawn_app().await;
    let rogue = wiremock::MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("keys/demo-jwks.json")))
        .expect(0)
        .mount(&rogue)
        .await;
    let mut h = es384();
    h.jku = Some(format!("{}/jwks.json", rogue.uri()));
    assert_eq!(status_with(&app, Some(&sign(h, &claims(&app)))).await, 401);
    rogue.verify().await;
    app.cleanup().await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = spawn_app().await;
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims(&app).to_string());
    let token = format!("{header}.{payload}.");
    assert_eq!(status_with(&app, Some(&token)).await, 401);
    app.cleanup().await;
}

#[tokio::test]
async fn hmac_token_is_refused() {
    let app = spawn_app().await;
    let secret = std::fs::read(fixture_path("keys/test-hmac-secret.txt")).unwrap();
    let mut h = Header::new(Algorithm::HS384);
    h.kid = Some(KID.into());
    let t = encode(&h, &claims(&app), &EncodingKey::from_secret(&secret)).unwrap();
    assert_eq!(status_with(&app, Some(&t)).await, 401);
    app.cleanup().await;
}
