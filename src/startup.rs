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

use crate::auth::{AccessVerifier, ClientVerifier, SmartLauncher};
use crate::config::Settings;
use crate::fhir::FhirClient;
use crate::fhir::client::http_client;
use crate::http::{self, AppState};
use crate::imaging::ImagingCache;
use crate::imaging::jobs::{BodyCompositionWorker, run_imaging_workers};
use crate::services::{self, Engine, Registry};
use crate::store::jobs::WorkerPoolStats;
use crate::store::{Spool, Store, spool::spawn_replayer};
use crate::writeback::{WritebackPolicy, WritebackWorker, run_writeback_workers};

pub struct Application {
    port: u16,
    server: Server,
    replayer: tokio::task::JoinHandle<()>,
    imaging_workers: Option<WorkerPool>,
    writeback_workers: Option<WorkerPool>,
}

/// An in-process worker pool of `serve`: imaging (`imaging.workers_in_serve`)
/// or write-back (`writeback.workers_in_serve`).
struct WorkerPool {
    stop: tokio::sync::watch::Sender<bool>,
    pool: tokio::task::JoinHandle<WorkerPoolStats>,
}

/// How long `serve` waits at shutdown for the jobs in hand (per pool). A job cut
/// short keeps its lease until it expires and runs again elsewhere
/// (at-least-once delivery), so waiting longer than a container's grace
/// period gains nothing.
const WORKER_DRAIN: Duration = Duration::from_secs(20);

/// Load the services this server offers from the configured folder
/// (falling back to the definitions embedded in the binary). `imaging`:
/// the imaging cache and job queue (`None` offline: CT counts as missing).
/// `notes_store`: the shared note-embedding cache (`None` offline: notes are
/// embedded inline).
pub fn build_registry(
    settings: &Settings,
    imaging: Option<ImagingCache>,
    notes_store: Option<Store>,
) -> anyhow::Result<Registry> {
    build_registry_with(settings, imaging, notes_store, ServiceOverrides::default())
}

/// What tests (and embedders) may put in place of what `service.toml`
/// names. Empty by default: the models come from the service folders.
#[derive(Clone, Default)]
pub struct ServiceOverrides {
    /// Used instead of the `lung-nodule-malignancy` model folder.
    pub nodule_classifier: Option<Arc<dyn crate::ml::nodule::NoduleClassifier>>,
}

/// [`build_registry`] with overrides.
pub fn build_registry_with(
    settings: &Settings,
    imaging: Option<ImagingCache>,
    notes_store: Option<Store>,
    overrides: ServiceOverrides,
) -> anyhow::Result<Registry> {
    let cachexia =
        services::cachexia::CachexiaService::load(settings, imaging.clone(), notes_store)
            .context("loading the cachexia-risk service")?;
    let mut nodule = services::nodule::NoduleService::load(settings, imaging)
        .context("loading the lung-nodule-malignancy service")?;
    if let Some(model) = overrides.nodule_classifier {
        nodule = nodule.with_model(Some(model));
    }
    Ok(Registry::new(vec![Arc::new(cachexia), Arc::new(nodule)]))
}

/// The pipeline without the HTTP server (also used by `oncohooks score`,
/// with no imaging cache and no note-embedding cache).
pub fn build_engine(
    settings: &Settings,
    imaging: Option<ImagingCache>,
    notes_store: Option<Store>,
) -> anyhow::Result<Engine> {
    build_engine_with(settings, imaging, notes_store, ServiceOverrides::default())
}

/// [`build_engine`] with overrides.
pub fn build_engine_with(
    settings: &Settings,
    imaging: Option<ImagingCache>,
    notes_store: Option<Store>,
    overrides: ServiceOverrides,
) -> anyhow::Result<Engine> {
    let deadline = Duration::from_millis(settings.server.hook_deadline_ms);
    Ok(Engine {
        registry: build_registry_with(settings, imaging, notes_store, overrides)?,
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
        Self::build_with(settings, ServiceOverrides::default()).await
    }

    /// [`Application::build`] with service overrides (tests).
    pub async fn build_with(
        settings: Settings,
        overrides: ServiceOverrides,
    ) -> anyhow::Result<Self> {
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
        let access = AccessVerifier::new(&settings.access, http_client(Duration::from_secs(5)))
            .context("configuring access tokens ([access])")?;
        let smart = SmartLauncher::new(&settings.smart, settings.server.public_base_url.as_deref())
            .context("configuring the SMART launch of the review app ([smart])")?;
        let imaging = ImagingCache::new(store.clone(), &settings.imaging)
            .context("configuring imaging (imaging.dicomweb)")?;
        let engine = build_engine_with(&settings, Some(imaging), Some(store.clone()), overrides)?;
        let imaging_workers = match settings.imaging.workers_in_serve {
            0 => None,
            n => {
                let worker = BodyCompositionWorker::new(&settings.imaging, store.clone())
                    .context("configuring the imaging workers")?;
                let (stop, shutdown) = tokio::sync::watch::channel(false);
                let imaging = settings.imaging.clone();
                let pool = tokio::spawn(async move {
                    run_imaging_workers(Arc::new(worker), &imaging, n, shutdown).await
                });
                Some(WorkerPool { stop, pool })
            }
        };
        let writeback_workers = match (
            settings.writeback.enabled,
            settings.writeback.workers_in_serve,
        ) {
            (false, _) | (true, 0) => None,
            (true, n) => {
                let worker = WritebackWorker::new(&settings, store.clone())
                    .context("configuring the write-back workers ([writeback])")?;
                let (stop, shutdown) = tokio::sync::watch::channel(false);
                let wb = settings.writeback.clone();
                let pool = tokio::spawn(async move {
                    run_writeback_workers(Arc::new(worker), &wb, n, shutdown).await
                });
                Some(WorkerPool { stop, pool })
            }
        };
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("binding {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            engine,
            store,
            spool,
            verifier,
            access,
            max_body_bytes: settings.server.max_body_bytes,
            public_base_url: settings.server.public_base_url.clone(),
            writeback: WritebackPolicy::new(&settings.writeback),
            smart,
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
            imaging_workers,
            writeback_workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until SIGINT/SIGTERM; actix drains in-flight requests first,
    /// then the imaging workers finish the jobs in hand (up to 20 s).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let r = self.server.await;
        self.replayer.abort();
        for (what, pool) in [
            ("Imaging", self.imaging_workers),
            ("Write-back", self.writeback_workers),
        ] {
            if let Some(w) = pool {
                w.drain(what).await;
            }
        }
        r
    }
}

impl WorkerPool {
    /// Asks the pool to stop and waits up to [`WORKER_DRAIN`] for the jobs
    /// in hand.
    async fn drain(self, what: &str) {
        let _ = self.stop.send(true);
        let abort = self.pool.abort_handle();
        match tokio::time::timeout(WORKER_DRAIN, self.pool).await {
            Ok(Ok(stats)) => tracing::info!(?stats, "{what} workers drained"),
            Ok(Err(e)) => tracing::error!(error = %e, "{what} worker task ended abnormally"),
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    "{what} jobs still running at shutdown; their leases will expire and they will run again"
                );
            }
        }
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
            header::HeaderName::from_static("x-model-batch"),
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
