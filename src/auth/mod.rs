//! Placeholder until the auth module lands.
use serde::Deserialize;
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub demo: bool,
}
fn yes() -> bool {
    true
}
impl Default for AuthSettings {
    fn default() -> Self {
        Self { required: true, demo: false }
    }
}
