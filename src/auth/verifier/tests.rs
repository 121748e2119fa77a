//! Behaviour of [`ClientVerifier`]: what it accepts, what it refuses and why,
//! and which HTTP requests it makes (wiremock stands in for EHR JWKS URLs).

use super::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ISS: &str = "https://ehr.example.org";
const AUD: &str = "https://cds.example.org/cds-services/cachexia";

const OTHER_PEM: &str = include_str!("../../../fixtures/keys/test-other-es384.pem");
const OTHER_JWKS: &str = include_str!("../../../fixtures/keys/test-other-jwks.json");
const OTHER_KID: &str = "test-other-es384";
const RS_PEM: &str = include_str!("../../../fixtures/keys/test-rs384.pem");
const RS_JWKS: &str = include_str!("../../../fixtures/keys/test-rs384-jwks.json");
const RS_KID: &str = "test-rs384";
const P256_PEM: &str = include_str!("../../../fixtures/keys/test-p256.pem");
const P256_JWKS: &str = include_str!("../../../fixtures/keys/test-p256-jwks.json");
const P256_KID: &str = "test-p256";
const DEMO_PEM: &str = include_str!("../../../fixtures/keys/demo-es384.pem");
const HMAC_SECRET: &str = include_str!("../../../fixtures/keys/test-hmac-secret.txt");
const SPEC_EXAMPLE: &str = include_str!("../../../fixtures/keys/cds-hooks-spec-example.json");

// ---------- helpers ----------

fn jwks(json: &str) -> Value {
    serde_json::from_str(json).unwrap()
}

/// One JWK Set holding the other-ES384, RS384 and P-256 test keys.
fn all_test_keys() -> Value {
    let keys: Vec<Value> = [OTHER_JWKS, RS_JWKS, P256_JWKS]
        .iter()
        .flat_map(|j| jwks(j)["keys"].as_array().unwrap().clone())
        .collect();
    json!({ "keys": keys })
}

fn inline_issuer(iss: &str, jwks: Value) -> TrustedIssuer {
    TrustedIssuer {
        iss: iss.to_owned(),
        jwks: Some(jwks),
        ..TrustedIssuer::default()
    }
}

fn url_issuer(iss: &str, url: String) -> TrustedIssuer {
    TrustedIssuer {
        iss: iss.to_owned(),
        jwks_url: Some(url),
        ..TrustedIssuer::default()
    }
}

fn settings_with(issuers: Vec<TrustedIssuer>) -> AuthSettings {
    AuthSettings {
        trusted_issuers: issuers,
        ..AuthSettings::default()
    }
}

fn inline_verifier() -> ClientVerifier {
    verifier(&settings_with(vec![inline_issuer(ISS, all_test_keys())]))
}

fn verifier(settings: &AuthSettings) -> ClientVerifier {
    ClientVerifier::new(settings, reqwest::Client::new()).expect("valid settings")
}

fn now() -> i64 {
    unix_now()
}

/// Valid claims for [`ISS`] → [`AUD`], two minutes long, fresh jti.
fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "sub": "ehr-backend",
        "aud": AUD,
        "iat": now,
        "exp": now + 120,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Sign exactly this header and payload with `key` using `alg`, whatever the
/// header claims (so tests can lie in the header).
fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

fn other_key() -> EncodingKey {
    EncodingKey::from_ec_pem(OTHER_PEM.as_bytes()).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RS_PEM.as_bytes()).unwrap()
}

fn es384_header(kid: &str) -> Value {
    json!({ "alg": "ES384", "typ": "JWT", "kid": kid })
}

/// A correctly signed ES384 token with the other-ES384 key.
fn es384(claims: &Value) -> String {
    sign(
        &es384_header(OTHER_KID),
        claims,
        &other_key(),
        Algorithm::ES384,
    )
}

async fn refused(verifier: &ClientVerifier, token: &str) -> AuthError {
    match verifier.verify(Some(token), &[AUD]).await {
        Ok(client) => panic!("token was accepted: {client:?}"),
        Err(err) => err,
    }
}

async fn accepted(verifier: &ClientVerifier, token: &str) -> VerifiedClient {
    match verifier.verify(Some(token), &[AUD]).await {
        Ok(CdsClient::Verified(client)) => client,
        other => panic!("expected a verified client, got {other:?}"),
    }
}

// ---------- accepted tokens ----------

#[tokio::test]
async fn es384_token_with_inline_key_is_accepted() {
    let mut claims = claims();
    claims["tenant"] = json!("hospital-a");
    let client = accepted(&inline_verifier(), &es384(&claims)).await;
    assert_eq!(client.iss, ISS);
    assert_eq!(client.sub.as_deref(), Some("ehr-backend"));
    assert_eq!(client.jti, claims["jti"].as_str().unwrap());
    assert_eq!(client.tenant.as_deref(), Some("hospital-a"));
    assert_eq!(client.kid, OTHER_KID);
}

#[tokio::test]
async fn rs384_token_is_accepted() {
    let header = json!({ "alg": "RS384", "typ": "JWT", "kid": RS_KID });
    let token = sign(&header, &claims(), &rsa_key(), Algorithm::RS384);
    let client = accepted(&inline_verifier(), &token).await;
    assert_eq!(client.kid, RS_KID);
}

#[tokio::test]
async fn token_without_typ_and_without_sub_is_accepted() {
    // typ is checked only if present; sub is not required by CDS Hooks 2.0.
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("sub");
    let header = json!({ "alg": "ES384", "kid": OTHER_KID });
    let token = sign(&header, &claims, &other_key(), Algorithm::ES384);
    let client = accepted(&inline_verifier(), &token).await;
    assert_eq!(client.sub, None);
}

#[tokio::test]
async fn aud_as_array_containing_the_endpoint_is_accepted() {
    let mut claims = claims();
    claims["aud"] = json!(["https://cds.example.org/cds-services", AUD]);
    accepted(&inline_verifier(), &es384(&claims)).await;
}

#[tokio::test]
async fn token_expired_within_the_clock_skew_is_accepted() {
    let now = now();
    let mut claims = claims();
    claims["iat"] = json!(now - 150);
    claims["exp"] = json!(now - 30);
    accepted(&inline_verifier(), &es384(&claims)).await;
}

// ---------- time and lifetime ----------

#[tokio::test]
async fn expired_token_is_refused() {
    let now = now();
    let mut claims = claims();
    claims["iat"] = json!(now - 240);
    claims["exp"] = json!(now - 120);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::Expired { .. }), "{err:?}");
}

#[tokio::test]
async fn token_issued_in_the_future_is_refused() {
    let now = now();
    let mut claims = claims();
    claims["iat"] = json!(now + 300);
    claims["exp"] = json!(now + 400);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::IssuedInFuture { .. }), "{err:?}");
}

#[tokio::test]
async fn token_not_yet_valid_is_refused() {
    let mut claims = claims();
    claims["nbf"] = json!(now() + 600);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::NotYetValid { .. }), "{err:?}");
}

#[tokio::test]
async fn lifetime_longer_than_five_minutes_plus_skew_is_refused() {
    let now = now();
    let mut claims = claims();
    claims["exp"] = json!(now + 3600);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(
        matches!(
            err,
            AuthError::BadLifetime {
                lifetime: 3600,
                max: 360
            }
        ),
        "{err:?}"
    );
    // exp before iat is not a lifetime either.
    claims["iat"] = json!(now + 10);
    claims["exp"] = json!(now + 5);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::BadLifetime { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_required_claims_are_named() {
    for claim in ["exp", "iat", "jti", "aud", "iss"] {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(claim);
        let err = refused(&inline_verifier(), &es384(&claims)).await;
        assert!(
            matches!(err, AuthError::MissingClaim(name) if name == claim),
            "{claim}: {err:?}"
        );
    }
}

#[tokio::test]
async fn non_integer_exp_is_malformed() {
    let mut claims = claims();
    claims["exp"] = json!("tomorrow");
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(
        matches!(err, AuthError::Malformed(ref m) if m.contains("exp")),
        "{err:?}"
    );
}

// ---------- audience ----------

#[tokio::test]
async fn wrong_audience_is_refused() {
    let mut claims = claims();
    claims["aud"] = json!("https://cds.example.org/cds-services/lung-nodule");
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::WrongAudience { .. }), "{err:?}");

    claims["aud"] = json!(["https://other.example.org", "https://cds.example.org"]);
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::WrongAudience { .. }), "{err:?}");
}

#[tokio::test]
async fn empty_expected_audience_accepts_nothing() {
    let err = inline_verifier()
        .verify(Some(&es384(&claims())), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::WrongAudience { .. }), "{err:?}");
}

// ---------- replay ----------

#[tokio::test]
async fn replayed_jti_is_refused_the_second_time() {
    let verifier = inline_verifier();
    let token = es384(&claims());
    accepted(&verifier, &token).await;
    let err = refused(&verifier, &token).await;
    assert!(matches!(err, AuthError::Replayed { .. }), "{err:?}");
    // The replay cache is shared by clones (one per actix worker).
    let err = refused(&verifier.clone(), &token).await;
    assert!(matches!(err, AuthError::Replayed { .. }), "{err:?}");
}

#[tokio::test]
async fn same_jti_from_two_issuers_is_not_a_replay() {
    const ISS2: &str = "https://second-ehr.example.org";
    let verifier = verifier(&settings_with(vec![
        inline_issuer(ISS, jwks(OTHER_JWKS)),
        inline_issuer(ISS2, jwks(OTHER_JWKS)),
    ]));
    let claims = claims();
    let mut claims2 = claims.clone();
    claims2["iss"] = json!(ISS2);
    accepted(&verifier, &es384(&claims)).await;
    accepted(&verifier, &es384(&claims2)).await;
}

#[tokio::test]
async fn refused_token_does_not_burn_its_jti() {
    // A token refused for its tenant must not have been recorded: otherwise
    // anyone could pre-burn jtis. Here the same jti then passes elsewhere.
    let mut with_tenant = inline_issuer(ISS, jwks(OTHER_JWKS));
    with_tenant.tenants = vec!["hospital-a".into()];
    let verifier = verifier(&settings_with(vec![with_tenant]));
    let mut claims = claims();
    claims["tenant"] = json!("hospital-b");
    let err = refused(&verifier, &es384(&claims)).await;
    assert!(matches!(err, AuthError::TenantNotAllowed { .. }), "{err:?}");
    claims["tenant"] = json!("hospital-a");
    accepted(&verifier, &es384(&claims)).await;
}

// ---------- algorithms and keys ----------

#[tokio::test]
async fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE", ""] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": OTHER_KID });
        let token = format!("{}.{}.", b64_json(&header), b64_json(&claims()));
        let err = refused(&inline_verifier(), &token).await;
        assert!(
            matches!(err, AuthError::DisallowedAlgorithm { .. }),
            "{alg}: {err:?}"
        );
    }
    let header = json!({ "typ": "JWT", "kid": OTHER_KID });
    let token = format!("{}.{}.", b64_json(&header), b64_json(&claims()));
    let err = refused(&inline_verifier(), &token).await;
    assert!(
        matches!(err, AuthError::DisallowedAlgorithm { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn hmac_tokens_are_refused() {
    let secret = EncodingKey::from_secret(HMAC_SECRET.trim().as_bytes());
    // Classic key confusion: the public JWK text used as the HMAC secret.
    let public_as_secret = EncodingKey::from_secret(RS_JWKS.as_bytes());
    for (alg, name, key) in [
        (Algorithm::HS256, "HS256", &secret),
        (Algorithm::HS384, "HS384", &secret),
        (Algorithm::HS384, "HS384", &public_as_secret),
    ] {
        let header = json!({ "alg": name, "typ": "JWT", "kid": RS_KID });
        let token = sign(&header, &claims(), key, alg);
        let err = refused(&inline_verifier(), &token).await;
        assert!(
            matches!(err, AuthError::DisallowedAlgorithm { ref alg } if alg == name),
            "{name}: {err:?}"
        );
    }
}

#[tokio::test]
async fn other_asymmetric_algorithms_are_refused() {
    // ES256 is a fine algorithm, but not one CDS Hooks recommends; we accept
    // only ES384/RS384.
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": P256_KID });
    let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
    let token = sign(&header, &claims(), &key, Algorithm::ES256);
    let err = refused(&inline_verifier(), &token).await;
    assert!(
        matches!(err, AuthError::DisallowedAlgorithm { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn es384_token_whose_kid_is_an_rsa_key_is_refused() {
    let token = sign(
        &es384_header(RS_KID),
        &claims(),
        &other_key(),
        Algorithm::ES384,
    );
    let err = refused(&inline_verifier(), &token).await;
    assert!(
        matches!(err, AuthError::KeyAlgorithmMismatch { ref kid, .. } if kid == RS_KID),
        "{err:?}"
    );
}

#[tokio::test]
async fn rs384_token_whose_kid_is_an_ec_key_is_refused() {
    let header = json!({ "alg": "RS384", "typ": "JWT", "kid": OTHER_KID });
    let token = sign(&header, &claims(), &rsa_key(), Algorithm::RS384);
    let err = refused(&inline_verifier(), &token).await;
    assert!(
        matches!(err, AuthError::KeyAlgorithmMismatch { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn es384_token_on_a_p256_key_is_refused() {
    // The header claims ES384; the key is P-256 (signed with ES256 so the
    // signature is genuine for that key). The curve check must catch it.
    let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
    let token = sign(&es384_header(P256_KID), &claims(), &key, Algorithm::ES256);
    let err = refused(&inline_verifier(), &token).await;
    assert!(
        matches!(err, AuthError::KeyAlgorithmMismatch { ref reason, .. } if reason.contains("P-256")),
        "{err:?}"
    );
}

#[tokio::test]
async fn jwk_alg_different_from_header_alg_is_refused() {
    let mut rs = jwks(RS_JWKS);
    rs["keys"][0]["alg"] = json!("RS256");
    let verifier = verifier(&settings_with(vec![inline_issuer(ISS, rs)]));
    let header = json!({ "alg": "RS384", "typ": "JWT", "kid": RS_KID });
    let token = sign(&header, &claims(), &rsa_key(), Algorithm::RS384);
    let err = refused(&verifier, &token).await;
    assert!(
        matches!(err, AuthError::KeyAlgorithmMismatch { ref reason, .. } if reason.contains("RS256")),
        "{err:?}"
    );
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    // Signed with the demo key but naming the other key's kid.
    let demo = EncodingKey::from_ec_pem(DEMO_PEM.as_bytes()).unwrap();
    let token = sign(&es384_header(OTHER_KID), &claims(), &demo, Algorithm::ES384);
    let err = refused(&inline_verifier(), &token).await;
    assert!(matches!(err, AuthError::BadSignature { .. }), "{err:?}");
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let token = es384(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&forged), parts[2]);
    let err = refused(&inline_verifier(), &tampered).await;
    assert!(matches!(err, AuthError::BadSignature { .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let token = sign(
        &es384_header("no-such-kid"),
        &claims(),
        &other_key(),
        Algorithm::ES384,
    );
    let err = refused(&inline_verifier(), &token).await;
    assert!(matches!(err, AuthError::UnknownKid { .. }), "{err:?}");
}

#[tokio::test]
async fn header_rules_are_enforced() {
    let verifier = inline_verifier();
    let cases = [
        (json!({ "alg": "ES384", "typ": "JWT" }), "kid"),
        (json!({ "alg": "ES384", "typ": "JWT", "kid": "" }), "kid"),
        (
            json!({ "alg": "ES384", "typ": "JOSE+JSON", "kid": OTHER_KID }),
            "typ",
        ),
        (
            json!({ "alg": "ES384", "kid": OTHER_KID, "crit": ["b64"], "b64": false }),
            "crit",
        ),
    ];
    for (header, rule) in cases {
        let token = sign(&header, &claims(), &other_key(), Algorithm::ES384);
        let err = refused(&verifier, &token).await;
        let ok = match rule {
            "kid" => matches!(err, AuthError::MissingKid),
            "typ" => matches!(err, AuthError::WrongType { .. }),
            _ => matches!(err, AuthError::UnsupportedCritical(_)),
        };
        assert!(ok, "{rule}: {err:?}");
    }
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_echoing_them() {
    let verifier = inline_verifier();
    let secret_looking = "eyJhbGciOiJFUzM4NCJ9.c2VjcmV0LXBheWxvYWQ";
    for token in [
        "",
        "not-a-jwt",
        secret_looking,
        "a.b.c.d.e",
        "!!!.???.###",
        &"A".repeat(20_000),
    ] {
        let err = refused(&verifier, token).await;
        assert!(
            matches!(
                err,
                AuthError::Malformed(_) | AuthError::TokenTooLarge { .. }
            ),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("c2VjcmV0"), "token echoed: {text}");
    }
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let verifier = inline_verifier();
    let token = es384(&claims());
    accepted(&verifier, &token).await;
    let err = refused(&verifier, &token).await; // replayed
    let signature = token.rsplit('.').next().unwrap();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(signature) && !text.contains(&token),
        "{text}"
    );
}

// ---------- issuers and tenants ----------

#[tokio::test]
async fn untrusted_issuer_is_refused() {
    let mut claims = claims();
    claims["iss"] = json!("https://evil.example.com");
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(
        matches!(err, AuthError::UntrustedIssuer { ref iss } if iss == "https://evil.example.com"),
        "{err:?}"
    );
    // The trailing slash matters: iss is compared exactly.
    let mut claims = self::claims();
    claims["iss"] = json!(format!("{ISS}/"));
    let err = refused(&inline_verifier(), &es384(&claims)).await;
    assert!(matches!(err, AuthError::UntrustedIssuer { .. }), "{err:?}");
}

#[tokio::test]
async fn tenant_outside_the_allow_list_is_refused() {
    let mut issuer = inline_issuer(ISS, jwks(OTHER_JWKS));
    issuer.tenants = vec!["hospital-a".into(), "hospital-b".into()];
    let verifier = verifier(&settings_with(vec![issuer]));

    let mut claims = claims();
    claims["tenant"] = json!("hospital-b");
    let client = accepted(&verifier, &es384(&claims)).await;
    assert_eq!(client.tenant.as_deref(), Some("hospital-b"));

    let mut claims = self::claims();
    claims["tenant"] = json!("hospital-z");
    let err = refused(&verifier, &es384(&claims)).await;
    assert!(matches!(err, AuthError::TenantNotAllowed { .. }), "{err:?}");

    // With an allow-list, a token without tenant is refused too.
    let err = refused(&verifier, &es384(&self::claims())).await;
    assert!(
        matches!(err, AuthError::TenantNotAllowed { tenant: None, .. }),
        "{err:?}"
    );
}

// ---------- missing token ----------

#[tokio::test]
async fn missing_token_is_refused_when_required() {
    let err = inline_verifier().verify(None, &[AUD]).await.unwrap_err();
    assert!(matches!(err, AuthError::MissingToken), "{err:?}");
}

#[tokio::test]
async fn missing_token_is_anonymous_when_not_required_but_bad_tokens_still_fail() {
    let mut settings = settings_with(vec![inline_issuer(ISS, all_test_keys())]);
    settings.required = false;
    let verifier = verifier(&settings);
    assert_eq!(
        verifier.verify(None, &[AUD]).await.unwrap(),
        CdsClient::Anonymous
    );

    let mut claims = claims();
    claims["exp"] = json!(now() - 3600);
    claims["iat"] = json!(now() - 3700);
    let err = refused(&verifier, &es384(&claims)).await;
    assert!(matches!(err, AuthError::Expired { .. }), "{err:?}");
    accepted(&verifier, &es384(&self::claims())).await;
}

#[test]
fn bearer_token_is_extracted_from_the_authorization_header() {
    assert_eq!(bearer_token("Bearer abc.def.ghi").unwrap(), "abc.def.ghi");
    assert_eq!(bearer_token("bearer   abc ").unwrap(), "abc");
    assert!(matches!(
        bearer_token("Basic dXNlcjpwdw=="),
        Err(AuthError::NotBearer)
    ));
    assert!(matches!(bearer_token("Bearer"), Err(AuthError::NotBearer)));
    assert!(matches!(
        bearer_token("Bearer   "),
        Err(AuthError::NotBearer | AuthError::Malformed(_))
    ));
    assert!(matches!(
        bearer_token("abc.def.ghi"),
        Err(AuthError::NotBearer)
    ));
}

// ---------- JWKS over HTTP ----------

async fn jwks_server(body: &str, expected_fetches: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(body)))
        .expect(expected_fetches)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn jwks_url_is_fetched_once_and_cached() {
    let server = jwks_server(OTHER_JWKS, 1).await;
    let verifier = verifier(&settings_with(vec![url_issuer(
        ISS,
        format!("{}/jwks.json", server.uri()),
    )]));
    for _ in 0..3 {
        accepted(&verifier, &es384(&claims())).await;
    }
    // Concurrent first use through clones still shares the one cache.
    let clones: Vec<_> = (0..4).map(|_| verifier.clone()).collect();
    for v in &clones {
        accepted(v, &es384(&claims())).await;
    }
    server.verify().await;
}

#[tokio::test]
async fn concurrent_first_requests_cause_a_single_fetch() {
    let server = jwks_server(OTHER_JWKS, 1).await;
    let verifier = verifier(&settings_with(vec![url_issuer(
        ISS,
        format!("{}/jwks.json", server.uri()),
    )]));
    let tokens: Vec<String> = (0..8).map(|_| es384(&claims())).collect();
    let results =
        futures_util::future::join_all(tokens.iter().map(|t| verifier.verify(Some(t), &[AUD])))
            .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    server.verify().await;
}

#[tokio::test]
async fn unlisted_jku_is_never_fetched() {
    let configured = jwks_server(OTHER_JWKS, 0).await;
    let attacker = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(OTHER_JWKS)))
        .expect(0)
        .mount(&attacker)
        .await;
    let verifier = verifier(&settings_with(vec![url_issuer(
        ISS,
        format!("{}/jwks.json", configured.uri()),
    )]));
    let jku_variants = [
        format!("{}/jwks.json", attacker.uri()),
        format!("{}/other.json", configured.uri()),
    ];
    for jku in &jku_variants {
        let header = json!({ "alg": "ES384", "typ": "JWT", "kid": OTHER_KID, "jku": jku });
        let token = sign(&header, &claims(), &other_key(), Algorithm::ES384);
        let err = refused(&verifier, &token).await;
        assert!(matches!(err, AuthError::UntrustedJku { .. }), "{err:?}");
    }
    assert!(attacker.received_requests().await.unwrap().is_empty());
    attacker.verify().await;
    configured.verify().await;

    // An issuer with inline keys has no listed jku at all.
    let header = json!({ "alg": "ES384", "typ": "JWT", "kid": OTHER_KID, "jku": jku_variants[0] });
    let token = sign(&header, &claims(), &other_key(), Algorithm::ES384);
    let err = refused(&inline_verifier(), &token).await;
    assert!(matches!(err, AuthError::UntrustedJku { .. }), "{err:?}");
    assert!(attacker.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn jku_equal_to_the_configured_url_is_honoured() {
    let server = jwks_server(OTHER_JWKS, 1).await;
    let url = format!("{}/jwks.json", server.uri());
    let verifier = verifier(&settings_with(vec![url_issuer(ISS, url.clone())]));
    let header = json!({ "alg": "ES384", "typ": "JWT", "kid": OTHER_KID, "jku": url });
    let token = sign(&header, &claims(), &other_key(), Algorithm::ES384);
    accepted(&verifier, &token).await;
    server.verify().await;
}

#[tokio::test]
async fn unknown_kid_triggers_one_refetch_which_finds_a_rotated_key() {
    let server = MockServer::start().await;
    // First response: the old set; afterwards: the set after key rotation.
    Mock::given(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(OTHER_JWKS)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(all_test_keys()))
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = settings_with(vec![url_issuer(ISS, format!("{}/jwks.json", server.uri()))]);
    settings.jwks_min_refetch_seconds = 0;
    let verifier = verifier(&settings);

    accepted(&verifier, &es384(&claims())).await; // fetch 1
    let header = json!({ "alg": "RS384", "typ": "JWT", "kid": RS_KID });
    let rotated = sign(&header, &claims(), &rsa_key(), Algorithm::RS384);
    accepted(&verifier, &rotated).await; // unknown kid → fetch 2
    accepted(&verifier, &es384(&claims())).await; // cached
    server.verify().await;
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let server = jwks_server(OTHER_JWKS, 1).await;
    let mut settings = settings_with(vec![url_issuer(ISS, format!("{}/jwks.json", server.uri()))]);
    settings.jwks_min_refetch_seconds = 3600;
    settings.jwks_cache_seconds = 3600;
    let verifier = verifier(&settings);
    accepted(&verifier, &es384(&claims())).await;
    for i in 0..5 {
        let kid = format!("random-kid-{i}");
        let token = sign(
            &es384_header(&kid),
            &claims(),
            &other_key(),
            Algorithm::ES384,
        );
        let err = refused(&verifier, &token).await;
        assert!(matches!(err, AuthError::UnknownKid { .. }), "{err:?}");
    }
    server.verify().await;
}

#[tokio::test]
async fn failing_jwks_url_is_not_hammered() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    let verifier = verifier(&settings_with(vec![url_issuer(
        ISS,
        format!("{}/jwks.json", server.uri()),
    )]));
    let err = refused(&verifier, &es384(&claims())).await;
    assert!(
        matches!(err, AuthError::JwksFetch { ref reason, .. } if reason.contains("503")),
        "{err:?}"
    );
    assert!(err.is_infrastructure());
    let err = refused(&verifier, &es384(&claims())).await;
    assert!(matches!(err, AuthError::JwksUnavailable { .. }), "{err:?}");
    server.verify().await;
}

#[tokio::test]
async fn jwks_that_is_not_json_is_reported() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
        .mount(&server)
        .await;
    let verifier = verifier(&settings_with(vec![url_issuer(
        ISS,
        format!("{}/jwks.json", server.uri()),
    )]));
    let err = refused(&verifier, &es384(&claims())).await;
    assert!(matches!(err, AuthError::InvalidJwks { .. }), "{err:?}");
}

// ---------- configuration ----------

#[test]
fn inconsistent_settings_are_refused_at_start_up() {
    let https = |iss: &str| url_issuer(iss, "https://ehr.example.org/jwks.json".into());
    let mut both = https(ISS);
    both.jwks = Some(jwks(OTHER_JWKS));
    let mut broken_key = jwks(OTHER_JWKS);
    broken_key["keys"][0]["x"] = json!("AAAA");
    let mut demo_twice = settings_with(vec![inline_issuer(DEMO_ISSUER, jwks(OTHER_JWKS))]);
    demo_twice.demo = true;
    let mut short_cache = settings_with(vec![]);
    short_cache.jwks_cache_seconds = 10;
    let cases = [
        settings_with(vec![https(ISS), https(ISS)]),
        settings_with(vec![both]),
        settings_with(vec![TrustedIssuer {
            iss: ISS.into(),
            ..TrustedIssuer::default()
        }]),
        settings_with(vec![url_issuer(
            ISS,
            "http://ehr.example.org/jwks.json".into(),
        )]),
        settings_with(vec![inline_issuer(ISS, broken_key)]),
        settings_with(vec![inline_issuer(ISS, json!({ "keys": [] }))]),
        settings_with(vec![inline_issuer("", jwks(OTHER_JWKS))]),
        demo_twice,
        short_cache,
    ];
    for (i, settings) in cases.iter().enumerate() {
        let result = ClientVerifier::new(settings, reqwest::Client::new());
        assert!(
            matches!(result, Err(AuthError::Config(_))),
            "case {i}: {result:?}"
        );
    }
}

#[test]
fn default_settings_build_a_verifier_that_trusts_nobody() {
    let verifier = ClientVerifier::new(&AuthSettings::default(), reqwest::Client::new()).unwrap();
    assert!(format!("{verifier:?}").contains("issuers: []"));
}

// ---------- the CDS Hooks specification's example ----------

/// The example token and JWK Set from CDS Hooks §"Trusting CDS Clients",
/// verbatim. Its signature must verify with the published key; its claims
/// (expired in 2015, years-long lifetime) must not pass.
#[test]
fn cds_hooks_spec_example_signature_verifies() {
    let example: Value = serde_json::from_str(SPEC_EXAMPLE).unwrap();
    let token = example["token"].as_str().unwrap();
    let (set, skipped) = KeySet::parse(&example["jwks"], "spec example").unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");

    let jws = CompactJws::parse(token).unwrap();
    let header_json = jws.header().unwrap();
    let header = header_json.checked().unwrap();
    assert_eq!((header.alg, header.kid), (Alg::Es384, "example-kid"));
    assert_eq!(header.jku, Some("https://fhir-ehr.example.com/jwk_uri"));
    let key = set.get(header.kid).unwrap();
    let decoding_key = fit(&key, header.alg, header.kid).unwrap();
    assert_eq!(jws.verify_signature(header.alg, decoding_key), Ok(()));

    // Same signature over a modified payload must fail.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = token
        .split('.')
        .nth(1)
        .map(|p| p.replacen('e', "f", 1))
        .unwrap();
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    let forged_jws = CompactJws::parse(&forged).unwrap();
    assert_eq!(
        forged_jws.verify_signature(header.alg, decoding_key),
        Err(())
    );

    // The claims are the spec's, and the time rules refuse them today.
    let claims = jws.claims().unwrap();
    assert_eq!(
        claims.string("iss").unwrap(),
        Some("https://fhir-ehr.example.com/")
    );
    let policy = TimePolicy {
        skew: 60,
        max_lifetime: 300,
    };
    let aud = ["https://cds.example.org/cds-services/some-service"];
    let err = check_claims(&claims, &aud, now(), policy).err().unwrap();
    assert!(
        matches!(
            err,
            AuthError::Expired {
                exp: 1_422_568_860,
                ..
            }
        ),
        "{err:?}"
    );
    // At a moment inside its validity the lifetime bound still refuses it.
    let err = check_claims(&claims, &aud, 1_400_000_000, policy)
        .err()
        .unwrap();
    assert!(matches!(err, AuthError::BadLifetime { .. }), "{err:?}");
}
