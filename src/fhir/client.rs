//! The FHIR client that fetches what prefetch lacks (CDS Hooks 2.0 §"FHIR
//! Resource Access").
//!
//! - Only servers on the configured allow-list are contacted: a hook request
//!   names its `fhirServer`, and fetching from whatever URL a caller names
//!   would make us an open proxy (SSRF).
//! - All keys are fetched concurrently under one deadline for the whole hook.
//! - Searches follow `Bundle.link[next]` up to a page cap, and only to the
//!   same origin as the FHIR base.
//! - The bearer token from `fhirAuthorization` is set as a sensitive header;
//!   it is never logged (reqwest errors do not include headers).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use crate::config::FhirSettings;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum FhirError {
    #[error("FHIR server {0} is not on the allow-list")]
    NotAllowed(String),
    #[error("the hook's FHIR deadline passed")]
    Deadline,
    #[error("FHIR server answered HTTP {status} for {what}")]
    Status { status: u16, what: String },
    #[error("FHIR request failed: {0}")]
    Transport(String),
    #[error("FHIR server sent something that is not FHIR JSON: {0}")]
    Body(String),
    #[error("refused to follow a next link to another origin")]
    ForeignNextLink,
}

/// Which FHIR base URLs may be contacted.
#[derive(Debug, Clone)]
pub struct AllowList {
    loopback: bool,
    exact: Vec<String>,
}

impl AllowList {
    pub fn new(entries: &[String]) -> Self {
        let mut loopback = false;
        let mut exact = Vec::new();
        for e in entries {
            if e.eq_ignore_ascii_case("loopback") {
                loopback = true;
            } else {
                exact.push(normalise(e));
            }
        }
        Self { loopback, exact }
    }

    pub fn allows(&self, base: &Url) -> bool {
        if self.exact.contains(&normalise(base.as_str())) {
            return true;
        }
        self.loopback
            && match base.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    }
}

fn normalise(u: &str) -> String {
    match Url::parse(u) {
        Ok(url) => url.as_str().trim_end_matches('/').to_ascii_lowercase(),
        Err(_) => u.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// What one prefetch key returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// A read's resource, or a search's entry resources (from all pages).
    pub resources: Vec<Value>,
    pub pages: usize,
    /// True when the page cap stopped us before the last page.
    pub truncated: bool,
}

#[derive(Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    allow: Arc<AllowList>,
    page_cap: usize,
    limiter: Arc<Semaphore>,
}

impl FhirClient {
    pub fn new(http: reqwest::Client, settings: &FhirSettings) -> Self {
        Self {
            http,
            allow: Arc::new(AllowList::new(&settings.allowed_servers)),
            page_cap: settings.page_cap.max(1),
            limiter: Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1))),
        }
    }

    pub fn is_allowed(&self, base: &Url) -> bool {
        self.allow.allows(base)
    }

    /// Fetch every `(key, relative query)` concurrently; each key's result is
    /// independent so a slow search does not cost the others.
    pub async fn fetch_all(
        &self,
        base: &Url,
        token: Option<&SecretString>,
        queries: Vec<(String, String)>,
        deadline: Instant,
    ) -> Vec<(String, Result<Fetched, FhirError>)> {
        if !self.allow.allows(base) {
            return queries
                .into_iter()
                .map(|(k, _)| {
                    (
                        k,
                        Err(FhirError::NotAllowed(base.origin().ascii_serialization())),
                    )
                })
                .collect();
        }
        let futs = queries.into_iter().map(|(key, query)| async move {
            let r = tokio::time::timeout_at(deadline, self.fetch_one(base, token, &query))
                .await
                .unwrap_or(Err(FhirError::Deadline));
            (key, r)
        });
        join_all(futs).await
    }

    #[tracing::instrument(name = "Fetching FHIR data", skip_all, fields(resource = query.split(['?', '/']).next()))]
    async fn fetch_one(
        &self,
        base: &Url,
        token: Option<&SecretString>,
        query: &str,
    ) -> Result<Fetched, FhirError> {
        let mut url = join(base, query)?;
        let mut out = Fetched::default();
        loop {
            let body = self.get_json(&url, token).await?;
            out.pages += 1;
            match body.get("resourceType").and_then(Value::as_str) {
                Some("Bundle") => {
                    let next = next_link(&body);
                    if let Some(Value::Array(entries)) = body.get("entry") {
                        for e in entries {
                            if let Some(r) = e.get("resource") {
                                out.resources.push(r.clone());
                            }
                        }
                    }
                    match next {
                        Some(n) if out.pages >= self.page_cap => {
                            let _ = n;
                            out.truncated = true;
                            return Ok(out);
                        }
                        Some(n) => {
                            let next_url = Url::parse(&n)
                                .or_else(|_| base.join(&n))
                                .map_err(|e| FhirError::Body(format!("bad next link: {e}")))?;
                            if next_url.origin() != base.origin() {
                                return Err(FhirError::ForeignNextLink);
                            }
                            url = next_url;
                        }
                        None => return Ok(out),
                    }
                }
                Some(_) => {
                    out.resources.push(body);
                    return Ok(out);
                }
                None => return Err(FhirError::Body("no resourceType".into())),
            }
        }
    }

    async fn get_json(&self, url: &Url, token: Option<&SecretString>) -> Result<Value, FhirError> {
        let _permit = self
            .limiter
            .acquire()
            .await
            .map_err(|_| FhirError::Transport("client shut down".into()))?;
        let mut req = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/fhir+json");
        if let Some(t) = token {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).map_err(|_| {
                    FhirError::Transport("access token is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FhirError::Status {
                status: status.as_u16(),
                what: url.path().to_owned(),
            });
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| FhirError::Body(e.to_string()))
    }
}

/// The error and its causes, without the URL (it may carry query details).
fn transport(e: reqwest::Error) -> FhirError {
    if e.is_timeout() {
        // The client's timeout equals the hook's FHIR budget.
        return FhirError::Deadline;
    }
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FhirError::Transport(msg)
}

/// `base` + relative query, keeping the base path (`https://h/fhir` + `Patient/1`).
fn join(base: &Url, query: &str) -> Result<Url, FhirError> {
    let mut b = base.as_str().to_owned();
    if !b.ends_with('/') {
        b.push('/');
    }
    Url::parse(&b)
        .and_then(|u| u.join(query.trim_start_matches('/')))
        .map_err(|e| FhirError::Body(format!("cannot build URL: {e}")))
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .map(str::to_owned)
}

/// Build the shared HTTP client for FHIR calls. Per-request deadlines come
/// from the hook; this timeout only bounds a single stuck connection.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("oncohooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static reqwest configuration is valid")
}

/// `https`, or `http` to a loopback host (tests and demos): for endpoints
/// that receive secrets (token endpoints, SMART authorization servers).
pub fn secure_url(raw: &str, what: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{what} {raw:?}: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "{what} {raw:?} must be https (http only for loopback)"
        )),
    }
}

/// Up to `max` bytes of a response body; a body that fails midway is what
/// was read so far (it only feeds error messages and small JSON).
pub async fn read_limited(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bearing_urls_must_be_https_except_on_loopback() {
        assert!(secure_url("https://idp.example.org/token", "t").is_ok());
        assert!(secure_url("http://127.0.0.1:9/token", "t").is_ok());
        assert!(secure_url("http://localhost/token", "t").is_ok());
        assert!(secure_url("http://idp.example.org/token", "t").is_err());
        assert!(secure_url("ftp://127.0.0.1/x", "t").is_err());
    }

    #[test]
    fn allow_list_matches_exact_bases_and_loopback() {
        let a = AllowList::new(&["https://EHR.example.org/fhir/".into()]);
        assert!(a.allows(&Url::parse("https://ehr.example.org/fhir").unwrap()));
        assert!(!a.allows(&Url::parse("https://ehr.example.org/other").unwrap()));
        assert!(!a.allows(&Url::parse("http://127.0.0.1:8080/fhir").unwrap()));
        let l = AllowList::new(&["loopback".into()]);
        assert!(l.allows(&Url::parse("http://127.0.0.1:8080/fhir").unwrap()));
        assert!(l.allows(&Url::parse("http://[::1]:1/fhir").unwrap()));
        assert!(l.allows(&Url::parse("http://localhost/fhir").unwrap()));
        assert!(!l.allows(&Url::parse("http://10.0.0.1/fhir").unwrap()));
        assert!(!AllowList::new(&[]).allows(&Url::parse("http://127.0.0.1/").unwrap()));
    }

    #[test]
    fn join_keeps_base_path() {
        let b = Url::parse("https://h/fhir").unwrap();
        assert_eq!(
            join(&b, "Patient/1").unwrap().as_str(),
            "https://h/fhir/Patient/1"
        );
        assert_eq!(
            join(&b, "Observation?patient=1&code=a|b").unwrap().as_str(),
            "https://h/fhir/Observation?patient=1&code=a|b"
        );
    }
}
