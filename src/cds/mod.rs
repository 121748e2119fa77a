//! CDS Hooks 2.0 types (<https://cds-hooks.hl7.org/2.0/>): the hook request and
//! its validation, cards, feedback and discovery. Pure: no I/O.

pub mod card;
pub mod discovery;
pub mod feedback;
pub mod request;

pub use card::{
    Action, ActionType, Card, CardBuilder, CdsResponse, Coding, Indicator, Link, SelectionBehavior,
    Source, Suggestion,
};
pub use discovery::{DiscoveryResponse, ServiceDescriptor};
pub use feedback::{FeedbackItem, FeedbackOutcome, FeedbackRequest};
pub use request::{FhirAuthorization, HookContext, HookInstance, HookRequest, PatientId, Prefetch};

/// A client mistake in a CDS Hooks request, with the JSON path of the field
/// at fault (returned to the client as a 400 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `context.patientId`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
