//! Authentication of CDS Clients (CDS Hooks 2.0 §"Trusting CDS Clients").
//!
//! A CDS Client (the EHR) sends `Authorization: Bearer <JWT>` on discovery,
//! service and feedback calls. The JWT is signed with the client's private
//! key (ES384 or RS384) and names the called endpoint in `aud`. We trust an
//! explicit list of issuers, each with its JWK Set inline or at a configured
//! URL, and refuse everything else.
//!
//! Use from the HTTP layer:
//!
//! ```no_run
//! # async fn demo(settings: oncohooks::auth::AuthSettings, header: Option<&str>)
//! # -> Result<(), oncohooks::auth::AuthError> {
//! use oncohooks::auth::{ClientVerifier, bearer_token};
//! // Once, at start-up; clone into every worker.
//! let verifier = ClientVerifier::new(&settings, reqwest::Client::new())?;
//! // Per request: the token, and the exact public URL that was called.
//! let token = header.map(bearer_token).transpose()?;
//! let client = verifier
//!     .verify(token, &["https://cds.example.org/cds-services/cachexia"])
//!     .await?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! Any `Err` becomes a bare 401; log the error (it never contains the token).

pub mod access;
mod dev_token;
mod error;
mod jwks;
mod replay;
mod settings;
pub mod smart;
mod verifier;

pub use access::{AccessError, AccessSettings, AccessVerifier, Need, Principal};
pub use dev_token::{DEMO_ISSUER, DEV_CLIENT_SUB, dev_access_token, dev_token, sign_demo};
pub use error::AuthError;
pub use settings::{AuthSettings, TrustedIssuer};
pub use smart::{SmartLauncher, SmartSettings};
pub use verifier::{CdsClient, ClientVerifier, VerifiedClient, bearer_token};
