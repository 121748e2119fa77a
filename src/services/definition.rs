//! A service's definition: `cds-hooks/<id>/service.toml`.
//!
//! Everything that defines one service lives in its folder (definition,
//! model card, weights). Built-in services also embed their `service.toml` so
//! the binary works from any directory; a file on disk overrides it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cds::{FieldError, HookRequest, Prefetch, ServiceDescriptor};
use crate::fhir::PrefetchSpec;
use crate::fhir::prefetch::{check_prefetch, check_same_patient, discovery_templates};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefinition {
    pub id: String,
    pub hook: String,
    pub title: String,
    pub description: String,
    #[serde(default)]
    pub usage_requirements: Option<String>,
    /// Markdown model card, relative to the service folder.
    #[serde(default)]
    pub model_card: Option<String>,
    /// Trained model folder, relative to the service folder (loaded once at
    /// start-up; absent or unreadable → the service runs without it).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prefetch: BTreeMap<String, PrefetchSpec>,
    #[serde(default)]
    pub tiers: RiskTiers,
    /// The folder the definition was read from (None when embedded).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

/// Risk → card indicator (CDS Hooks 2.0 §Card `indicator`).
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskTiers {
    /// Risk at or above this → `warning`.
    pub warning: f64,
    /// Risk at or above this → `critical`.
    pub critical: f64,
}

impl Default for RiskTiers {
    fn default() -> Self {
        Self {
            warning: 0.3,
            critical: 0.6,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid service definition: {message}")]
    Invalid { path: String, message: String },
}

impl ServiceDefinition {
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, DefinitionError> {
        let def: Self = toml::from_str(text).map_err(|e| DefinitionError::Invalid {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| DefinitionError::Invalid {
            path: origin.to_owned(),
            message,
        };
        if !crate::cds::request::is_fhir_id(&def.id) {
            return Err(invalid(format!("id `{}` must be URL-safe", def.id)));
        }
        if !(0.0..=1.0).contains(&def.tiers.warning)
            || !(def.tiers.warning..=1.0).contains(&def.tiers.critical)
        {
            return Err(invalid(
                "tiers must satisfy 0 ≤ warning ≤ critical ≤ 1".into(),
            ));
        }
        Ok(def)
    }

    /// Load `<dir>/<id>/service.toml` when present, else the embedded text.
    pub fn load(dir: &Path, id: &str, embedded: &str) -> Result<Self, DefinitionError> {
        let folder = dir.join(id);
        let path = folder.join("service.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut def = Self::from_toml(&text, &path.display().to_string())?;
                def.dir = Some(folder);
                Ok(def)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::from_toml(embedded, &format!("embedded {id}/service.toml"))
            }
            Err(source) => Err(DefinitionError::Read { path, source }),
        }
    }

    pub fn descriptor(&self) -> ServiceDescriptor {
        ServiceDescriptor {
            hook: self.hook.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            id: self.id.clone(),
            prefetch: discovery_templates(&self.prefetch),
            usage_requirements: self.usage_requirements.clone(),
        }
    }

    /// Client-side mistakes in the prefetch (wrong resource type, not a
    /// Bundle, data about another patient) → 400 naming the field.
    /// Keys we did not ask for are ignored (clients may send extra keys).
    pub fn validate_prefetch(&self, req: &HookRequest) -> Result<(), FieldError> {
        for (key, value) in &req.prefetch {
            let (Some(spec), Prefetch::Resource(v)) = (self.prefetch.get(key), value) else {
                continue;
            };
            check_prefetch(key, spec, v)?;
            check_same_patient(key, v, req.context.patient_id.as_str())?;
        }
        Ok(())
    }

    pub fn tier(&self, risk: f64) -> crate::cds::Indicator {
        if risk >= self.tiers.critical {
            crate::cds::Indicator::Critical
        } else if risk >= self.tiers.warning {
            crate::cds::Indicator::Warning
        } else {
            crate::cds::Indicator::Info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cds-hooks");
        let def = ServiceDefinition::load(&dir, "cachexia-risk", "").unwrap();
        assert_eq!(def.hook, "patient-view");
        assert!(def.prefetch["patient"].required);
        assert_eq!(def.prefetch["observations"].resource, "Observation");
        assert!(def.dir.is_some());
    }

    #[test]
    fn tiers_map_to_indicators_at_their_edges() {
        let def = ServiceDefinition::from_toml(
            "id='x'\nhook='patient-view'\ntitle='t'\ndescription='d'\n[tiers]\nwarning=0.3\ncritical=0.6",
            "test",
        )
        .unwrap();
        use crate::cds::Indicator::*;
        assert_eq!(def.tier(0.2999), Info);
        assert_eq!(def.tier(0.3), Warning);
        assert_eq!(def.tier(0.5999), Warning);
        assert_eq!(def.tier(0.6), Critical);
    }

    #[test]
    fn unknown_keys_and_bad_tiers_are_rejected() {
        assert!(
            ServiceDefinition::from_toml(
                "id='x'\nhook='h'\ntitle='t'\ndescription='d'\nbogus=1",
                "t"
            )
            .is_err()
        );
        assert!(
            ServiceDefinition::from_toml(
                "id='x'\nhook='h'\ntitle='t'\ndescription='d'\n[tiers]\nwarning=0.7\ncritical=0.6",
                "t"
            )
            .is_err()
        );
    }
}
