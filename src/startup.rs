//! Building and running the server (zero-to-production's `Application`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;
use secrecy::ExposeSecret;

use crate::auth::ClientVerifier;
use crate::config::Settings;
use crate::fhir::FhirClient;
use crate::fhir::client::http_client;
use crate::http::{self, AppState};
use crate::services::{self, Engine, Registry};
use crate::store::{Spool, Store, spool::spawn_replayer};

pub struct Application {
    port: u16,
    server: Server,
    replayer: tokio::task::JoinHandle<()>,
}

/// Load the services this server offers from the configured folder
/// (falling back to the definitions embedded in the binary).
pub fn build_registry(settings: &Settings) -> anyhow::Result<Registry> {
    let cachexia = services::cachexia::CachexiaService::load(settings)
        .context("loading the cachexia-risk service")?;
    Ok(Registry::new(vec![Arc::new(cachexia)]))
}

/// The pipeline without the HTTP server (also used by `oncohooks score`).
pub fn build_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let deadline = Duration::from_millis(settings.server.hook_deadline_ms);
    Ok(Engine {
        registry: build_registry(settings)?,
        fhir: Some(FhirClient::new(http_client(deadline), &settings.fhir)),
        fhir_deadline: deadline,
        index_date: settings.scoring.index_date,
        public_base_url: settings.server.public_base_url.clone(),
    })
}

impl Application {
    /// Connect, migrate, bind. With `bind = "127.0.0.1:0"` the OS picks the
    /// port (tests); read it back with [`Application::port`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(
            settings.database.url.expose_secret(),
            settings.database.max_connections,
        )
        .await
        .context("connecting to the database")?;
        store.migrate().await.context("running migrations")?;
        let spool = Spool::open(&settings.database.spool_dir)
            .await
            .context("opening the spool folder")?;
        let replayer = spawn_replayer(
            store.clone(),
            spool.clone(),
            Duration::from_secs(settings.database.spool_replay_interval_seconds.max(1)),
        );
        let verifier = ClientVerifier::new(&settings.auth, http_client(Duration::from_secs(5)))
            .context("configuring CDS client authentication")?;
        let engine = build_engine(&settings)?;
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            engine,
            store,
            spool,
            verifier,
            max_body_bytes: settings.server.max_body_bytes,
            public_base_url: settings.server.public_base_url.clone(),
        });
        let origins = settings.server.cors_allowed_origins.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(cors(&origins))
                .wrap(middleware::Compress::default())
                .app_data(state.clone())
                .configure(http::routes)
        })
        .listen(listener)?
        .shutdown_timeout(10);
        if let Some(w) = settings.server.workers {
            server = server.workers(w.max(1));
        }
        let server = server.run();
        tracing::info!(port, "oncohooks listening");
        Ok(Self {
            port,
            server,
            replayer,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until SIGINT/SIGTERM; actix drains in-flight requests first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let r = self.server.await;
        self.replayer.abort();
        r
    }
}

/// The CDS Hooks sandbox calls services from the browser, so CORS must allow
/// the `Authorization` header (CDS Hooks 2.0 §"Cross-Origin Resource Sharing").
fn cors(origins: &[String]) -> Cors {
    let mut c = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([
            header::HeaderName::from_static("x-total-time"),
            header::HeaderName::from_static("x-fhir-time"),
            header::HeaderName::from_static("x-inference-time"),
            header::HeaderName::from_static("x-model-version"),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin();
    } else {
        for o in origins {
            c = c.allowed_origin(o);
        }
    }
    c
}
