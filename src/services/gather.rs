//! Gathering a patient's data for one hook: prefetch first, then our own FHIR
//! queries for what prefetch lacks (CDS Hooks 2.0 §"Prefetch" and §"FHIR
//! Resource Access"), all under the hook's deadline.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::time::Instant as StdInstant;

use chrono::{Months, NaiveDate};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cds::{HookRequest, Prefetch};
use crate::fhir::prefetch::{check_same_patient, render_template};
use crate::fhir::{FhirClient, PatientRecord, PrefetchSpec};

/// Where one prefetch key's data came from. Stored with every prediction.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum KeySource {
    /// Sent by the EHR in `prefetch`.
    Prefetch { resources: usize },
    /// Sent as `null`: the EHR says there is no data.
    PrefetchNull,
    /// Fetched by us from `fhirServer`.
    Fetched {
        resources: usize,
        pages: usize,
        truncated: bool,
    },
    /// Neither sent nor fetchable; `reason` says why.
    Unavailable { reason: String },
}

impl KeySource {
    pub fn has_data_source(&self) -> bool {
        !matches!(self, KeySource::Unavailable { .. })
    }
}

#[derive(Debug)]
pub struct Gathered {
    pub record: PatientRecord,
    pub sources: BTreeMap<String, KeySource>,
    /// sha256 over the canonical JSON of every resource used, per key.
    pub input_digest: String,
    pub fhir_ms: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GatherError {
    /// CDS Hooks 2.0: "If the CDS Service is unable to obtain required data
    /// because it cannot access the FHIR server and the request did not
    /// contain the necessary prefetch keys, the service SHALL respond with an
    /// HTTP 412 Precondition Failed status code."
    #[error("required data unavailable: {}", .missing.join(", "))]
    PreconditionFailed {
        missing: Vec<String>,
        reasons: BTreeMap<String, String>,
    },
}

/// Collect the data for `specs` from the request's prefetch and, for missing
/// keys, from the FHIR server (when allowed).
pub async fn gather(
    specs: &BTreeMap<String, PrefetchSpec>,
    req: &HookRequest,
    client: Option<&FhirClient>,
    index_date: NaiveDate,
    deadline: Instant,
) -> Result<Gathered, GatherError> {
    let mut sources = BTreeMap::new();
    // Prefetched resources are read where they are in the request.
    let mut raw: BTreeMap<String, Vec<Cow<'_, Value>>> = BTreeMap::new();
    let mut to_fetch = Vec::new();

    for (key, spec) in specs {
        match req.prefetch.get(key) {
            Some(Prefetch::Null) => {
                sources.insert(key.clone(), KeySource::PrefetchNull);
            }
            Some(Prefetch::Resource(v)) => {
                let resources = split(v);
                sources.insert(
                    key.clone(),
                    KeySource::Prefetch {
                        resources: resources.len(),
                    },
                );
                raw.insert(key.clone(), resources);
            }
            None => match render_query(spec, req, index_date) {
                Ok(q) => to_fetch.push((key.clone(), q)),
                Err(reason) => {
                    sources.insert(key.clone(), KeySource::Unavailable { reason });
                }
            },
        }
    }

    let started = StdInstant::now();
    if !to_fetch.is_empty() {
        match (&req.fhir_server, client) {
            (Some(base), Some(client)) if client.is_allowed(base) => {
                let token = req.fhir_authorization.as_ref().map(|a| &a.access_token);
                for (key, result) in client.fetch_all(base, token, to_fetch, deadline).await {
                    match result {
                        Ok(f) => {
                            // Our query names the patient; a server that answers with
                            // someone else's data anyway gets those entries dropped.
                            let (mine, foreign): (Vec<_>, Vec<_>) =
                                f.resources.into_iter().partition(|r| {
                                    check_same_patient(&key, r, req.context.patient_id.as_str())
                                        .is_ok()
                                });
                            if !foreign.is_empty() {
                                tracing::warn!(
                                    key = %key,
                                    dropped = foreign.len(),
                                    "FHIR server returned resources of another patient"
                                );
                            }
                            sources.insert(
                                key.clone(),
                                KeySource::Fetched {
                                    resources: mine.len(),
                                    pages: f.pages,
                                    truncated: f.truncated,
                                },
                            );
                            raw.insert(key, mine.into_iter().map(Cow::Owned).collect());
                        }
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "FHIR fetch failed");
                            sources.insert(
                                key,
                                KeySource::Unavailable {
                                    reason: e.to_string(),
                                },
                            );
                        }
                    }
                }
            }
            (Some(base), _) => {
                tracing::warn!(
                    fhir_server = %base.origin().ascii_serialization(),
                    "fhirServer is not on the allow-list: not contacted"
                );
                for (key, _) in to_fetch {
                    sources.insert(
                        key,
                        KeySource::Unavailable {
                            reason: "fhirServer is not on this service's allow-list".into(),
                        },
                    );
                }
            }
            (None, _) => {
                for (key, _) in to_fetch {
                    sources.insert(
                        key,
                        KeySource::Unavailable {
                            reason: "not prefetched and no fhirServer given".into(),
                        },
                    );
                }
            }
        }
    }
    let fhir_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut reasons = BTreeMap::new();
    for (key, spec) in specs {
        if let Some(KeySource::Unavailable { reason }) = sources.get(key)
            && spec.required
        {
            reasons.insert(key.clone(), reason.clone());
        }
    }
    if !reasons.is_empty() {
        return Err(GatherError::PreconditionFailed {
            missing: reasons.keys().cloned().collect(),
            reasons,
        });
    }

    let input_digest = digest(&raw);
    let mut record = PatientRecord::default();
    for (key, resources) in raw {
        for (i, r) in resources.iter().enumerate() {
            record.add_resource_ref(&format!("{key}[{i}]"), r);
        }
    }
    Ok(Gathered {
        record,
        sources,
        input_digest,
        fhir_ms,
    })
}

/// A Bundle's entry resources, or the resource itself.
fn split(v: &Value) -> Vec<Cow<'_, Value>> {
    if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        v.get("entry")
            .and_then(Value::as_array)
            .map(|es| {
                es.iter()
                    .filter_map(|e| e.get("resource").map(Cow::Borrowed))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![Cow::Borrowed(v)]
    }
}

/// The query we send ourselves: the rendered template, plus the lookback date
/// limit and a page size for searches.
fn render_query(
    spec: &PrefetchSpec,
    req: &HookRequest,
    index_date: NaiveDate,
) -> Result<String, String> {
    let mut q = render_template(&spec.template, &req.context)?;
    if spec.is_search() {
        if let (Some(months), Some(param)) = (spec.lookback_months, &spec.date_param) {
            let since = index_date
                .checked_sub_months(Months::new(months))
                .unwrap_or(index_date);
            q.push_str(&format!("&{param}=ge{since}"));
        }
        if !q.contains("_count=") {
            q.push_str("&_count=200");
        }
    }
    Ok(q)
}

/// sha256 hex over the canonical JSON (object keys sorted) of the inputs.
pub fn digest<V: Borrow<Value>>(raw: &BTreeMap<String, Vec<V>>) -> String {
    let mut h = HashWriter(Sha256::new());
    for (key, resources) in raw {
        h.0.update(key.as_bytes());
        h.0.update([0]);
        for r in resources {
            canonical(r.borrow(), &mut h);
            h.0.update([0]);
        }
    }
    hex::encode(h.0.finalize())
}

/// Feeds what is written into the hash: the canonical JSON is hashed as it
/// is produced, never built as a string (a hook's prefetch is tens of KB).
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `v` with object keys sorted; strings and numbers exactly as
/// `serde_json` prints them (so digests stored before stay comparable).
fn canonical(v: &Value, out: &mut HashWriter) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.0.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                // Writing into a hash cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.0.update(b":");
                canonical(&o[k.as_str()], out);
            }
            out.0.update(b"}");
        }
        Value::Array(a) => {
            out.0.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                canonical(x, out);
            }
            out.0.update(b"]");
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order_but_not_values() {
        let a = BTreeMap::from([("k".to_string(), vec![json!({"a": 1, "b": 2})])]);
        let b = BTreeMap::from([("k".to_string(), vec![json!({"b": 2, "a": 1})])]);
        let c = BTreeMap::from([("k".to_string(), vec![json!({"b": 3, "a": 1})])]);
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }

    /// The hash covers exactly the canonical text that digests were stored
    /// from before it was hashed as written: sorted keys, serde_json's
    /// escaping and number format, a 0 byte after the key and each resource.
    #[test]
    fn digest_is_the_sha256_of_the_canonical_text() {
        fn text(v: &Value, out: &mut String) {
            match v {
                Value::Object(o) => {
                    let mut keys: Vec<_> = o.keys().collect();
                    keys.sort();
                    out.push('{');
                    for (i, k) in keys.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&Value::String((*k).clone()).to_string());
                        out.push(':');
                        text(&o[k.as_str()], out);
                    }
                    out.push('}');
                }
                Value::Array(a) => {
                    out.push('[');
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        text(x, out);
                    }
                    out.push(']');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let r = json!({"z": [1, 2.5, "a\"b\n\u{1}", null, true], "a": {"y": -0.0, "x": 1e300},
            "é": "ü", "n": -17, "f": 0.1});
        let raw = BTreeMap::from([("k".to_string(), vec![r.clone(), json!(7)])]);
        let mut want = String::from("k\0");
        text(&r, &mut want);
        want.push_str("\u{0}7\u{0}");
        let at = |k: &str| want.find(&format!("\"{k}\":")).unwrap();
        assert!(at("a") < at("f") && at("f") < at("n") && at("n") < at("z") && at("x") < at("y"));
        assert_eq!(digest(&raw), hex::encode(Sha256::digest(want.as_bytes())));
    }
}
