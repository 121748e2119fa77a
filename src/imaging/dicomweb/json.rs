//! The DICOM JSON model (PS3.18 F.2) as returned by QIDO-RS, reduced to the
//! attributes we search on. Lenient by design: an entry without the UID that
//! identifies it is skipped (and counted), other missing attributes are `None`.

use serde::Serialize;
use serde_json::Value;

use super::DicomUid;

/// Tags as DICOM JSON keys (`GGGGEEEE`, upper-case hex).
pub(crate) mod tag {
    pub const STUDY_DATE: &str = "00080020";
    pub const ACCESSION_NUMBER: &str = "00080050";
    pub const MODALITIES_IN_STUDY: &str = "00080061";
    pub const MODALITY: &str = "00080060";
    pub const STUDY_DESCRIPTION: &str = "00081030";
    pub const SERIES_DESCRIPTION: &str = "0008103E";
    pub const SOP_CLASS_UID: &str = "00080016";
    pub const SOP_INSTANCE_UID: &str = "00080018";
    pub const STUDY_INSTANCE_UID: &str = "0020000D";
    pub const SERIES_INSTANCE_UID: &str = "0020000E";
    pub const SERIES_NUMBER: &str = "00200011";
    pub const INSTANCE_NUMBER: &str = "00200013";
    pub const NUMBER_OF_STUDY_RELATED_SERIES: &str = "00201206";
    pub const NUMBER_OF_SERIES_RELATED_INSTANCES: &str = "00201209";
}

/// A study found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudySummary {
    pub study_uid: DicomUid,
    /// StudyDate as sent (`YYYYMMDD`).
    pub study_date: Option<String>,
    pub study_description: Option<String>,
    pub accession_number: Option<String>,
    pub modalities: Vec<String>,
    pub number_of_series: Option<u32>,
}

/// A series found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub series_uid: DicomUid,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub number_of_instances: Option<u32>,
}

/// An instance found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSummary {
    pub sop_instance_uid: DicomUid,
    pub sop_class_uid: Option<String>,
    pub instance_number: Option<i64>,
}

/// The values of one attribute. Numbers (IS/DS may be sent as JSON numbers)
/// become strings; PN values their Alphabetic form.
fn values(obj: &Value, tag: &str) -> Vec<String> {
    obj.get(tag)
        .and_then(|a| a.get("Value"))
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.trim().to_owned()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Object(o) => o
                        .get("Alphabetic")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn first(obj: &Value, tag: &str) -> Option<String> {
    values(obj, tag).into_iter().next()
}

fn first_int(obj: &Value, tag: &str) -> Option<i64> {
    // IS may arrive as "12" or 12 or 12.0.
    first(obj, tag).and_then(|s| {
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
    })
}

fn uid(obj: &Value, tag: &str) -> Option<DicomUid> {
    first(obj, tag).and_then(|s| DicomUid::parse(&s).ok())
}

/// Parse a QIDO-RS response body. The result is the parsed entries and the
/// number skipped for lack of a valid identifying UID.
pub(crate) fn entries<T>(
    body: &Value,
    one: impl Fn(&Value) -> Option<T>,
) -> Result<(Vec<T>, usize), String> {
    let arr = body
        .as_array()
        .ok_or_else(|| "QIDO-RS response is not a JSON array".to_owned())?;
    let parsed: Vec<T> = arr.iter().filter_map(one).collect();
    let skipped = arr.len() - parsed.len();
    Ok((parsed, skipped))
}

pub(crate) fn study(obj: &Value) -> Option<StudySummary> {
    Some(StudySummary {
        study_uid: uid(obj, tag::STUDY_INSTANCE_UID)?,
        study_date: first(obj, tag::STUDY_DATE),
        study_description: first(obj, tag::STUDY_DESCRIPTION),
        accession_number: first(obj, tag::ACCESSION_NUMBER),
        modalities: values(obj, tag::MODALITIES_IN_STUDY),
        number_of_series: first_int(obj, tag::NUMBER_OF_STUDY_RELATED_SERIES)
            .and_then(|n| u32::try_from(n).ok()),
    })
}

pub(crate) fn series(obj: &Value) -> Option<SeriesSummary> {
    Some(SeriesSummary {
        series_uid: uid(obj, tag::SERIES_INSTANCE_UID)?,
        modality: first(obj, tag::MODALITY),
        series_number: first_int(obj, tag::SERIES_NUMBER),
        series_description: first(obj, tag::SERIES_DESCRIPTION),
        number_of_instances: first_int(obj, tag::NUMBER_OF_SERIES_RELATED_INSTANCES)
            .and_then(|n| u32::try_from(n).ok()),
    })
}

pub(crate) fn instance(obj: &Value) -> Option<InstanceSummary> {
    Some(InstanceSummary {
        sop_instance_uid: uid(obj, tag::SOP_INSTANCE_UID)?,
        sop_class_uid: first(obj, tag::SOP_CLASS_UID),
        instance_number: first_int(obj, tag::INSTANCE_NUMBER),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dicom_json_series_entries_are_parsed_leniently() {
        let body = json!([
            {
                "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                "00080060": {"vr": "CS", "Value": ["CT"]},
                "00200011": {"vr": "IS", "Value": [3]},
                "0008103E": {"vr": "LO", "Value": ["Chest  "]},
                "00201209": {"vr": "IS", "Value": ["120"]}
            },
            { "00080060": {"vr": "CS", "Value": ["SEG"]} },
            { "0020000E": {"vr": "UI", "Value": ["not a uid"]} },
            { "0020000E": {"vr": "UI", "Value": ["1.2.5"]}, "00200011": {"vr": "IS"} }
        ]);
        let (found, skipped) = entries(&body, series).unwrap();
        assert_eq!(skipped, 2);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].series_uid.as_str(), "1.2.3.4");
        assert_eq!(found[0].modality.as_deref(), Some("CT"));
        assert_eq!(found[0].series_number, Some(3));
        assert_eq!(found[0].series_description.as_deref(), Some("Chest"));
        assert_eq!(found[0].number_of_instances, Some(120));
        assert_eq!(found[1].series_number, None);
        assert!(entries(&json!({"a": 1}), series).is_err());
    }

    #[test]
    fn study_entries_keep_multi_valued_modalities() {
        let body = json!([{
            "0020000D": {"vr": "UI", "Value": ["1.2.840.1"]},
            "00080061": {"vr": "CS", "Value": ["CT", "SEG"]},
            "00080020": {"vr": "DA", "Value": ["20240102"]},
            "00201206": {"vr": "IS", "Value": [2]}
        }]);
        let (studies, skipped) = entries(&body, study).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(studies[0].modalities, vec!["CT", "SEG"]);
        assert_eq!(studies[0].study_date.as_deref(), Some("20240102"));
        assert_eq!(studies[0].number_of_series, Some(2));
    }
}
