//! FHIR resources oncohooks *produces*: each stored prediction as an R4
//! `RiskAssessment` with its `Provenance`, the `AuditEvent` of every access,
//! the server's `CapabilityStatement` and searchset `Bundle`s.
//!
//! Built with fhir-sdk's R4B builders and types (R4 and R4B have the same
//! shape for these resources; see README "FHIR R4 and R4B"), serialised to
//! JSON once here. Everything is pure: no I/O, no clock.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use fhir_sdk::r4b::codes::{AuditEventAction, AuditEventOutcome, ObservationStatus};
use fhir_sdk::r4b::resources::{
    AuditEvent, AuditEventAgent, AuditEventEntity, AuditEventSource, Provenance, ProvenanceAgent,
    ProvenanceEntity, RiskAssessment, RiskAssessmentOccurrence, RiskAssessmentPrediction,
    RiskAssessmentPredictionProbability,
};
use fhir_sdk::r4b::types::{Annotation, CodeableConcept, Coding, Identifier, Meta, Reference};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::PredictionRow;

/// Our code systems (`.invalid`, RFC 2606: never resolvable, visibly local).
pub const SYSTEM_BASE: &str = "https://oncohooks.invalid/fhir";
/// FHIR R4 `risk-probability` (RiskAssessment.prediction.qualitativeRisk).
const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const PROVENANCE_PARTICIPANT: &str =
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const AUDIT_ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SNOMED: &str = "http://snomed.info/sct";

/// A FHIR resource could not be built (a required element was missing).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("building FHIR {resource}: {reason}")]
    Build {
        resource: &'static str,
        reason: String,
    },
}

fn build_err(resource: &'static str) -> impl Fn(fhir_sdk::BuilderError) -> OutputError {
    move |e| OutputError::Build {
        resource,
        reason: e.to_string(),
    }
}

fn instant(t: DateTime<Utc>) -> fhir_sdk::Instant {
    // chrono's RFC 3339 output is what `time` parses; it cannot fail.
    fhir_sdk::Instant::from_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .expect("RFC 3339 from chrono parses")
}

fn coding(
    system: &str,
    code: &str,
    display: Option<&str>,
    version: Option<&str>,
) -> Result<Coding, OutputError> {
    let mut b = Coding::builder()
        .system(system.to_owned())
        .code(code.to_owned());
    if let Some(d) = display {
        b = b.display(d.to_owned());
    }
    if let Some(v) = version {
        b = b.version(v.to_owned());
    }
    b.build().map_err(build_err("Coding"))
}

fn concept(codings: Vec<Coding>, text: Option<&str>) -> Result<CodeableConcept, OutputError> {
    let mut b = CodeableConcept::builder().coding(codings.into_iter().map(Some).collect());
    if let Some(t) = text {
        b = b.text(t.to_owned());
    }
    b.build().map_err(build_err("CodeableConcept"))
}

fn reference(r: &str, display: Option<&str>) -> Result<Reference, OutputError> {
    let mut b = Reference::builder().reference(r.to_owned());
    if let Some(d) = display {
        b = b.display(d.to_owned());
    }
    b.build().map_err(build_err("Reference"))
}

fn display_only(display: &str) -> Result<Reference, OutputError> {
    Reference::builder()
        .display(display.to_owned())
        .build()
        .map_err(build_err("Reference"))
}

/// What the service predicts, as a concept. The cachexia service predicts
/// cancer cachexia (SNOMED CT 238108007 "Cachexia"); other services name
/// themselves.
fn outcome_concept(service_id: &str) -> Result<CodeableConcept, OutputError> {
    match service_id {
        "cachexia-risk" => concept(
            vec![coding(SNOMED, "238108007", Some("Cachexia"), None)?],
            Some("Cancer cachexia"),
        ),
        other => concept(vec![], Some(other)),
    }
}

/// Our tiers onto FHIR's `risk-probability` codes; tiers without a
/// counterpart (`unknown`, `not-applicable`) stay text only.
fn qualitative_risk(tier: &str) -> Result<CodeableConcept, OutputError> {
    let code = match tier {
        "low" => Some(("low", "Low likelihood")),
        "elevated" | "moderate" => Some(("moderate", "Moderate likelihood")),
        "high" => Some(("high", "High likelihood")),
        _ => None,
    };
    let codings = match code {
        Some((c, d)) => vec![coding(RISK_PROBABILITY, c, Some(d), None)?],
        None => vec![],
    };
    concept(codings, Some(tier))
}

/// References to the FHIR resources a prediction was computed from, in the
/// order the stored feature snapshot cites them. Only `Type/id` references
/// count: placeholders for id-less resources (`Observation[#3]`) and
/// imaging-pipeline citations (`ImagingStudy/x series … (pipeline …)` gives
/// the study) are reduced to what is a real reference.
pub fn basis_references(snapshot: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let features = snapshot
        .get("features")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for f in features {
        let Some(src) = f.get("source").and_then(Value::as_str) else {
            continue;
        };
        for part in src.split(", ") {
            let candidate = part.split_whitespace().next().unwrap_or_default();
            if is_reference(candidate) && !out.iter().any(|r| r == candidate) {
                out.push(candidate.to_owned());
            }
        }
    }
    out
}

/// `Type/id` with a FHIR resource type name and a FHIR id
/// (`[A-Za-z0-9\-\.]{1,64}`, FHIR R4 §2.24.0.1 "id").
fn is_reference(s: &str) -> bool {
    let Some((ty, id)) = s.split_once('/') else {
        return false;
    };
    ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphabetic())
        && (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The stored prediction as a FHIR R4 RiskAssessment (id = prediction id).
pub fn risk_assessment(row: &PredictionRow) -> Result<Value, OutputError> {
    let p = &row.record;
    let id = p.id.to_string();
    let mut prediction = RiskAssessmentPrediction::builder()
        .outcome(outcome_concept(&p.service_id)?)
        .qualitative_risk(qualitative_risk(&p.risk_tier)?);
    if let Some(risk) = p.risk {
        prediction = prediction.probability(RiskAssessmentPredictionProbability::Decimal(risk));
    }
    let reasons = row.reasons();
    if !reasons.is_empty() {
        prediction = prediction.rationale(reasons.join("; "));
    }
    let prediction = prediction
        .build()
        .map_err(build_err("RiskAssessment.prediction"))?;

    let method = concept(
        vec![coding(
            &format!("{SYSTEM_BASE}/CodeSystem/model"),
            &p.model_id,
            Some(&format!("{} {}", p.model_id, p.model_version)),
            Some(&p.model_version),
        )?],
        Some(&format!("{} version {}", p.model_id, p.model_version)),
    )?;
    let code = concept(
        vec![coding(
            &format!("{SYSTEM_BASE}/CodeSystem/cds-service"),
            &p.service_id,
            None,
            None,
        )?],
        Some(&format!("oncohooks {} assessment", p.service_id)),
    )?;
    let basis = basis_references(&p.features)
        .iter()
        .map(|r| reference(r, None).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let note = Annotation::builder()
        .text(note_text(row))
        .time(fhir_sdk::DateTime::DateTime(instant(p.created_at)))
        .build()
        .map_err(build_err("Annotation"))?;
    let identifier = Identifier::builder()
        .system("urn:ietf:rfc:3986".to_owned())
        .value(format!("urn:uuid:{id}"))
        .build()
        .map_err(build_err("Identifier"))?;
    let meta = Meta::builder()
        .last_updated(instant(p.created_at))
        .build()
        .map_err(build_err("Meta"))?;
    let ra = RiskAssessment::builder()
        .id(id)
        .meta(meta)
        .identifier(vec![Some(identifier)])
        .status(ObservationStatus::Final)
        .code(code)
        .method(method)
        .subject(reference(&format!("Patient/{}", p.patient_id), None)?)
        .occurrence(RiskAssessmentOccurrence::DateTime(
            fhir_sdk::DateTime::DateTime(instant(p.created_at)),
        ))
        .basis(basis)
        .prediction(vec![Some(prediction)])
        .note(vec![Some(note)])
        .build()
        .map_err(build_err("RiskAssessment"))?;
    serde_json::to_value(&ra).map_err(|e| OutputError::Build {
        resource: "RiskAssessment",
        reason: e.to_string(),
    })
}

/// "Confidence 0.81; interval 0.12–0.35; expert review suggested: yes (…)".
fn note_text(row: &PredictionRow) -> String {
    let p = &row.record;
    let mut parts = Vec::new();
    match p.confidence {
        Some(c) => parts.push(format!("Confidence {c:.2}")),
        None => parts.push("Confidence not reported by this method".to_owned()),
    }
    if let Some((lo, hi)) = row.interval() {
        parts.push(format!("interval {lo:.2}–{hi:.2}"));
    }
    let review = if p.review_suggested { "yes" } else { "no" };
    let why = row.review_reasons();
    if p.review_suggested && !why.is_empty() {
        parts.push(format!(
            "expert review suggested: {review} ({})",
            why.join("; ")
        ));
    } else {
        parts.push(format!("expert review suggested: {review}"));
    }
    parts.push(format!("input digest sha256:{}", p.input_digest));
    parts.join("; ")
}

/// Who made the RiskAssessment and from what (FHIR R4 Provenance; id = the
/// prediction id).
pub fn provenance(row: &PredictionRow) -> Result<Value, OutputError> {
    let p = &row.record;
    let agent_type = concept(
        vec![coding(
            PROVENANCE_PARTICIPANT,
            "author",
            Some("Author"),
            None,
        )?],
        None,
    )?;
    let agent = ProvenanceAgent::builder()
        .r#type(agent_type)
        .who(display_only(&format!(
            "oncohooks {} ({} {})",
            p.service_id, p.model_id, p.model_version
        ))?)
        .build()
        .map_err(build_err("Provenance.agent"))?;
    let entities = basis_references(&p.features)
        .iter()
        .map(|r| {
            ProvenanceEntity::builder()
                .role(fhir_sdk::r4b::codes::ProvenanceEntityRole::Source)
                .what(reference(r, None)?)
                .build()
                .map(Some)
                .map_err(build_err("Provenance.entity"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prov = Provenance::builder()
        .id(p.id.to_string())
        .target(vec![Some(reference(
            &format!("RiskAssessment/{}", p.id),
            None,
        )?)])
        .recorded(instant(p.created_at))
        .agent(vec![Some(agent)])
        .entity(entities)
        .build()
        .map_err(build_err("Provenance"))?;
    serde_json::to_value(&prov).map_err(|e| OutputError::Build {
        resource: "Provenance",
        reason: e.to_string(),
    })
}

/// One access to protected data, as the HTTP layer saw it.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub id: Uuid,
    pub recorded: DateTime<Utc>,
    pub agent_iss: &'a str,
    pub agent_sub: &'a str,
    /// FHIR AuditEvent.action: `R` read, `E` search/export, `C` create.
    pub action: char,
    /// e.g. `fhir.RiskAssessment.search`, `audit.export`, `review.verdict`.
    pub operation: &'a str,
    /// The path and query called (never a token: tokens are only accepted
    /// in the Authorization header).
    pub path: &'a str,
    pub patient_id: Option<&'a str>,
    /// What was accessed (`RiskAssessment/…`), when one thing was.
    pub entity: Option<&'a str>,
    /// This server (`AuditEvent.source.observer`).
    pub server: &'a str,
}

/// The FHIR R4 AuditEvent of one access (DICOM audit-event-type `rest`,
/// restful-interaction subtype; FHIR R4 §6.4 "AuditEvent").
pub fn audit_event(a: &Access<'_>) -> Result<Value, OutputError> {
    let action = match a.action {
        'C' => AuditEventAction::C,
        'R' => AuditEventAction::R,
        'U' => AuditEventAction::U,
        'D' => AuditEventAction::D,
        _ => AuditEventAction::E,
    };
    let interaction = match a.action {
        'C' => "create",
        'R' => "read",
        _ => "search-type",
    };
    let who = Reference::builder()
        .identifier(
            Identifier::builder()
                .system(a.agent_iss.to_owned())
                .value(a.agent_sub.to_owned())
                .build()
                .map_err(build_err("Identifier"))?,
        )
        .display(a.agent_sub.to_owned())
        .build()
        .map_err(build_err("Reference"))?;
    let agent = AuditEventAgent::builder()
        .r#type(concept(
            vec![coding(
                PARTICIPATION_TYPE,
                "IRCP",
                Some("information recipient"),
                None,
            )?],
            None,
        )?)
        .who(who)
        .requestor(true)
        .build()
        .map_err(build_err("AuditEvent.agent"))?;
    let source = AuditEventSource::builder()
        .observer(display_only(&format!("oncohooks at {}", a.server))?)
        .build()
        .map_err(build_err("AuditEvent.source"))?;
    let mut entities = Vec::new();
    if let Some(pid) = a.patient_id {
        entities.push(Some(
            AuditEventEntity::builder()
                .what(reference(&format!("Patient/{pid}"), None)?)
                .r#type(coding(AUDIT_ENTITY_TYPE, "1", Some("Person"), None)?)
                .role(coding(OBJECT_ROLE, "1", Some("Patient"), None)?)
                .build()
                .map_err(build_err("AuditEvent.entity"))?,
        ));
    }
    let mut what = AuditEventEntity::builder()
        .r#type(coding(AUDIT_ENTITY_TYPE, "2", Some("System Object"), None)?)
        .description(format!("{} {}", a.operation, a.path));
    if let Some(e) = a.entity {
        what = what.what(reference(e, None)?);
    }
    entities.push(Some(what.build().map_err(build_err("AuditEvent.entity"))?));
    let ev = AuditEvent::builder()
        .id(a.id.to_string())
        .r#type(coding(
            AUDIT_EVENT_TYPE,
            "rest",
            Some("Restful Operation"),
            None,
        )?)
        .subtype(vec![Some(coding(
            RESTFUL_INTERACTION,
            interaction,
            None,
            None,
        )?)])
        .action(action)
        .recorded(instant(a.recorded))
        .outcome(AuditEventOutcome::N0)
        .outcome_desc(a.operation.to_owned())
        .agent(vec![Some(agent)])
        .source(source)
        .entity(entities)
        .build()
        .map_err(build_err("AuditEvent"))?;
    serde_json::to_value(&ev).map_err(|e| OutputError::Build {
        resource: "AuditEvent",
        reason: e.to_string(),
    })
}

/// One entry of a searchset Bundle.
pub struct Entry {
    pub full_url: String,
    pub resource: Value,
    /// `match` or `include` (FHIR R4 §3.1.1.2 "search mode").
    pub mode: &'static str,
}

/// A searchset Bundle (FHIR R4 §3.1.1.5 "Paging": `self` and `next` links).
pub fn searchset(self_url: &str, next_url: Option<&str>, total: i64, entries: Vec<Entry>) -> Value {
    let mut link = vec![json!({"relation": "self", "url": self_url})];
    if let Some(n) = next_url {
        link.push(json!({"relation": "next", "url": n}));
    }
    let entry: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "fullUrl": e.full_url,
                "resource": e.resource,
                "search": {"mode": e.mode},
            })
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": total,
        "link": link,
    });
    if !entry.is_empty() {
        b["entry"] = Value::Array(entry);
    }
    b
}

/// A transaction Bundle that PUTs each resource at its own id on the
/// server at `base` (FHIR R4 §3.1.0.11 "batch/transaction": `request.method`
/// PUT with `request.url` `Type/id`, an update that creates the resource
/// when the server allows client-assigned ids). A PUT to a fixed id is
/// idempotent, so sending the same Bundle again changes nothing: what makes
/// the write-back's retries safe. Resources without `resourceType`/`id` are
/// refused.
pub fn put_transaction(base: &str, resources: &[Value]) -> Result<Value, OutputError> {
    let base = base.trim_end_matches('/');
    let entry = resources
        .iter()
        .map(|r| {
            let (Some(ty), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
                return Err(OutputError::Build {
                    resource: "Bundle",
                    reason: "a transaction entry needs resourceType and id".into(),
                });
            };
            Ok(json!({
                "fullUrl": format!("{base}/{ty}/{id}"),
                "resource": r,
                "request": {"method": "PUT", "url": format!("{ty}/{id}")},
            }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entry,
    }))
}

/// The CapabilityStatement for `GET /fhir/metadata` (FHIR R4 §3.1.0.7
/// "capabilities"): read-only RiskAssessment/Provenance/AuditEvent, JSON
/// only, SMART on FHIR bearer tokens.
pub fn capability_statement(base: &str, software_version: &str, date: &str) -> Value {
    let search =
        |name: &str, ty: &str, doc: &str| json!({"name": name, "type": ty, "documentation": doc});
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "oncohooks",
        "kind": "instance",
        "software": {"name": "oncohooks", "version": software_version},
        "implementation": {"description": "oncohooks FHIR outputs", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only access to oncohooks predictions as RiskAssessment (with Provenance) and to the access audit trail as AuditEvent.",
            "security": {
                "cors": true,
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"
                    }]
                }],
                "description": "Bearer JWT from a configured OAuth issuer. RiskAssessment/Provenance: user/RiskAssessment.read (or .rs, user/*.read, audit.read). AuditEvent: audit.read."
            },
            "resource": [
                {
                    "type": "RiskAssessment",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchInclude": [],
                    "searchRevInclude": ["Provenance:target"],
                    "searchParam": [
                        search("subject", "reference", "Patient/ID or ID"),
                        search("patient", "reference", "Patient/ID or ID"),
                        search("date", "date", "occurrence; prefixes ge, gt, le, lt, eq; may repeat"),
                        search("_count", "number", "page size (1-1000, default 50)"),
                        search("_offset", "number", "paging position (used by next links)")
                    ]
                },
                {
                    "type": "Provenance",
                    "interaction": [{"code": "read"}]
                },
                {
                    "type": "AuditEvent",
                    "interaction": [{"code": "search-type"}],
                    "searchParam": [
                        search("patient", "reference", "Patient/ID or ID"),
                        search("agent", "token", "the subject (sub) of the accessing token"),
                        search("date", "date", "recorded; prefixes ge, gt, le, lt, eq"),
                        search("_count", "number", "page size"),
                        search("_offset", "number", "paging position")
                    ]
                }
            ]
        }]
    })
    .as_object()
    .map(|o| {
        // The empty `searchInclude` above is removed: FHIR forbids empty arrays.
        let mut o = o.clone();
        if let Some(Value::Array(rest)) = o.get_mut("rest")
            && let Some(Value::Array(res)) = rest[0].get_mut("resource")
        {
            for r in res {
                if let Some(obj) = r.as_object_mut() {
                    obj.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
                }
            }
        }
        Value::Object(o)
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PredictionRecord;

    fn row(risk: Option<f64>) -> PredictionRow {
        PredictionRow {
            record: PredictionRecord {
                id: Uuid::new_v4(),
                invocation_id: Uuid::new_v4(),
                service_id: "cachexia-risk".into(),
                patient_id: "p-1".into(),
                model_id: "cachexia-classic-indices".into(),
                model_version: "1.0.0+abcd1234".into(),
                risk,
                risk_tier: "high".into(),
                confidence: Some(0.8),
                review_suggested: true,
                input_digest: "a".repeat(64),
                features: json!({"features": [
                    {"name": "weight", "source": "Observation/w-1", "present": true},
                    {"name": "bmi", "source": "Observation/w-1, Observation/h-1", "present": true},
                    {"name": "l3_sma", "source": "ImagingStudy/ct-1 series 1.2.3 (pipeline x)", "present": true},
                    {"name": "albumin", "source": "Observation[#4]", "present": true},
                    {"name": "crp", "present": false}
                ]}),
                result: json!({"prediction": {"reasons": ["weight loss 6%"], "interval": [0.2, 0.4]}}),
                created_at: Utc::now(),
            },
            feedback_outcome: None,
            feedback_override_reason: None,
            outcome_label: None,
        }
    }

    #[test]
    fn basis_keeps_real_references_once_in_snapshot_order() {
        let r = row(None);
        assert_eq!(
            basis_references(&r.record.features),
            ["Observation/w-1", "Observation/h-1", "ImagingStudy/ct-1"]
        );
    }

    #[test]
    fn risk_assessment_carries_probability_method_basis_and_note() {
        let r = row(Some(0.31));
        let ra = risk_assessment(&r).unwrap();
        assert_eq!(ra["resourceType"], "RiskAssessment");
        assert_eq!(ra["status"], "final");
        assert_eq!(ra["subject"]["reference"], "Patient/p-1");
        assert_eq!(ra["prediction"][0]["probabilityDecimal"], 0.31);
        assert_eq!(
            ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"],
            "high"
        );
        assert_eq!(ra["method"]["coding"][0]["version"], "1.0.0+abcd1234");
        assert_eq!(ra["basis"].as_array().unwrap().len(), 3);
        let note = ra["note"][0]["text"].as_str().unwrap();
        assert!(note.contains("Confidence 0.80"), "{note}");
        assert!(note.contains("interval 0.20–0.40"), "{note}");
        assert!(note.contains("expert review suggested: yes"), "{note}");
        // Round-trips through fhir-sdk's model.
        let back: RiskAssessment = serde_json::from_value(ra).unwrap();
        assert_eq!(back.id.as_deref(), Some(r.record.id.to_string().as_str()));
    }

    #[test]
    fn a_classic_only_prediction_has_no_probability() {
        let mut r = row(None);
        r.record.confidence = None;
        let ra = risk_assessment(&r).unwrap();
        assert!(ra["prediction"][0].get("probabilityDecimal").is_none());
        assert!(
            ra["note"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Confidence not reported")
        );
    }

    #[test]
    fn provenance_and_audit_event_parse_back() {
        let r = row(Some(0.5));
        let p: Provenance = serde_json::from_value(provenance(&r).unwrap()).unwrap();
        assert_eq!(p.entity.len(), 3);
        let ev = audit_event(&Access {
            id: Uuid::new_v4(),
            recorded: Utc::now(),
            agent_iss: "https://idp",
            agent_sub: "dr-a",
            action: 'R',
            operation: "fhir.RiskAssessment.read",
            path: "/fhir/RiskAssessment/x",
            patient_id: Some("p-1"),
            entity: Some("RiskAssessment/x"),
            server: "http://localhost",
        })
        .unwrap();
        assert_eq!(ev["action"], "R");
        assert_eq!(ev["entity"][0]["what"]["reference"], "Patient/p-1");
        let _: AuditEvent = serde_json::from_value(ev).unwrap();
    }

    #[test]
    fn capability_statement_parses_and_has_no_empty_arrays() {
        let cs = capability_statement("http://x/fhir", "0.1.0", "2026-11-23");
        let text = cs.to_string();
        assert!(!text.contains("[]"), "{text}");
        let _: fhir_sdk::r4b::resources::CapabilityStatement = serde_json::from_value(cs).unwrap();
    }
}
