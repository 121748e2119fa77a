//! Prefetch templates (CDS Hooks 2.0 §"Prefetch Template") and the checks on
//! what the client sent for each key.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::cds::{FieldError, HookContext};

/// One prefetch key of a service (from `cds-hooks/<id>/service.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefetchSpec {
    /// The template advertised in discovery, e.g. `Condition?patient={{context.patientId}}`.
    pub template: String,
    /// The resource type a read returns, or the entry type of a search Bundle.
    pub resource: String,
    /// Without this key the service cannot answer (CDS Hooks 2.0: 412 when it
    /// can be neither prefetched nor fetched).
    #[serde(default)]
    pub required: bool,
    /// When we fetch the key ourselves we add `<date_param>=ge<today − N months>`.
    /// CDS Hooks 2.0 has no date tokens, so discovery cannot carry this limit.
    #[serde(default)]
    pub lookback_months: Option<u32>,
    #[serde(default)]
    pub date_param: Option<String>,
}

impl PrefetchSpec {
    /// Is the template a search (`Type?…`) rather than a read (`Type/id`)?
    pub fn is_search(&self) -> bool {
        self.template.contains('?')
    }
}

/// Render a template with the hook's context. CDS Hooks 2.0 §"Prefetch
/// tokens": `{{context.<field>}}` for context fields of type string, and
/// `{{userPractitionerId}}`, `{{userPractitionerRoleId}}`, `{{userPatientId}}`,
/// `{{userRelatedPersonId}}` derived from `context.userId`.
pub fn render_template(template: &str, context: &HookContext) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed token in `{template}`"))?;
        let token = after[..end].trim();
        let value = resolve_token(token, context)
            .ok_or_else(|| format!("token `{{{{{token}}}}}` has no value in this context"))?;
        out.push_str(&encode_query_value(&value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_token(token: &str, ctx: &HookContext) -> Option<String> {
    let user_typed = |prefix: &str| {
        ctx.user_id
            .strip_prefix(prefix)
            .and_then(|s| s.strip_prefix('/'))
            .map(str::to_owned)
    };
    match token {
        "context.patientId" => Some(ctx.patient_id.as_str().to_owned()),
        "context.userId" => Some(ctx.user_id.clone()),
        "context.encounterId" => ctx.encounter_id.clone(),
        "userPractitionerId" => user_typed("Practitioner"),
        "userPractitionerRoleId" => user_typed("PractitionerRole"),
        "userPatientId" => user_typed("Patient"),
        "userRelatedPersonId" => user_typed("RelatedPerson"),
        t => t
            .strip_prefix("context.")
            .and_then(|k| ctx.extra.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// Context values are interpolated into URLs: escape what would change the
/// query's structure. FHIR ids are already restricted to `[A-Za-z0-9.-]`.
fn encode_query_value(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '&' => "%26".to_owned(),
            '#' => "%23".to_owned(),
            '?' => "%3F".to_owned(),
            ' ' => "%20".to_owned(),
            '+' => "%2B".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Check a prefetched value against its spec: a read must be the right
/// resource type; a search must be a Bundle whose entries are of that type
/// (OperationOutcome entries and `_include`d resources are allowed).
pub fn check_prefetch(key: &str, spec: &PrefetchSpec, value: &Value) -> Result<(), FieldError> {
    let path = format!("prefetch.{key}");
    let rt = value.get("resourceType").and_then(Value::as_str);
    match rt {
        None => Err(FieldError::new(
            format!("{path}.resourceType"),
            "missing: not a FHIR resource",
        )),
        Some("Bundle") => {
            let entries = match value.get("entry") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Array(a)) => a,
                Some(_) => {
                    return Err(FieldError::new(
                        format!("{path}.entry"),
                        "a Bundle's entry must be an array",
                    ));
                }
            };
            for (i, e) in entries.iter().enumerate() {
                let Some(entry) = e.as_object() else {
                    return Err(FieldError::new(
                        format!("{path}.entry[{i}]"),
                        "must be a JSON object",
                    ));
                };
                let Some(res) = entry.get("resource") else {
                    continue; // recorded as skipped later
                };
                let ert = res.get("resourceType").and_then(Value::as_str);
                let included = entry
                    .get("search")
                    .and_then(|s| s.get("mode"))
                    .and_then(Value::as_str)
                    == Some("include");
                match ert {
                    Some(t) if t == spec.resource || t == "OperationOutcome" || included => {}
                    Some(t) => {
                        return Err(FieldError::new(
                            format!("{path}.entry[{i}].resource.resourceType"),
                            format!("expected {}, got {t}", spec.resource),
                        ));
                    }
                    None => {
                        return Err(FieldError::new(
                            format!("{path}.entry[{i}].resource.resourceType"),
                            "missing",
                        ));
                    }
                }
            }
            Ok(())
        }
        Some(t) if !spec.is_search() && t == spec.resource => Ok(()),
        Some(t) => Err(FieldError::new(
            format!("{path}.resourceType"),
            if spec.is_search() {
                format!(
                    "expected a Bundle of {} (search result), got {t}",
                    spec.resource
                )
            } else {
                format!("expected {}, got {t}", spec.resource)
            },
        )),
    }
}

/// Check that every resource that names a subject/patient names *this*
/// patient: data about someone else must never be scored.
pub fn check_same_patient(key: &str, value: &Value, patient_id: &str) -> Result<(), FieldError> {
    let path = format!("prefetch.{key}");
    let check = |res: &Value, at: &str| -> Result<(), FieldError> {
        if res.get("resourceType").and_then(Value::as_str) == Some("Patient") {
            if let Some(id) = res.get("id").and_then(Value::as_str)
                && id != patient_id
            {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    "this Patient is not context.patientId",
                ));
            }
            return Ok(());
        }
        for field in ["subject", "patient"] {
            if let Some(r) = res
                .get(field)
                .and_then(|s| s.get("reference"))
                .and_then(Value::as_str)
                && let Some(id) = patient_ref_id(r)
                && id != patient_id
            {
                return Err(FieldError::new(
                    format!("{at}.{field}.reference"),
                    "refers to a different patient than context.patientId",
                ));
            }
        }
        Ok(())
    };
    match value.get("entry").and_then(Value::as_array) {
        Some(entries) if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
            for (i, e) in entries.iter().enumerate() {
                if let Some(res) = e.get("resource") {
                    check(res, &format!("{path}.entry[{i}].resource"))?;
                }
            }
            Ok(())
        }
        _ => check(value, &path),
    }
}

/// `Patient/123`, `https://ehr/fhir/Patient/123`, `Patient/123/_history/2` → `123`.
fn patient_ref_id(reference: &str) -> Option<&str> {
    let mut parts = reference.split('/').collect::<Vec<_>>();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let n = parts.len();
    (n >= 2 && parts[n - 2] == "Patient").then(|| parts[n - 1])
}

/// The prefetch map of a service as advertised in discovery.
pub fn discovery_templates(specs: &BTreeMap<String, PrefetchSpec>) -> BTreeMap<String, String> {
    specs
        .iter()
        .map(|(k, s)| (k.clone(), s.template.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cds::PatientId;
    use serde_json::json;

    fn ctx() -> HookContext {
        HookContext {
            user_id: "Practitioner/example".into(),
            patient_id: PatientId::parse("p-1").unwrap(),
            encounter_id: None,
            extra: Default::default(),
        }
    }

    fn spec(template: &str, resource: &str) -> PrefetchSpec {
        PrefetchSpec {
            template: template.into(),
            resource: resource.into(),
            required: false,
            lookback_months: None,
            date_param: None,
        }
    }

    #[test]
    fn renders_context_and_user_tokens() {
        let r = render_template(
            "Observation?patient={{context.patientId}}&performer={{userPractitionerId}}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(r, "Observation?patient=p-1&performer=example");
        assert!(render_template("Encounter/{{context.encounterId}}", &ctx()).is_err());
        assert!(render_template("Patient/{{context.patientId", &ctx()).is_err());
    }

    #[test]
    fn wrong_resource_types_are_named() {
        let obs = spec("Observation?patient={{context.patientId}}", "Observation");
        let e =
            check_prefetch("observations", &obs, &json!({"resourceType": "Patient"})).unwrap_err();
        assert_eq!(e.field, "prefetch.observations.resourceType");
        let e = check_prefetch(
            "observations",
            &obs,
            &json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition"}}]}),
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            "prefetch.observations.entry[0].resource.resourceType"
        );
        let e = check_prefetch(
            "observations",
            &obs,
            &json!({"resourceType": "Bundle", "entry": {}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "prefetch.observations.entry");
        let pat = spec("Patient/{{context.patientId}}", "Patient");
        assert!(check_prefetch("patient", &pat, &json!({"resourceType": "Patient"})).is_ok());
        assert!(check_prefetch("patient", &pat, &json!({"id": "x"})).is_err());
    }

    #[test]
    fn data_about_another_patient_is_refused() {
        let b = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p-1"}}},
            {"resource": {"resourceType": "Observation", "subject": {"reference": "https://ehr/fhir/Patient/p-2/_history/1"}}}
        ]});
        let e = check_same_patient("observations", &b, "p-1").unwrap_err();
        assert_eq!(
            e.field,
            "prefetch.observations.entry[1].resource.subject.reference"
        );
        let p = json!({"resourceType": "Patient", "id": "p-9"});
        assert_eq!(
            check_same_patient("patient", &p, "p-1").unwrap_err().field,
            "prefetch.patient.id"
        );
    }
}
