//! `oncohooks train nodule`.
//!
//! Run it with `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1` on a shared
//! machine: candle sizes its matrix-product pool from these (else from the
//! cores), and on the busy 2-core machine the same run took ~5× longer
//! with two spinning threads than with one (docs/benchmarks.md). The
//! weights do not depend on the thread count.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::classifier::{CLASS_PROMPTS, LoadedEncoder};
use super::model::Variant;
use super::train::{Example, TextSide, TrainOptions, TrainingSet, train};
use crate::ml::vit;
use crate::nodule::lidc::{MalignancyLabel, Split};
use crate::nodule::table::NoduleTable;

#[derive(Debug, Args)]
pub struct TrainNoduleArgs {
    /// Table folder written by `oncohooks nodule table`. Only its LIDC-IDRI
    /// 0001–0799 rows with a benign or malignant label are read.
    #[arg(long)]
    pub table: PathBuf,
    /// Where to write `model.json` and the member weights.
    #[arg(long)]
    pub out: PathBuf,
    /// `full` (CoCoOp with the radiomics meta-network) or `image-only` (CoOp).
    #[arg(long, default_value = "full")]
    pub variant: String,
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Epochs of the main stage (CoCoOp for full, CoOp for image-only).
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// CoOp warm-up epochs before the meta-network trains (full only).
    #[arg(long, default_value_t = 8)]
    pub warmup_epochs: usize,
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Conformal target error rate of the review gate.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// Image tower preset (`nodule-tiny`, `nodule-small`).
    #[arg(long, default_value = "nodule-tiny")]
    pub vision: String,
    /// The all-MiniLM-L6-v2 folder (scripts/setup-models.sh); recorded in
    /// `model.json` with the SHA-256 of its weights.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub text_encoder: PathBuf,
}

/// Labelled 0001–0799 rows of the table, as training reads them; what was
/// left out is counted in `source`.
pub fn training_set(table: &NoduleTable, dir: &std::path::Path) -> TrainingSet {
    let rows = table.rows();
    let (mut unsure, mut test) = (0usize, 0usize);
    let mut examples = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.split == Split::Test {
            test += 1;
            continue;
        }
        let malignant = match r.label {
            MalignancyLabel::Malignant => true,
            MalignancyLabel::Benign => false,
            MalignancyLabel::Unsure => {
                unsure += 1;
                continue;
            }
        };
        examples.push(Example {
            patient: r.patient_id.clone(),
            views: table.views(i).map(<[f32]>::to_vec),
            radiomics: table.radiomics(i).to_vec(),
            malignant,
        });
    }
    TrainingSet {
        feature_names: table.feature_names().to_vec(),
        patch: *table.patch_config(),
        examples,
        source: serde_json::json!({
            "table": dir.display().to_string(),
            "table_rows": rows.len(),
            "unsure_train_val_rows_left_out": unsure,
            "test_rows_not_read": test,
        }),
    }
}

pub fn train_command(args: TrainNoduleArgs) -> anyhow::Result<()> {
    let variant = Variant::parse(&args.variant)
        .with_context(|| format!("--variant {:?}: use full or image-only", args.variant))?;
    let vision = vit::Config::preset(&args.vision)
        .with_context(|| format!("--vision {:?}: unknown preset", args.vision))?;
    let t0 = Instant::now();
    let table = NoduleTable::load(&args.table)
        .with_context(|| format!("reading the nodule table in {}", args.table.display()))?;
    let set = training_set(&table, &args.table);
    drop(table);
    let enc = LoadedEncoder::load(&args.text_encoder)?;
    let ids = [enc.pieces(CLASS_PROMPTS[0])?, enc.pieces(CLASS_PROMPTS[1])?];
    let prompts = enc.prompts(ids)?;
    let text = TextSide::from_encoder(&enc, &args.text_encoder, &prompts);
    eprintln!(
        "{} labelled 0001–0799 nodules, {} features; loaded in {:.1} s",
        set.examples.len(),
        set.feature_names.len(),
        t0.elapsed().as_secs_f64()
    );
    let opts = TrainOptions {
        variant,
        seed: args.seed,
        members: args.members,
        warmup_epochs: args.warmup_epochs,
        max_epochs: args.epochs,
        patience: args.patience,
        batch_size: args.batch_size,
        alpha: args.alpha,
        vision,
        progress: true,
        ..TrainOptions::default()
    };
    let model = train(&set, &text, &opts, Some(&args.out))?;
    eprintln!(
        "wrote {} ({} members, temperature {:.3}, conformal threshold {:.4}) in {:.1} s",
        args.out.display(),
        model.meta.members.len(),
        model.meta.temperature,
        model.meta.conformal.qhat,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
