//! Feedback (CDS Hooks 2.0 §"Feedback"): `POST {baseUrl}/cds-services/{id}/feedback`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackOutcome {
    Accepted,
    Overridden,
}

impl FeedbackOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Overridden => "overridden",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackItem {
    pub card: Uuid,
    pub outcome: FeedbackOutcome,
    /// The ids of accepted suggestions (`acceptedSuggestions[].id`).
    pub accepted_suggestions: Vec<String>,
    /// `overrideReason` as sent (`reason` Coding and/or `userComment`).
    pub override_reason: Option<Value>,
    pub outcome_timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRequest {
    pub feedback: Vec<FeedbackItem>,
}

impl FeedbackRequest {
    pub fn parse(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new(
                "$",
                "the request body must be a JSON object",
            ));
        };
        let items = match obj.remove("feedback") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => return Err(FieldError::new("feedback", "must not be empty")),
            Some(_) => return Err(FieldError::new("feedback", "must be an array")),
            None => return Err(FieldError::new("feedback", "required")),
        };
        let feedback = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_item(v, &format!("feedback[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self { feedback })
    }
}

fn parse_item(v: Value, path: &str) -> Result<FeedbackItem, FieldError> {
    let Value::Object(mut o) = v else {
        return Err(FieldError::new(path, "must be a JSON object"));
    };
    let card = string(&mut o, "card", path)?
        .ok_or_else(|| FieldError::new(format!("{path}.card"), "required"))?;
    let card = Uuid::parse_str(&card)
        .map_err(|_| FieldError::new(format!("{path}.card"), "must be the card's uuid"))?;
    let outcome = match string(&mut o, "outcome", path)?.as_deref() {
        Some("accepted") => FeedbackOutcome::Accepted,
        Some("overridden") => FeedbackOutcome::Overridden,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.outcome"),
                "must be `accepted` or `overridden`",
            ));
        }
        None => return Err(FieldError::new(format!("{path}.outcome"), "required")),
    };
    let ts = string(&mut o, "outcomeTimestamp", path)?
        .ok_or_else(|| FieldError::new(format!("{path}.outcomeTimestamp"), "required"))?;
    let outcome_timestamp = DateTime::parse_from_rfc3339(&ts)
        .map_err(|_| {
            FieldError::new(
                format!("{path}.outcomeTimestamp"),
                "must be an ISO 8601 date-time with a time zone",
            )
        })?
        .with_timezone(&Utc);
    let accepted_suggestions = match o.remove("acceptedSuggestions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .into_iter()
            .enumerate()
            .map(|(j, s)| {
                s.get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        FieldError::new(
                            format!("{path}.acceptedSuggestions[{j}].id"),
                            "required string",
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.acceptedSuggestions"),
                "must be an array",
            ));
        }
    };
    let override_reason = match o.remove("overrideReason") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.overrideReason"),
                "must be a JSON object",
            ));
        }
    };
    if outcome == FeedbackOutcome::Accepted && override_reason.is_some() {
        return Err(FieldError::new(
            format!("{path}.overrideReason"),
            "only allowed when outcome is `overridden`",
        ));
    }
    Ok(FeedbackItem {
        card,
        outcome,
        accepted_suggestions,
        override_reason,
        outcome_timestamp,
    })
}

fn string(o: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, FieldError> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FieldError::new(format!("{path}.{key}"), "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_spec_examples() {
        let r = FeedbackRequest::parse(json!({"feedback": [
            {"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb", "outcome": "accepted",
             "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
             "outcomeTimestamp": "2021-12-11T10:05:31Z"},
            {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
             "overrideReason": {"reason": {"code": "reason-code-provided-by-service",
                "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
                "display": "Patient refused"}, "userComment": "x"},
             "outcomeTimestamp": "2021-12-11T10:05:31Z"}
        ]}))
        .unwrap();
        assert_eq!(r.feedback.len(), 2);
        assert_eq!(r.feedback[1].outcome, FeedbackOutcome::Overridden);
    }

    #[test]
    fn bad_feedback_names_the_field() {
        let e = FeedbackRequest::parse(json!({"feedback": [{"card": "nope", "outcome": "accepted",
            "outcomeTimestamp": "2021-12-11T10:05:31Z"}]}))
        .unwrap_err();
        assert_eq!(e.field, "feedback[0].card");
        let e = FeedbackRequest::parse(
            json!({"feedback": [{"card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
            "outcome": "maybe", "outcomeTimestamp": "2021-12-11T10:05:31Z"}]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "feedback[0].outcome");
        let e = FeedbackRequest::parse(json!({"feedback": []})).unwrap_err();
        assert_eq!(e.field, "feedback");
    }
}
