//! DICOMweb client: QIDO-RS search and WADO-RS series retrieval
//! (DICOM PS3.18), plus the mapping from FHIR `ImagingStudy` to the series
//! to fetch.
//!
//! * Only allow-listed base URLs are contacted: a [`SeriesRef`] whose base is
//!   not in [`DicomWebConfig::allowed_base_urls`] is refused before any
//!   connection is made (an `ImagingStudy` from the EHR must not be able to
//!   point us at an arbitrary host).
//! * The bearer token arrives as a [`SecretString`] and is kept only as a
//!   sensitive header value inside [`BearerToken`], whose `Debug` is
//!   redacted: it never appears in `Debug` output, errors or logs.
//! * Every call runs under one overall deadline ([`DicomWebConfig::deadline_secs`]),
//!   covering connection, headers and the whole streamed body.
//! * WADO-RS `multipart/related; type="application/dicom"` responses are
//!   parsed as a stream ([`multipart`]); each instance is handed on as soon as
//!   it is complete, so the body is never held whole.
//! * Errors and spans never carry patient identifiers: the PatientID query of
//!   a QIDO search is not echoed back.
//!
//! Network I/O is async; decoding the instances of a retrieved series is CPU
//! work and runs on a blocking thread fed through a bounded channel
//! ([`DicomWebClient::retrieve_ct_volume`]).

pub mod fhir;
pub mod json;
pub mod multipart;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use url::Url;

use super::dicom::{AssembleOptions, CtSlice, CtVolume, DicomError, assemble_ct};
pub use json::{InstanceSummary, SeriesSummary, StudySummary};
use multipart::{MultipartError, MultipartParser, parse_content_type};

/// A DICOM UID (PS3.5 9.1): 1-64 characters, digits and dots, no empty
/// component. Validated because UIDs are spliced into request paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DicomUid(String);

impl DicomUid {
    pub fn parse(s: &str) -> Result<Self, DicomWebError> {
        let s = s.trim().trim_end_matches('\0');
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('.')
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DicomWebError::InvalidUid {
                value: s.chars().take(80).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DicomUid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DICOMweb service root such as `https://pacs.example.org/dicom-web`:
/// http(s), no credentials, query or fragment; stored without a trailing
/// slash and with the host lower-cased, so allow-list comparison is exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DicomWebBase(String);

impl DicomWebBase {
    pub fn parse(s: &str) -> Result<Self, DicomWebError> {
        let invalid = |reason: &str| DicomWebError::InvalidBaseUrl {
            url: s.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(s.trim()).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(invalid("scheme must be http or https"));
        }
        if url.host_str().is_none() {
            return Err(invalid("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not accepted"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a base URL has no query or fragment"));
        }
        // `Url` already lower-cases the host and drops a default port.
        let text = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `base/seg1/seg2…`, each segment percent-encoded.
    fn join(&self, segments: &[&str]) -> Url {
        let mut url = Url::parse(&self.0).expect("a DicomWebBase is a valid URL");
        {
            let mut path = url
                .path_segments_mut()
                .expect("http(s) URLs have path segments");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }
}

impl std::fmt::Display for DicomWebBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one series lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SeriesRef {
    pub base_url: DicomWebBase,
    pub study_uid: DicomUid,
    pub series_uid: DicomUid,
}

impl SeriesRef {
    /// From the strings a job payload stores (data from the database: checked
    /// again before anything is contacted).
    pub fn parse(base_url: &str, study_uid: &str, series_uid: &str) -> Result<Self, DicomWebError> {
        Ok(Self {
            base_url: DicomWebBase::parse(base_url)?,
            study_uid: DicomUid::parse(study_uid)?,
            series_uid: DicomUid::parse(series_uid)?,
        })
    }
}

/// Settings for [`DicomWebClient`] (a `[dicomweb]` config section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DicomWebConfig {
    /// Service roots we may contact (exact, after normalisation), or the
    /// word `loopback` for any http(s) root on 127.0.0.0/8, `[::1]` or
    /// `localhost` (the demo profile). Empty means none.
    pub allowed_base_urls: Vec<String>,
    /// Used for an `ImagingStudy` without a resolvable endpoint.
    pub default_base_url: Option<String>,
    /// Overall deadline for one search or one series retrieval, seconds.
    pub deadline_secs: u64,
    /// Largest accepted series (sum of parts), bytes.
    pub max_series_bytes: u64,
    /// Largest accepted single instance, bytes.
    pub max_instance_bytes: usize,
}

impl Default for DicomWebConfig {
    fn default() -> Self {
        Self {
            allowed_base_urls: Vec::new(),
            default_base_url: None,
            deadline_secs: 120,
            max_series_bytes: 2 * 1024 * 1024 * 1024,
            max_instance_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DicomWebError {
    #[error("DICOMweb base URL {base} is not in the allow-list; refusing to contact it")]
    NotAllowed { base: String },
    #[error("invalid DICOMweb base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("invalid DICOM UID {value:?}")]
    InvalidUid { value: String },
    #[error("invalid search parameter {name}: {reason}")]
    InvalidQuery { name: &'static str, reason: String },
    #[error("{operation} failed: {reason}")]
    Http {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation} answered HTTP {status}")]
    Status {
        operation: &'static str,
        status: u16,
    },
    #[error("{operation} did not finish within {seconds} s")]
    Deadline {
        operation: &'static str,
        seconds: u64,
    },
    #[error("{operation} answered with Content-Type {content_type:?}, expected {expected}")]
    ContentType {
        operation: &'static str,
        content_type: String,
        expected: &'static str,
    },
    #[error("{operation}: {reason}")]
    Json {
        operation: &'static str,
        reason: String,
    },
    #[error("WADO-RS multipart body: {0}")]
    Multipart(#[from] MultipartError),
    #[error("the series exceeds the {limit}-byte limit")]
    SeriesTooLarge { limit: u64 },
    #[error("the series response held no instances")]
    NoInstances,
    #[error(transparent)]
    Dicom(#[from] DicomError),
    #[error("ImagingStudy has no DICOM Study Instance UID identifier (urn:dicom:uid)")]
    NoStudyUid,
    #[error(
        "no DICOMweb endpoint for series {series_uid}: the ImagingStudy names none we can resolve and no default base URL is configured"
    )]
    NoEndpoint { series_uid: String },
    #[error("the bearer token is empty or has characters RFC 6750 does not allow")]
    InvalidToken,
    #[error("the decoding thread failed: {0}")]
    Decoder(String),
}

/// A bearer token for the PACS. Wrapped so it cannot be printed; the
/// header value is built once and marked sensitive (hidden from HTTP debug
/// output).
#[derive(Clone)]
pub struct BearerToken(HeaderValue);

impl BearerToken {
    /// Checks the RFC 6750 §2.1 `b64token` alphabet, so the header cannot
    /// fail later. The error does not contain the token.
    pub fn new(token: SecretString) -> Result<Self, DicomWebError> {
        let t = token.expose_secret();
        let ok = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        let mut value = ok
            .then(|| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            .flatten()
            .ok_or(DicomWebError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([REDACTED])")
    }
}

/// Totals of one WADO-RS retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetrieveStats {
    pub instances: usize,
    pub bytes: u64,
}

/// One received instance: its 1-based position in the response and bytes.
#[derive(Debug, Clone)]
pub struct WadoPart {
    pub index: usize,
    pub body: Bytes,
}

/// DICOMweb client. Cheap to clone (the HTTP pool is shared).
#[derive(Clone, Debug)]
pub struct DicomWebClient {
    http: reqwest::Client,
    allowed: Vec<DicomWebBase>,
    allow_loopback: bool,
    default_base: Option<DicomWebBase>,
    token: Option<BearerToken>,
    deadline: Duration,
    max_series_bytes: u64,
    max_instance_bytes: usize,
}

const DICOM_JSON: &str = "application/dicom+json";
/// PS3.18 8.7.3.5: `transfer-syntax=*` asks for instances as stored, so the
/// server need not transcode (we decode every syntax dicom-rs `native` reads).
const WADO_ACCEPT: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

impl DicomWebClient {
    pub fn new(cfg: &DicomWebConfig) -> Result<Self, DicomWebError> {
        let is_loopback = |u: &str| u.trim().eq_ignore_ascii_case("loopback");
        let allow_loopback = cfg.allowed_base_urls.iter().any(|u| is_loopback(u));
        let allowed = cfg
            .allowed_base_urls
            .iter()
            .filter(|u| !is_loopback(u))
            .map(|u| DicomWebBase::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let default_base = cfg
            .default_base_url
            .as_deref()
            .map(DicomWebBase::parse)
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DicomWebError::Http {
                operation: "building the HTTP client",
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            allowed,
            allow_loopback,
            default_base,
            token: None,
            deadline: Duration::from_secs(cfg.deadline_secs.max(1)),
            max_series_bytes: cfg.max_series_bytes,
            max_instance_bytes: cfg.max_instance_bytes,
        })
    }

    /// A copy of this client that sends `Authorization: Bearer <token>`.
    pub fn with_bearer_token(&self, token: BearerToken) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The configured default base URL, if any.
    pub fn default_base(&self) -> Option<&DicomWebBase> {
        self.default_base.as_ref()
    }

    /// Parse a base URL and check it against the allow-list.
    pub fn allowed_base(&self, url: &str) -> Result<DicomWebBase, DicomWebError> {
        let base = DicomWebBase::parse(url)?;
        self.check_allowed(&base)?;
        Ok(base)
    }

    /// Whether `base` is on the allow-list (no connection is made).
    pub fn is_allowed(&self, base: &DicomWebBase) -> bool {
        self.allowed.iter().any(|a| a == base) || (self.allow_loopback && is_loopback(base))
    }

    fn check_allowed(&self, base: &DicomWebBase) -> Result<(), DicomWebError> {
        if self.is_allowed(base) {
            Ok(())
        } else {
            Err(DicomWebError::NotAllowed {
                base: base.to_string(),
            })
        }
    }

    fn request(&self, url: Url, accept: &'static str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .get(url)
            .header(ACCEPT, HeaderValue::from_static(accept));
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, token.header());
        }
        req
    }

    async fn with_deadline<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T, DicomWebError>>,
    ) -> Result<T, DicomWebError> {
        tokio::time::timeout(self.deadline, fut)
            .await
            .unwrap_or(Err(DicomWebError::Deadline {
                operation,
                seconds: self.deadline.as_secs(),
            }))
    }

    /// GET a QIDO-RS resource and parse the DICOM JSON array.
    async fn qido(
        &self,
        operation: &'static str,
        base: &DicomWebBase,
        url: Url,
    ) -> Result<serde_json::Value, DicomWebError> {
        self.check_allowed(base)?;
        let fut = async {
            let resp = self
                .request(url, DICOM_JSON)
                .send()
                .await
                .map_err(|e| http_error(operation, e))?;
            let status = resp.status();
            // PS3.18 8.3.4.4: 204 No Content means no matches.
            if status == reqwest::StatusCode::NO_CONTENT {
                return Ok(serde_json::Value::Array(Vec::new()));
            }
            if !status.is_success() {
                return Err(DicomWebError::Status {
                    operation,
                    status: status.as_u16(),
                });
            }
            let body = resp.bytes().await.map_err(|e| http_error(operation, e))?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(serde_json::Value::Array(Vec::new()));
            }
            serde_json::from_slice(&body).map_err(|e| DicomWebError::Json {
                operation,
                reason: e.to_string(),
            })
        };
        self.with_deadline(operation, fut).await
    }

    /// QIDO-RS `GET {base}/studies?PatientID=…` (PS3.18 10.6).
    #[tracing::instrument(name = "Searching studies over QIDO-RS", skip_all, fields(base = %base))]
    pub async fn search_studies(
        &self,
        base: &DicomWebBase,
        patient_id: &str,
    ) -> Result<Vec<StudySummary>, DicomWebError> {
        if patient_id.trim().is_empty()
            || patient_id.len() > 64
            || patient_id.chars().any(char::is_control)
        {
            return Err(DicomWebError::InvalidQuery {
                name: "PatientID",
                reason: "empty, longer than 64 characters (LO) or with control characters".into(),
            });
        }
        let mut url = base.join(&["studies"]);
        url.query_pairs_mut()
            .append_pair("PatientID", patient_id)
            .append_pair("includefield", json::tag::STUDY_DESCRIPTION)
            .append_pair("includefield", json::tag::MODALITIES_IN_STUDY)
            .append_pair("includefield", json::tag::NUMBER_OF_STUDY_RELATED_SERIES);
        let body = self.qido("QIDO-RS study search", base, url).await?;
        let (studies, skipped) =
            json::entries(&body, json::study).map_err(|reason| DicomWebError::Json {
                operation: "QIDO-RS study search",
                reason,
            })?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "QIDO-RS study entries without a valid StudyInstanceUID"
            );
        }
        Ok(studies)
    }

    /// QIDO-RS `GET {base}/studies/{study}/series`.
    #[tracing::instrument(name = "Searching series over QIDO-RS", skip_all, fields(base = %base, study = %study_uid))]
    pub async fn search_series(
        &self,
        base: &DicomWebBase,
        study_uid: &DicomUid,
    ) -> Result<Vec<SeriesSummary>, DicomWebError> {
        let mut url = base.join(&["studies", study_uid.as_str(), "series"]);
        url.query_pairs_mut()
            .append_pair("includefield", json::tag::SERIES_DESCRIPTION)
            .append_pair(
                "includefield",
                json::tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
            );
        let body = self.qido("QIDO-RS series search", base, url).await?;
        let (series, skipped) =
            json::entries(&body, json::series).map_err(|reason| DicomWebError::Json {
                operation: "QIDO-RS series search",
                reason,
            })?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "QIDO-RS series entries without a valid SeriesInstanceUID"
            );
        }
        Ok(series)
    }

    /// QIDO-RS `GET {base}/studies/{study}/series/{series}/instances`.
    #[tracing::instrument(name = "Searching instances over QIDO-RS", skip_all, fields(base = %series.base_url, series = %series.series_uid))]
    pub async fn search_instances(
        &self,
        series: &SeriesRef,
    ) -> Result<Vec<InstanceSummary>, DicomWebError> {
        let url = series.base_url.join(&[
            "studies",
            series.study_uid.as_str(),
            "series",
            series.series_uid.as_str(),
            "instances",
        ]);
        let body = self
            .qido("QIDO-RS instance search", &series.base_url, url)
            .await?;
        let (instances, skipped) =
            json::entries(&body, json::instance).map_err(|reason| DicomWebError::Json {
                operation: "QIDO-RS instance search",
                reason,
            })?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "QIDO-RS instance entries without a valid SOPInstanceUID"
            );
        }
        Ok(instances)
    }

    /// WADO-RS `GET {base}/studies/{study}/series/{series}` (PS3.18 10.4),
    /// streamed: each instance is sent on `parts` as soon as it is complete.
    /// The bounded channel gives back-pressure; if the receiver is dropped
    /// (the consumer failed), the download stops.
    #[tracing::instrument(name = "Retrieving a series over WADO-RS", skip_all, fields(base = %series.base_url, series = %series.series_uid))]
    pub async fn retrieve_series(
        &self,
        series: &SeriesRef,
        parts: mpsc::Sender<WadoPart>,
    ) -> Result<RetrieveStats, DicomWebError> {
        const OP: &str = "WADO-RS series retrieval";
        self.check_allowed(&series.base_url)?;
        let url = series.base_url.join(&[
            "studies",
            series.study_uid.as_str(),
            "series",
            series.series_uid.as_str(),
        ]);
        let fut = async {
            let resp = self
                .request(url, WADO_ACCEPT)
                .send()
                .await
                .map_err(|e| http_error(OP, e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(DicomWebError::Status {
                    operation: OP,
                    status: status.as_u16(),
                });
            }
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let (mime, params) = parse_content_type(&content_type);
            let boundary = params
                .iter()
                .find(|(k, _)| k == "boundary")
                .map(|(_, v)| v.clone());
            let (true, Some(boundary)) = (mime == "multipart/related", boundary) else {
                return Err(DicomWebError::ContentType {
                    operation: OP,
                    content_type,
                    expected: "multipart/related with a boundary",
                });
            };
            let mut parser = MultipartParser::new(&boundary, self.max_instance_bytes);
            let mut stream = resp.bytes_stream();
            let mut stats = RetrieveStats {
                instances: 0,
                bytes: 0,
            };
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| http_error(OP, e))?;
                stats.bytes += chunk.len() as u64;
                if stats.bytes > self.max_series_bytes {
                    return Err(DicomWebError::SeriesTooLarge {
                        limit: self.max_series_bytes,
                    });
                }
                parser.push(&chunk);
                drop(chunk);
                while let Some(part) = parser.next_part()? {
                    if let Some(ct) = &part.content_type {
                        let (mime, _) = parse_content_type(ct);
                        if mime != "application/dicom" {
                            return Err(DicomWebError::ContentType {
                                operation: OP,
                                content_type: ct.clone(),
                                expected: "application/dicom parts",
                            });
                        }
                    }
                    stats.instances += 1;
                    let part = WadoPart {
                        index: stats.instances,
                        body: part.body,
                    };
                    if parts.send(part).await.is_err() {
                        return Err(DicomWebError::Decoder(
                            "the consumer of the retrieved instances stopped".into(),
                        ));
                    }
                }
            }
            parser.finish()?;
            Ok(stats)
        };
        self.with_deadline(OP, fut).await
    }

    /// Retrieve a CT series and assemble it into a HU volume.
    ///
    /// Instances are decoded on a blocking thread as they arrive (the
    /// channel holds at most 4 undecoded instances), so the encoded series is
    /// never held whole and the async runtime is not blocked by decoding.
    /// A decoding error stops the download and is returned as
    /// [`DicomWebError::Dicom`] naming the part ("WADO-RS part 7").
    pub async fn retrieve_ct_volume(
        &self,
        series: &SeriesRef,
        opts: AssembleOptions,
    ) -> Result<CtVolume, DicomWebError> {
        self.check_allowed(&series.base_url)?;
        let (tx, mut rx) = mpsc::channel::<WadoPart>(4);
        let span = tracing::info_span!("Decoding WADO-RS instances");
        let decoder = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut slices = Vec::new();
            while let Some(part) = rx.blocking_recv() {
                let name = format!("WADO-RS part {}", part.index);
                slices.push(CtSlice::from_bytes(name, &part.body)?);
            }
            if slices.is_empty() {
                return Ok(None);
            }
            assemble_ct(slices, &opts).map(Some)
        });
        let net = self
            .retrieve_series(series, tx)
            .instrument(tracing::Span::current())
            .await;
        let decoded = decoder
            .await
            .map_err(|e| DicomWebError::Decoder(e.to_string()))?;
        match (net, decoded) {
            // A decoding failure explains a stopped download best.
            (_, Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
            (Ok(_), Ok(None)) => Err(DicomWebError::NoInstances),
            (Ok(stats), Ok(Some(ct))) => {
                tracing::info!(
                    instances = stats.instances,
                    bytes = stats.bytes,
                    "series retrieved"
                );
                Ok(ct)
            }
        }
    }
}

/// A base on this machine: 127.0.0.0/8, `[::1]` or `localhost`.
fn is_loopback(base: &DicomWebBase) -> bool {
    match Url::parse(base.as_str()).ok().as_ref().and_then(Url::host) {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A reqwest error without its URL (which may carry a PatientID query).
fn http_error(operation: &'static str, e: reqwest::Error) -> DicomWebError {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    DicomWebError::Http { operation, reason }
}

#[cfg(test)]
mod tests;
