//! Cards (CDS Hooks 2.0 §"CDS Service Response").
//!
//! The spec's JSON rules are enforced by construction: optional fields are
//! skipped rather than sent as `null`; empty arrays, objects and strings are
//! never sent (except `cards: []`); `selectionBehavior` is set whenever there
//! are suggestions; override reasons always carry a `display`; `appContext`
//! exists only on `smart` links.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Spec: "summary … SHOULD be under a 140-character limit". We enforce it.
pub const SUMMARY_MAX_CHARS: usize = 140;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CdsResponse {
    pub cards: Vec<Card>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub uuid: Uuid,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<SelectionBehavior>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Coding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Coding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub code: String,
    /// Required by the spec for `overrideReasons`; we always send it.
    pub display: String,
}

impl Coding {
    pub fn new(system: Option<&str>, code: &str, display: &str) -> Self {
        Self {
            system: system.map(str::to_owned),
            code: code.to_owned(),
            display: display.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionBehavior {
    AtMostOne,
    Any,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub label: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: LinkType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Absolute,
    Smart,
}

impl Link {
    pub fn absolute(label: &str, url: &str) -> Self {
        Self {
            label: label.into(),
            url: url.into(),
            kind: LinkType::Absolute,
            app_context: None,
        }
    }

    /// A SMART app launch link; `appContext` is only allowed here (spec §Link).
    pub fn smart(label: &str, url: &str, app_context: Option<String>) -> Self {
        Self {
            label: label.into(),
            url: url.into(),
            kind: LinkType::Smart,
            app_context: app_context.filter(|c| !c.is_empty()),
        }
    }
}

/// Builds a [`Card`] that satisfies the spec's rules.
#[derive(Debug, Clone)]
pub struct CardBuilder {
    card: Card,
}

impl CardBuilder {
    pub fn new(summary: &str, indicator: Indicator, source: Source) -> Self {
        Self {
            card: Card {
                uuid: Uuid::new_v4(),
                summary: clip_summary(summary),
                detail: None,
                indicator,
                source,
                suggestions: Vec::new(),
                selection_behavior: None,
                override_reasons: Vec::new(),
                links: Vec::new(),
            },
        }
    }

    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.card.uuid = uuid;
        self
    }

    pub fn detail(mut self, markdown: impl Into<String>) -> Self {
        let d = markdown.into();
        self.card.detail = (!d.trim().is_empty()).then_some(d);
        self
    }

    pub fn suggestion(mut self, s: Suggestion) -> Self {
        self.card.suggestions.push(s);
        self
    }

    pub fn selection_behavior(mut self, b: SelectionBehavior) -> Self {
        self.card.selection_behavior = Some(b);
        self
    }

    pub fn override_reason(mut self, c: Coding) -> Self {
        self.card.override_reasons.push(c);
        self
    }

    pub fn link(mut self, l: Link) -> Self {
        self.card.links.push(l);
        self
    }

    pub fn build(mut self) -> Card {
        // Spec: selectionBehavior "MUST be provided if a card contains suggestions".
        if !self.card.suggestions.is_empty() && self.card.selection_behavior.is_none() {
            self.card.selection_behavior = Some(SelectionBehavior::AtMostOne);
        }
        if self.card.suggestions.is_empty() {
            self.card.selection_behavior = None;
        }
        self.card
    }
}

/// Cut a summary to 140 characters on a character boundary, with an ellipsis.
pub fn clip_summary(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= SUMMARY_MAX_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(SUMMARY_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// Paths in `value` that break the spec's JSON rules (null, empty string,
/// empty array or object), except the top-level `cards` array. Used by tests
/// and debug assertions on everything we send.
pub fn json_rule_violations(value: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(format!("{path}: null")),
            Value::String(s) if s.is_empty() => out.push(format!("{path}: empty string")),
            Value::Array(a) => {
                if a.is_empty() && path != "$.cards" {
                    out.push(format!("{path}: empty array"));
                }
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            Value::Object(o) => {
                if o.is_empty() {
                    out.push(format!("{path}: empty object"));
                }
                for (k, x) in o {
                    walk(x, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "$", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            label: "oncohooks".into(),
            url: None,
            icon: None,
            topic: None,
        }
    }

    #[test]
    fn minimal_card_serialises_without_nulls_or_empties() {
        let card = CardBuilder::new("Risk low", Indicator::Info, source()).build();
        let v = serde_json::to_value(CdsResponse { cards: vec![card] }).unwrap();
        assert!(json_rule_violations(&v).is_empty(), "{v}");
        let empty = serde_json::to_value(CdsResponse { cards: vec![] }).unwrap();
        assert!(json_rule_violations(&empty).is_empty());
    }

    #[test]
    fn suggestions_force_a_selection_behavior() {
        let card = CardBuilder::new("x", Indicator::Warning, source())
            .suggestion(Suggestion {
                label: "Refer".into(),
                uuid: Some(Uuid::new_v4()),
                is_recommended: None,
                actions: vec![],
            })
            .build();
        assert_eq!(card.selection_behavior, Some(SelectionBehavior::AtMostOne));
        let v = serde_json::to_value(&card).unwrap();
        assert_eq!(v["selectionBehavior"], "at-most-one");
    }

    #[test]
    fn long_summaries_are_clipped_to_140_chars() {
        let s = clip_summary(&"é".repeat(300));
        assert_eq!(s.chars().count(), 140);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn app_context_only_on_smart_links() {
        let a = serde_json::to_value(Link::absolute("Open", "https://x")).unwrap();
        assert!(a.get("appContext").is_none());
        let s = serde_json::to_value(Link::smart("Open", "https://x", Some("p=1".into()))).unwrap();
        assert_eq!(s["appContext"], "p=1");
        assert_eq!(s["type"], "smart");
    }

    #[test]
    fn violations_are_found() {
        let v = serde_json::json!({"cards": [], "a": null, "b": "", "c": [], "d": {}});
        assert_eq!(json_rule_violations(&v).len(), 4);
    }
}
