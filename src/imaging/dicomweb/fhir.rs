//! FHIR R4B `ImagingStudy` → the DICOMweb series to fetch.
//!
//! * Study UID: `ImagingStudy.identifier` with system `urn:dicom:uid` and
//!   value `urn:oid:<uid>` (FHIR R4 ImagingStudy notes, "DICOM Study Instance
//!   UID"). Also accepted: any identifier whose value is `urn:oid:<uid>`, and
//!   the run-together form `urn:dicom:uid:urn:oid:<uid>` seen in the wild.
//! * Series: `series[].uid` and `series[].modality.code`.
//! * Base URL: the series' own `endpoint`, else the study's `endpoint`
//!   (FHIR: a series endpoint overrides the study's), else the configured
//!   default. An Endpoint reference `#id` is resolved from `contained`; any
//!   other reference (`Endpoint/123`, absolute URL) is given to the caller's
//!   resolver, which returns the Endpoint's `address` if it has the resource
//!   (for example from the prefetch bundle) — we do not fetch it here.
//!   Only DICOMweb endpoints (connectionType `dicom-wado-rs`, `dicom-qido-rs`,
//!   `dicom-stow-rs`) are used from contained Endpoints.
//!
//! The resulting base URL is not checked against the allow-list here; the
//! client refuses it when asked to contact it.

use fhir_sdk::r4b::resources::{ImagingStudy, Resource};
use fhir_sdk::r4b::types::Reference;

use super::{DicomUid, DicomWebBase, DicomWebError, SeriesRef};

/// A series named by an `ImagingStudy`, with where to fetch it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagingSeries {
    pub series: SeriesRef,
    /// `series.modality.code`, e.g. `CT`.
    pub modality: Option<String>,
    pub number_of_instances: Option<u32>,
    pub description: Option<String>,
}

/// The DICOM Study Instance UID of an `ImagingStudy`.
pub fn study_uid(study: &ImagingStudy) -> Result<DicomUid, DicomWebError> {
    let candidates = study.identifier.iter().flatten().filter_map(|id| {
        let value = id.value.as_deref()?.trim();
        let system = id.system.as_deref().unwrap_or("");
        let value = value.strip_prefix("urn:dicom:uid:").unwrap_or(value);
        if let Some(uid) = value.strip_prefix("urn:oid:") {
            return Some(uid);
        }
        (system == "urn:dicom:uid").then_some(value)
    });
    for c in candidates {
        if let Ok(uid) = DicomUid::parse(c) {
            return Ok(uid);
        }
    }
    Err(DicomWebError::NoStudyUid)
}

/// All series of `study` with their DICOMweb location.
///
/// `resolve` maps a non-contained Endpoint reference to that Endpoint's
/// `address` (return `None` when unknown). `default_base` is used when no
/// endpoint resolves. A series whose endpoint cannot be found and with no
/// default is an error ([`DicomWebError::NoEndpoint`]); so is an address
/// that is not a valid base URL.
pub fn series_refs(
    study: &ImagingStudy,
    resolve: &dyn Fn(&str) -> Option<String>,
    default_base: Option<&DicomWebBase>,
) -> Result<Vec<ImagingSeries>, DicomWebError> {
    let study_uid = study_uid(study)?;
    let study_base = first_address(study, &study.endpoint, resolve);
    let mut out = Vec::new();
    for series in study.series.iter().flatten() {
        let series_uid = DicomUid::parse(&series.uid)?;
        let base =
            match first_address(study, &series.endpoint, resolve).or_else(|| study_base.clone()) {
                Some(address) => DicomWebBase::parse(&address)?,
                None => default_base
                    .cloned()
                    .ok_or_else(|| DicomWebError::NoEndpoint {
                        series_uid: series_uid.to_string(),
                    })?,
            };
        out.push(ImagingSeries {
            series: SeriesRef {
                base_url: base,
                study_uid: study_uid.clone(),
                series_uid,
            },
            modality: series.modality.code.clone(),
            number_of_instances: series.number_of_instances,
            description: series.description.clone(),
        });
    }
    Ok(out)
}

/// The address of the first endpoint reference that resolves.
fn first_address(
    study: &ImagingStudy,
    endpoints: &[Option<Reference>],
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    endpoints.iter().flatten().find_map(|r| {
        let reference = r.reference.as_deref()?;
        match reference.strip_prefix('#') {
            Some(id) => contained_endpoint(study, id),
            None => resolve(reference),
        }
    })
}

fn contained_endpoint(study: &ImagingStudy, id: &str) -> Option<String> {
    study.contained.iter().find_map(|r| match r {
        Resource::Endpoint(e) if e.id.as_deref() == Some(id) => {
            let kind = e.connection_type.code.as_deref().unwrap_or("");
            let dicomweb = matches!(kind, "dicom-wado-rs" | "dicom-qido-rs" | "dicom-stow-rs");
            dicomweb.then(|| e.address.clone())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn study(value: serde_json::Value) -> ImagingStudy {
        serde_json::from_value(value).expect("valid R4B ImagingStudy")
    }

    fn base(s: &str) -> DicomWebBase {
        DicomWebBase::parse(s).unwrap()
    }

    #[test]
    fn contained_endpoint_and_series_override_are_used() {
        let s = study(json!({
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": "Patient/p1"},
            "contained": [
                {"resourceType": "Endpoint", "id": "pacs", "status": "active",
                 "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
                 "payloadType": [{"text": "DICOM"}],
                 "address": "https://pacs.example.org/dicom-web/"},
                {"resourceType": "Endpoint", "id": "fhir", "status": "active",
                 "connectionType": {"code": "hl7-fhir-rest"},
                 "payloadType": [{"text": "FHIR"}],
                 "address": "https://fhir.example.org"}
            ],
            "identifier": [
                {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.25.1"},
                {"type": {"text": "accession"}, "value": "ACC1"}
            ],
            "endpoint": [{"reference": "#pacs"}],
            "series": [
                {"uid": "2.25.10", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}, "numberOfInstances": 120},
                {"uid": "2.25.11", "modality": {"code": "SEG"}, "endpoint": [{"reference": "Endpoint/other"}]},
                {"uid": "2.25.12", "modality": {"code": "CT"}, "endpoint": [{"reference": "#fhir"}]}
            ]
        }));
        let resolve =
            |r: &str| (r == "Endpoint/other").then(|| "http://archive.local/wado".to_owned());
        let refs = series_refs(&s, &resolve, None).unwrap();
        assert_eq!(refs.len(), 3);
        assert_eq!(refs[0].series.study_uid.as_str(), "2.25.1");
        assert_eq!(
            refs[0].series.base_url,
            base("https://pacs.example.org/dicom-web")
        );
        assert_eq!(refs[0].modality.as_deref(), Some("CT"));
        assert_eq!(refs[0].number_of_instances, Some(120));
        assert_eq!(refs[1].series.base_url, base("http://archive.local/wado"));
        // A non-DICOMweb contained endpoint is ignored; the study's applies.
        assert_eq!(
            refs[2].series.base_url,
            base("https://pacs.example.org/dicom-web")
        );
    }

    #[test]
    fn study_uid_forms_are_recognised() {
        for (system, value) in [
            (Some("urn:dicom:uid"), "urn:oid:1.2.840.113619.2.1"),
            (Some("urn:dicom:uid"), "1.2.840.113619.2.1"),
            (None, "urn:dicom:uid:urn:oid:1.2.840.113619.2.1"),
            (Some("urn:ietf:rfc:3986"), "urn:oid:1.2.840.113619.2.1"),
        ] {
            let mut id = json!({"value": value});
            if let Some(sys) = system {
                id["system"] = json!(sys);
            }
            let s = study(json!({
                "resourceType": "ImagingStudy", "status": "available",
                "subject": {"reference": "Patient/p1"},
                "identifier": [id]
            }));
            assert_eq!(
                study_uid(&s).unwrap().as_str(),
                "1.2.840.113619.2.1",
                "{value}"
            );
        }
        let s = study(json!({
            "resourceType": "ImagingStudy", "status": "available",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "http://hospital/acc", "value": "12345"}]
        }));
        assert!(matches!(study_uid(&s), Err(DicomWebError::NoStudyUid)));
    }

    #[test]
    fn the_default_base_is_used_only_when_no_endpoint_resolves() {
        let s = study(json!({
            "resourceType": "ImagingStudy", "status": "available",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:2.25.1"}],
            "endpoint": [{"reference": "Endpoint/unknown"}],
            "series": [{"uid": "2.25.10", "modality": {"code": "CT"}}]
        }));
        let none = |_: &str| None;
        assert!(matches!(
            series_refs(&s, &none, None),
            Err(DicomWebError::NoEndpoint { .. })
        ));
        let default = base("http://127.0.0.1:8042/dicom-web");
        let refs = series_refs(&s, &none, Some(&default)).unwrap();
        assert_eq!(refs[0].series.base_url, default);
        // A resolved address that is not a usable base URL is an error.
        let bad = |_: &str| Some("ftp://pacs/".to_owned());
        assert!(matches!(
            series_refs(&s, &bad, Some(&default)),
            Err(DicomWebError::InvalidBaseUrl { .. })
        ));
    }
}
