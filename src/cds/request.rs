//! The hook request (CDS Hooks 2.0 §"HTTP Request") parsed from JSON with
//! field-precise errors. "Parse, don't validate": downstream code only sees
//! the validated types.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::{Map, Value};
use url::Url;
use uuid::Uuid;

use super::FieldError;

/// `hookInstance`: "A universally unique identifier (UUID) for this particular hook call".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct HookInstance(Uuid);

impl HookInstance {
    pub fn parse(s: &str) -> Result<Self, String> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| format!("`{}` is not a UUID", truncate(s, 64)))
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for HookInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A FHIR logical id (FHIR R4 §2.24.0.1 `id`: `[A-Za-z0-9\-\.]{1,64}`).
/// Validated because it is interpolated into FHIR query URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PatientId(String);

impl PatientId {
    pub fn parse(s: &str) -> Result<Self, String> {
        // Some clients send a reference ("Patient/123"); accept and strip it.
        let id = s.strip_prefix("Patient/").unwrap_or(s);
        if is_fhir_id(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!(
                "`{}` is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
                truncate(s, 80)
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PatientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `fhirAuthorization` (CDS Hooks 2.0 §"Passing the Access Token to the CDS Service").
/// The token is secret: it never reaches `Debug`, logs or the database.
#[derive(Debug, Clone)]
pub struct FhirAuthorization {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    pub subject: Option<String>,
}

/// `context` of the `patient-view` hook: `userId` and `patientId` REQUIRED,
/// `encounterId` OPTIONAL (patient-view 1.0 context table).
#[derive(Debug, Clone)]
pub struct HookContext {
    pub user_id: String,
    pub patient_id: PatientId,
    pub encounter_id: Option<String>,
    /// Every other context field, kept for prefetch-token rendering.
    pub extra: Map<String, Value>,
}

/// One prefetch key's value. CDS Hooks 2.0 §"Prefetch": a key whose query
/// returned nothing is sent as `null`; a key the client could not fulfil is
/// omitted (and then absent from the map). `null` means "no data", not "fetch it".
#[derive(Debug, Clone, PartialEq)]
pub enum Prefetch {
    Null,
    Resource(Value),
}

#[derive(Debug, Clone)]
pub struct HookRequest {
    pub hook: String,
    pub hook_instance: HookInstance,
    pub fhir_server: Option<Url>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: HookContext,
    pub prefetch: BTreeMap<String, Prefetch>,
}

impl HookRequest {
    /// Parse and validate a hook call for a service that expects `expected_hook`.
    pub fn parse(body: Value, expected_hook: &str) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new(
                "$",
                "the request body must be a JSON object",
            ));
        };
        let hook = take_string(&mut obj, "hook", "hook")?
            .ok_or_else(|| FieldError::new("hook", "required"))?;
        if hook != expected_hook {
            return Err(FieldError::new(
                "hook",
                format!(
                    "this service answers `{expected_hook}`, not `{}`",
                    truncate(&hook, 64)
                ),
            ));
        }
        let hook_instance = take_string(&mut obj, "hookInstance", "hookInstance")?
            .ok_or_else(|| FieldError::new("hookInstance", "required"))?;
        let hook_instance =
            HookInstance::parse(&hook_instance).map_err(|m| FieldError::new("hookInstance", m))?;

        let fhir_server = take_string(&mut obj, "fhirServer", "fhirServer")?
            .map(|s| parse_fhir_server(&s))
            .transpose()?;
        let fhir_authorization = match obj.remove("fhirAuthorization") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_authorization(v)?),
        };
        // CDS Hooks 2.0 invariant cds-r-1: fhirAuthorization implies fhirServer.
        if fhir_authorization.is_some() && fhir_server.is_none() {
            return Err(FieldError::new(
                "fhirServer",
                "required when fhirAuthorization is present",
            ));
        }

        let context = match obj.remove("context") {
            Some(Value::Object(c)) => parse_context(c)?,
            Some(_) => return Err(FieldError::new("context", "must be a JSON object")),
            None => return Err(FieldError::new("context", "required")),
        };

        let mut prefetch = BTreeMap::new();
        match obj.remove("prefetch") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    let item = match value {
                        Value::Null => Prefetch::Null,
                        v @ Value::Object(_) => Prefetch::Resource(v),
                        _ => {
                            return Err(FieldError::new(
                                format!("prefetch.{key}"),
                                "must be a FHIR resource (JSON object) or null",
                            ));
                        }
                    };
                    prefetch.insert(key, item);
                }
            }
            Some(_) => return Err(FieldError::new("prefetch", "must be a JSON object")),
        }

        Ok(Self {
            hook,
            hook_instance,
            fhir_server,
            fhir_authorization,
            context,
            prefetch,
        })
    }
}

fn parse_fhir_server(s: &str) -> Result<Url, FieldError> {
    let url =
        Url::parse(s).map_err(|e| FieldError::new("fhirServer", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(FieldError::new(
            "fhirServer",
            "must be an absolute http(s) URL",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new("fhirServer", "must not carry credentials"));
    }
    Ok(url)
}

fn parse_authorization(v: Value) -> Result<FhirAuthorization, FieldError> {
    let Value::Object(mut a) = v else {
        return Err(FieldError::new(
            "fhirAuthorization",
            "must be a JSON object",
        ));
    };
    let access_token = take_string(&mut a, "access_token", "fhirAuthorization.access_token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FieldError::new("fhirAuthorization.access_token", "required"))?;
    let token_type = take_string(&mut a, "token_type", "fhirAuthorization.token_type")?
        .unwrap_or_else(|| "Bearer".into());
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(FieldError::new(
            "fhirAuthorization.token_type",
            "must be `Bearer`",
        ));
    }
    let expires_in = match a.remove("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
            FieldError::new(
                "fhirAuthorization.expires_in",
                "must be a non-negative integer",
            )
        })?),
        Some(_) => {
            return Err(FieldError::new(
                "fhirAuthorization.expires_in",
                "must be a number",
            ));
        }
    };
    Ok(FhirAuthorization {
        access_token: SecretString::from(access_token),
        token_type,
        expires_in,
        scope: take_string(&mut a, "scope", "fhirAuthorization.scope")?,
        subject: take_string(&mut a, "subject", "fhirAuthorization.subject")?,
    })
}

fn parse_context(mut c: Map<String, Value>) -> Result<HookContext, FieldError> {
    let patient_id = take_string(&mut c, "patientId", "context.patientId")?
        .ok_or_else(|| FieldError::new("context.patientId", "required"))?;
    let patient_id =
        PatientId::parse(&patient_id).map_err(|m| FieldError::new("context.patientId", m))?;
    let user_id = take_string(&mut c, "userId", "context.userId")?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| FieldError::new("context.userId", "required"))?;
    let encounter_id = take_string(&mut c, "encounterId", "context.encounterId")?;
    Ok(HookContext {
        user_id,
        patient_id,
        encounter_id,
        extra: c,
    })
}

/// Remove `key` from `obj`: absent or null → `None`; a non-string → error at `path`.
fn take_string(
    obj: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, FieldError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(path, "must be a string")),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "hook": "patient-view",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "fhirServer": "http://127.0.0.1:9/fhir",
            "fhirAuthorization": {"access_token": "secret-token", "token_type": "Bearer",
                "expires_in": 300, "scope": "user/Patient.read", "subject": "cds-service"},
            "context": {"userId": "Practitioner/1", "patientId": "pat-1"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "pat-1"}, "conditions": null}
        })
    }

    fn err_field(body: Value) -> String {
        HookRequest::parse(body, "patient-view").unwrap_err().field
    }

    #[test]
    fn parses_a_valid_request_and_keeps_null_prefetch_distinct() {
        let r = HookRequest::parse(valid(), "patient-view").unwrap();
        assert_eq!(r.context.patient_id.as_str(), "pat-1");
        assert_eq!(r.prefetch.get("conditions"), Some(&Prefetch::Null));
        assert!(!r.prefetch.contains_key("observations"));
        assert!(!format!("{r:?}").contains("secret-token"));
    }

    #[test]
    fn each_client_mistake_names_its_field() {
        let mut b = valid();
        b["hook"] = json!("order-select");
        assert_eq!(err_field(b), "hook");
        let mut b = valid();
        b.as_object_mut().unwrap().remove("hookInstance");
        assert_eq!(err_field(b), "hookInstance");
        let mut b = valid();
        b["hookInstance"] = json!("not-a-uuid");
        assert_eq!(err_field(b), "hookInstance");
        let mut b = valid();
        b["context"].as_object_mut().unwrap().remove("patientId");
        assert_eq!(err_field(b), "context.patientId");
        let mut b = valid();
        b["context"]["patientId"] = json!("../../admin");
        assert_eq!(err_field(b), "context.patientId");
        let mut b = valid();
        b["prefetch"]["patient"] = json!([1, 2]);
        assert_eq!(err_field(b), "prefetch.patient");
        let mut b = valid();
        b.as_object_mut().unwrap().remove("fhirServer");
        assert_eq!(err_field(b), "fhirServer");
        let mut b = valid();
        b["fhirServer"] = json!("file:///etc/passwd");
        assert_eq!(err_field(b), "fhirServer");
        assert_eq!(err_field(json!([1])), "$");
    }

    #[test]
    fn patient_reference_form_is_accepted() {
        assert_eq!(PatientId::parse("Patient/abc.1").unwrap().as_str(), "abc.1");
        assert!(PatientId::parse(&"a".repeat(65)).is_err());
        assert!(PatientId::parse("").is_err());
    }
}
