//! Verification of the EHR's OpenID Connect id_token (SMART App Launch 2.0
//! §"Scopes for requesting identity data"; OpenID Connect Core §3.1.3.7):
//! signature with a key from the issuer's JWKS (the `jwks_uri` of its
//! discovery document, fetched with the cache and refetch rate limit of
//! `auth::jwks`), `iss` = the discovered issuer, `aud` holds our client id
//! (and `azp` is ours when there are several audiences), `exp`/`iat` within
//! the clock skew, `nonce` = the one we sent. The reviewer is the
//! `fhirUser` claim (a FHIR resource URL), else `sub`.

use super::super::error::{AuthError, clip};
use super::super::jwks::Alg;
use super::super::verifier::{CompactJws, KeySource, unix_now};

/// Who the id_token says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The id_token's `iss`.
    pub iss: String,
    /// `fhirUser` (e.g. `https://ehr.example.org/fhir/Practitioner/123`),
    /// else `sub`.
    pub user: String,
}

/// What the id_token must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub skew: i64,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: i64,
}

pub(crate) async fn verify(
    token: &str,
    keys: &KeySource,
    expected: &Expected<'_>,
) -> Result<Identity, AuthError> {
    let jws = CompactJws::parse(token)?;
    let header_json = jws.header()?;
    let header = header_json.checked_for(Alg::ID_TOKEN)?;
    let claims = jws.claims()?;
    let iss = claims
        .string("iss")?
        .ok_or(AuthError::MissingClaim("iss"))?;
    // OpenID Connect Core §3.1.3.7 step 2: exactly the discovered issuer.
    if iss != expected.issuer {
        return Err(AuthError::UntrustedIssuer { iss: clip(iss) });
    }
    keys.verify(iss, &header, &jws).await?;

    let aud = claims.audience()?;
    if !aud.contains(&expected.client_id) {
        return Err(AuthError::WrongAudience {
            got: aud.iter().take(5).map(|a| clip(a)).collect(),
            expected: vec![expected.client_id.to_owned()],
        });
    }
    // Step 4/5: with several audiences, `azp` names the party it was for.
    if let Some(azp) = claims.string("azp")?
        && azp != expected.client_id
    {
        return Err(AuthError::Malformed(format!(
            "id_token azp {:?} is not our client id",
            clip(azp)
        )));
    }
    let now = unix_now();
    let skew = expected.skew;
    let exp = claims
        .seconds("exp")?
        .ok_or(AuthError::MissingClaim("exp"))?;
    if exp.saturating_add(skew) < now {
        return Err(AuthError::Expired {
            exp,
            now,
            skew: skew.unsigned_abs(),
        });
    }
    let iat = claims
        .seconds("iat")?
        .ok_or(AuthError::MissingClaim("iat"))?;
    if iat.saturating_sub(skew) > now {
        return Err(AuthError::IssuedInFuture {
            iat,
            now,
            skew: skew.unsigned_abs(),
        });
    }
    let lifetime = exp.saturating_sub(iat);
    if lifetime <= 0 || lifetime > expected.max_lifetime.saturating_add(skew) {
        return Err(AuthError::BadLifetime {
            lifetime,
            max: expected.max_lifetime.unsigned_abs(),
        });
    }
    // Step 11: the nonce we sent binds this id_token to this launch.
    match claims.string("nonce")? {
        Some(n) if n == expected.nonce => {}
        Some(_) => return Err(AuthError::Malformed("id_token nonce does not match".into())),
        None => return Err(AuthError::MissingClaim("nonce")),
    }
    let sub = claims
        .string("sub")?
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::MissingClaim("sub"))?;
    let user = claims
        .string("fhirUser")?
        .filter(|s| !s.is_empty())
        .unwrap_or(sub);
    Ok(Identity {
        iss: iss.to_owned(),
        user: clip(user),
    })
}
