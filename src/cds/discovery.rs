//! Discovery (CDS Hooks 2.0 §"Discovery"): `GET {baseUrl}/cds-services`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryResponse {
    pub services: Vec<ServiceDescriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescriptor {
    pub hook: String,
    pub title: String,
    pub description: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefetch: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_requirements: Option<String>,
}
