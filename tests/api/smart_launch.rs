//! SMART App Launch 2.0 (EHR launch) of the review app, end to end against
//! a wiremock authorization server: `.well-known/smart-configuration`, the
//! authorize endpoint (only a redirect target: the test plays the browser),
//! a token endpoint that checks PKCE S256 for real and returns an id_token
//! signed RS256, and its JWKS.
//!
//! A successful launch lands on the prediction's page with a reviewer
//! session, and a verdict is stored with the reviewer's `fhirUser`. Refused
//! with a clear 4xx: an issuer not on the allow-list, a wrong state, a
//! missing PKCE verifier (no launch cookie), a token endpoint error, an
//! id_token with the wrong nonce; a session sees only its launch's patient.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oncohooks::auth::smart::SmartIssuer;
use oncohooks::store::AuditEventFilter;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{TestApp, fixture, spawn_app_with};
use crate::outputs::make_predictions;
use crate::support::db::Backend;

const CLIENT_ID: &str = "oncohooks-review";
const CODE: &str = "authorization-code-1";
const LAUNCH: &str = "ehr-launch-42";
const EHR_ACCESS_TOKEN: &str = "ehr-access-token-for-the-ehr-fhir-server";
const KID: &str = "test-rs384";

/// What the token endpoint checks and answers with.
#[derive(Clone, Default)]
struct Expected {
    challenge: String,
    nonce: String,
    redirect_uri: String,
}

#[derive(Clone)]
struct TokenEndpoint {
    issuer: String,
    expected: Arc<Mutex<Expected>>,
    app_context: Arc<Mutex<Option<String>>>,
    patient: String,
    /// Answer this instead (an error of the authorization server).
    fail: Option<(u16, Value)>,
    /// Put another nonce into the id_token.
    wrong_nonce: bool,
}

fn fhir_user(issuer: &str) -> String {
    format!("{issuer}/fhir/Practitioner/dr-ehr-42")
}

impl Respond for TokenEndpoint {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some((status, body)) = &self.fail {
            return ResponseTemplate::new(*status).set_body_json(body);
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let exp = self.expected.lock().unwrap().clone();
        let refuse = |why: &str| {
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": why}))
        };
        if form.get("grant_type").map(String::as_str) != Some("authorization_code")
            || form.get("code").map(String::as_str) != Some(CODE)
            || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || form.get("redirect_uri") != Some(&exp.redirect_uri)
        {
            return refuse("wrong grant, code, client or redirect_uri");
        }
        // RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge.
        let Some(verifier) = form.get("code_verifier") else {
            return refuse("code_verifier missing");
        };
        if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != exp.challenge {
            return refuse("PKCE verification failed");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let nonce = if self.wrong_nonce {
            "another-nonce".to_owned()
        } else {
            exp.nonce
        };
        let claims = json!({
            "iss": self.issuer, "sub": "dr-ehr-42", "aud": CLIENT_ID,
            "iat": now, "exp": now + 300, "nonce": nonce,
            "fhirUser": fhir_user(&self.issuer),
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.into());
        let key = EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/keys/test-rs384.pem"))
            .unwrap();
        let id_token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let mut body = json!({
            "access_token": EHR_ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600,
            "scope": "launch openid fhirUser user/RiskAssessment.read",
            "id_token": id_token, "patient": self.patient,
        });
        if let Some(ctx) = self.app_context.lock().unwrap().clone() {
            body["appContext"] = json!(ctx);
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

struct Ehr {
    server: MockServer,
    /// The FHIR base: the launch's `iss`.
    iss: String,
    token: TokenEndpoint,
}

async fn start_ehr(configure: impl FnOnce(&mut TokenEndpoint)) -> Ehr {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let iss = format!("{issuer}/fhir");
    Mock::given(method("GET"))
        .and(path("/fhir/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "fhirUser", "launch", "user/RiskAssessment.read"],
            "capabilities": ["launch-ehr", "client-public", "client-confidential-symmetric",
                             "sso-openid-connect", "context-ehr-patient", "permission-v2"]
        })))
        .mount(&server)
        .await;
    // RS256 on the test RSA key: the JWK without its `alg` (RS384), as EHRs
    // publish keys used for RS256.
    let mut jwks: Value =
        serde_json::from_str(include_str!("../../fixtures/keys/test-rs384-jwks.json")).unwrap();
    jwks["keys"][0].as_object_mut().unwrap().remove("alg");
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
        .mount(&server)
        .await;
    let mut token = TokenEndpoint {
        issuer,
        expected: Arc::default(),
        app_context: Arc::default(),
        patient: "cachexia-full".into(),
        fail: None,
        wrong_nonce: false,
    };
    configure(&mut token);
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token.clone())
        .mount(&server)
        .await;
    Ehr { server, iss, token }
}

async fn spawn_for(ehr: &Ehr) -> TestApp {
    let iss = ehr.iss.clone();
    spawn_app_with(Backend::Sqlite, move |s| {
        s.smart.issuers = vec![SmartIssuer {
            iss,
            client_id: CLIENT_ID.into(),
            client_secret_file: None,
            client_secret_env: None,
            grant: vec!["review.write".into()],
        }];
    })
    .await
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// `name=value` of a Set-Cookie line.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

struct Launched {
    authorize: HashMap<String, String>,
    cookie: String,
}

/// `GET /review/launch?iss=…&launch=…`; records what the token endpoint
/// must check.
async fn launch(app: &TestApp, ehr: &Ehr) -> Launched {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("iss", &ehr.iss)
        .append_pair("launch", LAUNCH)
        .finish();
    let resp = app
        .http
        .get(format!("{}/review/launch?{q}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{:?}", resp.text().await);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}{}",
            location.origin().ascii_serialization(),
            location.path()
        ),
        format!("{}/authorize", ehr.server.uri())
    );
    let authorize: HashMap<String, String> = location.query_pairs().into_owned().collect();
    let cookie = set_cookie(&resp, "oncohooks_launch").expect("a launch cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http in tests: {cookie}");
    *ehr.token.expected.lock().unwrap() = Expected {
        challenge: authorize["code_challenge"].clone(),
        nonce: authorize["nonce"].clone(),
        redirect_uri: authorize["redirect_uri"].clone(),
    };
    Launched {
        authorize,
        cookie: pair(&cookie),
    }
}

async fn callback(app: &TestApp, state: &str, cookie: Option<&str>) -> reqwest::Response {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", CODE)
        .append_pair("state", state)
        .finish();
    let mut r = app.http.get(format!("{}/review/callback?{q}", app.address));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    r.send().await.unwrap()
}

async fn token_requests(ehr: &Ehr) -> usize {
    ehr.server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/token")
        .count()
}

async fn error_of(resp: reqwest::Response) -> Value {
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

/// The card of a fresh prediction for the fixture patient: (prediction id,
/// card uuid, the smart link's appContext).
async fn prediction(app: &TestApp) -> (String, String, String) {
    let hook = make_predictions(app, 1).await.remove(0);
    let card = &hook["cards"][0];
    let smart = card["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "smart")
        .unwrap();
    let ctx = smart["appContext"].as_str().unwrap().to_owned();
    let id: Value = serde_json::from_str(&ctx).unwrap();
    (
        id["predictionId"].as_str().unwrap().to_owned(),
        card["uuid"].as_str().unwrap().to_owned(),
        ctx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_launch_lands_on_the_prediction_and_the_verdict_names_the_reviewer() {
    let ehr = start_ehr(|_| {}).await;
    let app = spawn_for(&ehr).await;
    let (id, card, ctx) = prediction(&app).await;
    *ehr.token.app_context.lock().unwrap() = Some(ctx);

    // 1. The EHR opens the launch URL: off to its authorize endpoint.
    let l = launch(&app, &ehr).await;
    let a = &l.authorize;
    assert_eq!(a["response_type"], "code");
    assert_eq!(a["client_id"], CLIENT_ID);
    assert_eq!(
        a["redirect_uri"],
        format!("{}/review/callback", app.address)
    );
    assert_eq!(a["launch"], LAUNCH);
    assert_eq!(a["aud"], ehr.iss);
    assert_eq!(a["code_challenge_method"], "S256");
    assert_eq!(a["code_challenge"].len(), 43);
    assert!(a["state"].len() >= 32);
    let scopes: Vec<&str> = a["scope"].split(' ').collect();
    for s in ["launch", "openid", "fhirUser", "user/RiskAssessment.read"] {
        assert!(scopes.contains(&s), "{scopes:?}");
    }

    // 2. The clinician signed in; the EHR sends the browser back.
    let resp = callback(&app, &a["state"], Some(&l.cookie)).await;
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["location"], format!("/review/{id}"));
    let session = set_cookie(&resp, "oncohooks_session").expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let cleared = set_cookie(&resp, "oncohooks_launch").expect("the launch cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The code was redeemed once, with the verifier (the endpoint checks it).
    assert_eq!(token_requests(&ehr).await, 1);
    // Our session holds who and which patient, never the EHR's token.
    let session = pair(&session);
    let payload = session.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], fhir_user(&ehr.token.issuer));
    assert_eq!(claims["patient"], "cachexia-full");
    assert!(!session.contains(EHR_ACCESS_TOKEN));
    assert!(!claims.to_string().contains("ehr-access-token"));

    // 3. The page, with the session cookie.
    let page = app
        .http
        .get(format!("{}/review/{id}", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&fhir_user(&ehr.token.issuer)), "viewer shown");
    assert!(
        html.contains("name=\"verdict\""),
        "the verdict form is offered"
    );

    // 4. A verdict, stored with the reviewer's identity.
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("card", &card)
        .append_pair("verdict", "disagree")
        .append_pair("comment", "weight loss explained by surgery")
        .finish();
    let saved = app
        .http
        .post(format!("{}/review/{id}/verdict", app.address))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303, "{:?}", saved.text().await);
    let feedback = app
        .db
        .store
        .feedback_for_card(card.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(feedback.len(), 1);
    let f = &feedback[0];
    assert_eq!(f.outcome, "overridden");
    let reason = f.override_reason.as_ref().unwrap();
    assert_eq!(reason["reviewer"], fhir_user(&ehr.token.issuer));
    assert_eq!(reason["source"], "review-app");
    assert_eq!(f.client_iss.as_deref(), Some(ehr.token.issuer.as_str()));

    // The trail: the launch, the view and the verdict, by the reviewer.
    let (events, _) = app
        .db
        .store
        .search_audit_events(
            &AuditEventFilter {
                agent_sub: Some(fhir_user(&ehr.token.issuer)),
                ..Default::default()
            },
            50,
            0,
        )
        .await
        .unwrap();
    let mut ops: Vec<&str> = events.iter().map(|e| e.operation.as_str()).collect();
    ops.sort_unstable();
    assert_eq!(ops, ["review.launch", "review.read", "review.verdict"]);

    // 5. The session is the launch's patient's only.
    let other = app
        .post_hook("cachexia-risk", &fixture("hooks/stable-full.json"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let other_id = serde_json::from_str::<Value>(
        other["cards"][0]["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["type"] == "smart")
            .unwrap()["appContext"]
            .as_str()
            .unwrap(),
    )
    .unwrap()["predictionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = app
        .http
        .get(format!("{}/review/{other_id}", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(error_of(refused).await["error"], "forbidden");
    // And it grants nothing beyond the review app.
    let dash = app
        .http
        .get(format!("{}/dashboard", app.address))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert!(
        dash.status() == 401 || dash.status() == 403,
        "{}",
        dash.status()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_not_on_the_allow_list_is_refused_without_a_request() {
    let ehr = start_ehr(|_| {}).await;
    let app = spawn_for(&ehr).await;
    let stranger = MockServer::start().await;
    for iss in [
        "https://evil.example.org/fhir".to_owned(),
        format!("{}/fhir", stranger.uri()),
        format!("{}/other-fhir", ehr.server.uri()),
    ] {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("iss", &iss)
            .append_pair("launch", LAUNCH)
            .finish();
        let resp = app
            .http
            .get(format!("{}/review/launch?{q}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{iss}");
        assert!(set_cookie(&resp, "oncohooks_launch").is_none());
        let body = error_of(resp).await;
        assert_eq!(body["error"], "untrusted_issuer");
        assert_eq!(body["field"], "iss");
    }
    assert!(stranger.received_requests().await.unwrap().is_empty());
    assert!(ehr.server.received_requests().await.unwrap().is_empty());
    // Without `launch` an allowed issuer is a 400 naming it.
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("iss", &ehr.iss)
        .finish();
    let resp = app
        .http
        .get(format!("{}/review/launch?{q}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["field"], "launch");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_state_is_refused_before_the_code_is_redeemed() {
    let ehr = start_ehr(|_| {}).await;
    let app = spawn_for(&ehr).await;
    let l = launch(&app, &ehr).await;
    let resp = callback(&app, "forged-state", Some(&l.cookie)).await;
    assert_eq!(resp.status(), 400);
    assert!(set_cookie(&resp, "oncohooks_session").is_none());
    let body = error_of(resp).await;
    assert_eq!(body["error"], "state_mismatch");
    assert_eq!(body["field"], "state");
    assert_eq!(token_requests(&ehr).await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_its_pkce_verifier_is_refused() {
    let ehr = start_ehr(|_| {}).await;
    let app = spawn_for(&ehr).await;
    let l = launch(&app, &ehr).await;
    // No launch cookie: nothing to derive the code_verifier from.
    let resp = callback(&app, &l.authorize["state"], None).await;
    assert_eq!(resp.status(), 400);
    let body = error_of(resp).await;
    assert_eq!(body["error"], "no_launch_in_progress");
    assert!(
        body["message"].as_str().unwrap().contains("code_verifier"),
        "{body}"
    );
    // An altered launch cookie is no better.
    let mut forged = l.cookie.clone().into_bytes();
    let n = forged.len();
    forged[n - 2] = if forged[n - 2] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let resp = callback(&app, &l.authorize["state"], Some(&forged)).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_of(resp).await["error"], "no_launch_in_progress");
    assert_eq!(token_requests(&ehr).await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_error_is_refused_with_its_reason() {
    let ehr = start_ehr(|t| {
        t.fail = Some((
            400,
            json!({"error": "invalid_grant", "error_description": "authorization code expired"}),
        ));
    })
    .await;
    let app = spawn_for(&ehr).await;
    let l = launch(&app, &ehr).await;
    let resp = callback(&app, &l.authorize["state"], Some(&l.cookie)).await;
    assert_eq!(resp.status(), 400);
    assert!(set_cookie(&resp, "oncohooks_session").is_none());
    let body = error_of(resp).await;
    assert_eq!(body["error"], "token_exchange_refused");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("invalid_grant") && message.contains("authorization code expired"),
        "{message}"
    );
    assert_eq!(token_requests(&ehr).await, 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_launch_is_refused() {
    let ehr = start_ehr(|t| t.wrong_nonce = true).await;
    let app = spawn_for(&ehr).await;
    let (_, _, ctx) = prediction(&app).await;
    *ehr.token.app_context.lock().unwrap() = Some(ctx);
    let l = launch(&app, &ehr).await;
    let resp = callback(&app, &l.authorize["state"], Some(&l.cookie)).await;
    assert_eq!(resp.status(), 401);
    assert!(set_cookie(&resp, "oncohooks_session").is_none());
    let body = error_of(resp).await;
    assert_eq!(body["error"], "invalid_id_token");
    assert!(
        body["message"].as_str().unwrap().contains("nonce"),
        "{body}"
    );
    app.cleanup().await;
}
