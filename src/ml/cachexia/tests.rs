//! A tiny synthetic cohort trains a tiny ensemble in seconds; the tests
//! check determinism, missing modalities, the notes path with a
//! deterministic test embedder, evaluation output and the confidence maths.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::dataset::{self, Dataset};
use super::ensemble::{CachexiaEnsemble, Conformal, META_FILE, fit_temperature};
use super::evaluate::{self, auprc};
use super::inputs::{MODALITIES, NOTES_DIM, NotesEmbedder, RawInputs};
use super::train::{TrainOptions, train};
use crate::features::cachexia::Modality;
use crate::ml::metrics::ece;
use crate::synth::{Split, SynthConfig, write_cohort};

struct Fixture {
    _dir: tempfile::TempDir,
    cohort: PathBuf,
}

/// 300 patients, generated once per test process.
fn cohort() -> &'static Path {
    static F: OnceLock<Fixture> = OnceLock::new();
    &F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cohort = dir.path().join("cohort");
        write_cohort(&SynthConfig::new(300, 7).unwrap(), &cohort).unwrap();
        Fixture { _dir: dir, cohort }
    })
    .cohort
}

fn tiny_options(seed: u64) -> TrainOptions {
    TrainOptions {
        seed,
        members: 2,
        max_epochs: 5,
        patience: 3,
        batch_size: 32,
        d_model: 16,
        n_heads: 2,
        d_ff: 32,
        ..TrainOptions::default()
    }
}

fn dataset(embedder: Option<&dyn NotesEmbedder>) -> Dataset {
    dataset::load(cohort(), embedder, false).unwrap()
}

/// Bag of hashed words → 384-d, L2-normalised: deterministic, tests only.
struct HashingEmbedder {
    calls: AtomicUsize,
}

impl NotesEmbedder for HashingEmbedder {
    fn id(&self) -> String {
        "test-hashing-embedder/1".into()
    }

    fn embed_patient_notes(&self, notes: &[String]) -> anyhow::Result<Option<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if notes.is_empty() {
            return Ok(None);
        }
        let mut v = vec![0f32; NOTES_DIM];
        for word in notes.iter().flat_map(|n| n.split_whitespace()) {
            let h = Sha256::digest(word.to_lowercase().as_bytes());
            v[usize::from(u16::from_le_bytes([h[0], h[1]])) % NOTES_DIM] += 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        Ok(Some(v.into_iter().map(|x| x / norm).collect()))
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn tiny_cohort_trains_and_evaluates_and_same_seed_gives_identical_files() {
    let ds = dataset(None);
    assert!(ds.examples.len() >= 290, "{}", ds.examples.len());
    let out = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        out.path().join("a"),
        out.path().join("b"),
        out.path().join("c"),
    );
    train(&ds, &tiny_options(11), Some(&a)).unwrap();
    train(&ds, &tiny_options(11), Some(&b)).unwrap();
    train(&ds, &tiny_options(12), Some(&c)).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 3, "model.json + 2 members");
    assert_eq!(fa, fb, "same seed, same bytes");
    assert_ne!(fa, fc, "another seed gives other weights");

    // Loads from disk; the loaded model predicts what was evaluated.
    let model = CachexiaEnsemble::load(&a).unwrap();
    assert!(
        model
            .version()
            .starts_with(&format!("{}+", super::train::MODEL_VERSION))
    );
    assert!(!model.meta.uses(Modality::Notes), "no embedder, no notes");
    let eval = evaluate::evaluate(&model, &ds).unwrap();
    let test_n = ds.split(Split::Test).len();
    assert_eq!(eval.test.n, test_n);
    assert!(eval.test.auroc.is_some_and(|x| (0.0..=1.0).contains(&x)));
    assert_eq!(eval.ablation.len(), 4);
    assert_eq!(eval.classic.len(), 3);
    assert!((0.0..=1.0).contains(&eval.review.coverage));
    let report = out.path().join("report");
    eval.write(&report, "test cohort").unwrap();
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for needle in [
        "AUROC",
        "Fearon 2011",
        "mCXI",
        "+ labs",
        "stage",
        "trained without the notes",
    ] {
        assert!(md.contains(needle), "report lacks {needle}");
    }
    for png in ["roc.png", "calibration.png", "risk-coverage.png"] {
        assert!(
            std::fs::read(report.join(png))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
    }
    // Evaluation is deterministic too.
    let again = evaluate::evaluate(&model, &ds).unwrap();
    assert_eq!(again.test, eval.test);
}

#[test]
fn only_demographics_still_gives_a_prediction_that_says_what_is_missing() {
    let ds = dataset(None);
    let model = train(&ds, &tiny_options(5), None).unwrap();
    let full = ds
        .examples
        .iter()
        .find(|e| e.raw.present()[..4].iter().all(|p| *p))
        .expect("a patient with clinical, labs, weight and CT");
    let mut only = full.raw.clone();
    for (i, m) in MODALITIES.iter().enumerate() {
        if *m != Modality::Clinical {
            only.continuous[i].iter_mut().for_each(|x| *x = f64::NAN);
        }
    }
    only.notes = None;
    let p = model.predict(&only).unwrap();
    assert!(p.risk > 0.0 && p.risk < 1.0);
    assert_eq!(p.modalities_used, vec![Modality::Clinical]);
    assert_eq!(p.modalities_missing.len(), 4);
    assert!(p.interval.0 <= p.risk + 1e-9 && p.risk <= p.interval.1 + 1e-9);
    // Only the clinical modality and its inputs can be factors.
    assert!(
        p.factors
            .iter()
            .all(|f| f.name == "clinical" || f.kind == "input")
    );

    let q = model.predict(&full.raw).unwrap();
    assert!(q.modalities_used.len() >= 4);
    assert!(q.factors.iter().any(|f| f.name == "labs"));
    // The factors are the model's own numbers: removing the top modality
    // changes the risk by exactly what it says.
    let top = q.factors.iter().find(|f| f.kind == "modality").unwrap();
    let m = MODALITIES
        .into_iter()
        .find(|m| super::inputs::key(*m) == top.name)
        .unwrap();
    let mut e = model.meta.standardizer.encode(&full.raw);
    model.mask_untrained(&mut e);
    let without = e.without(&[m]);
    let (probs, _) = model.probabilities(&[&e, &without]).unwrap();
    let delta = 100.0 * (probs[0] - probs[1]);
    assert!(
        (delta - top.delta_pp).abs() < 0.01,
        "{delta} vs {}",
        top.delta_pp
    );
}

#[test]
fn notes_embeddings_are_used_and_cached_by_content() {
    let embedder = Arc::new(HashingEmbedder {
        calls: AtomicUsize::new(0),
    });
    let ds = dataset(Some(embedder.as_ref()));
    let with_notes = ds.examples.iter().filter(|e| e.raw.notes.is_some()).count();
    assert!(with_notes > 100, "{with_notes}");
    let first = embedder.calls.load(Ordering::SeqCst);
    assert!(first > 0);
    // Second read: every embedding comes from the cache file.
    let again = dataset(Some(embedder.as_ref()));
    assert_eq!(embedder.calls.load(Ordering::SeqCst), first);
    for (a, b) in ds.examples.iter().zip(&again.examples) {
        assert_eq!(a.raw.notes, b.raw.notes);
    }
    let model = train(&ds, &tiny_options(3), None).unwrap();
    assert!(model.meta.uses(Modality::Notes));
    assert_eq!(
        model.meta.notes_embedder.as_deref(),
        Some("test-hashing-embedder/1")
    );
    let e = ds.examples.iter().find(|e| e.raw.notes.is_some()).unwrap();
    let p = model.predict(&e.raw).unwrap();
    assert!(p.modalities_used.contains(&Modality::Notes));
}

/// Several patients in one pass (concurrent hooks, issue 4 §6) get what
/// each gets alone: same risk, spread, set, gate, modalities and factors.
/// Twenty patients, some stripped to demographics, span several of
/// `member_logits`' chunks, so rows of one patient land in two.
#[test]
fn predict_many_equals_predict_one_at_a_time() {
    let embedder = HashingEmbedder {
        calls: AtomicUsize::new(0),
    };
    let ds = dataset(Some(&embedder));
    let model = train(&ds, &tiny_options(4), None).unwrap();
    let mut raws: Vec<RawInputs> = ds.examples.iter().take(20).map(|e| e.raw.clone()).collect();
    for raw in raws.iter_mut().step_by(4) {
        for (i, m) in MODALITIES.iter().enumerate() {
            if *m != Modality::Clinical {
                raw.continuous[i].iter_mut().for_each(|x| *x = f64::NAN);
            }
        }
        raw.notes = None;
    }
    let many = model.predict_many(&raws).unwrap();
    assert_eq!(many.len(), raws.len());
    for (raw, got) in raws.iter().zip(&many) {
        let want = model.predict(raw).unwrap();
        assert!(
            (got.risk - want.risk).abs() < 1e-6,
            "{} vs {}",
            got.risk,
            want.risk
        );
        assert!((got.interval.0 - want.interval.0).abs() < 1e-6);
        assert!((got.interval.1 - want.interval.1).abs() < 1e-6);
        assert_eq!(got.prediction_set, want.prediction_set);
        assert_eq!(got.review_suggested, want.review_suggested);
        assert_eq!(got.modalities_used, want.modalities_used);
        assert_eq!(got.modalities_missing, want.modalities_missing);
        assert_eq!(got.factors.len(), want.factors.len());
        for (g, w) in got.factors.iter().zip(&want.factors) {
            // Rounded to 0.01 pp: a last-bit difference may round apart.
            assert!((g.delta_pp - w.delta_pp).abs() <= 0.011, "{g:?} vs {w:?}");
        }
        let names = |fs: &[super::ensemble::Factor]| {
            let mut v: Vec<String> = fs.iter().map(|f| f.name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&got.factors), names(&want.factors));
    }
    // Not one patient's answer repeated: the batch holds different risks.
    let mut risks: Vec<f64> = many.iter().map(|p| p.risk).collect();
    risks.dedup();
    assert!(risks.len() > 10);
    assert!(model.predict_many(&[]).unwrap().is_empty());

    // One patient whose notes vector has the wrong width fails the pass;
    // `predict_each` then answers the others as if alone.
    let mut bad = raws[1].clone();
    bad.notes = Some(vec![0.1; 10]);
    let mixed = [raws[1].clone(), bad.clone(), raws[2].clone()];
    assert!(model.predict_many(&mixed).is_err());
    let each = model.predict_each(&mixed);
    assert!(each[1].is_err());
    assert_eq!(each[0].as_ref().unwrap(), &model.predict(&raws[1]).unwrap());
    assert_eq!(each[2].as_ref().unwrap(), &model.predict(&raws[2]).unwrap());
}

#[test]
fn a_model_trained_without_notes_ignores_a_notes_embedding() {
    let ds = dataset(None);
    let model = train(&ds, &tiny_options(9), None).unwrap();
    let mut raw: RawInputs = ds.examples[0].raw.clone();
    raw.notes = Some(vec![1.0 / (NOTES_DIM as f32).sqrt(); NOTES_DIM]);
    let p = model.predict(&raw).unwrap();
    assert!(p.modalities_not_used.contains(&Modality::Notes));
    assert!(!p.modalities_used.contains(&Modality::Notes));
    raw.notes = None;
    assert_eq!(model.predict(&raw).unwrap().risk, p.risk);
}

#[test]
fn conformal_sets_follow_the_calibration_quantile() {
    // Scores 1 − p(true): 0.0, 0.1, …, 0.9 → with α = 0.2, n = 10 the
    // ⌈11·0.8⌉ = 9th smallest is 0.8.
    let probs: Vec<f64> = (0..10).map(|i| 1.0 - f64::from(i) / 10.0).collect();
    let labels = vec![true; 10];
    let c = Conformal::fit(&probs, &labels, 0.2);
    assert!((c.qhat - 0.8).abs() < 1e-12);
    assert_eq!(c.set(0.9), (false, true));
    assert!(!c.review(0.9));
    assert!(c.review(0.5), "both classes within the threshold");
    assert_eq!(c.set(0.1), (true, false));
    // Too few calibration points for the level: the set is everything.
    assert_eq!(Conformal::fit(&[0.9], &[true], 0.1).qhat, 1.0);
}

#[test]
fn temperature_fit_undoes_a_known_sharpening() {
    // Labels drawn from sigmoid(z), model logits 3·z: the fitted T is ≈ 3.
    let mut logits = Vec::new();
    let mut labels = Vec::new();
    for i in 0..4000 {
        let z = (f64::from(i) / 4000.0 - 0.5) * 8.0;
        let p = 1.0 / (1.0 + (-z).exp());
        // Deterministic "draw": a low-discrepancy sequence.
        let u = (f64::from(i) * 0.618_033_988_75).fract();
        logits.push(3.0 * z);
        labels.push(u < p);
    }
    let t = fit_temperature(&logits, &labels);
    assert!((t - 3.0).abs() < 0.3, "{t}");
}

#[test]
fn auprc_and_ece_on_hand_computed_cases() {
    // Ranking + + − +: AP = (1/3)(1 + 1 + 3/4).
    let s = [(0.9, true), (0.8, true), (0.7, false), (0.6, true)];
    assert!((auprc(&s).unwrap() - (2.75 / 3.0)).abs() < 1e-12);
    // Perfectly calibrated bins give 0; a constant 0.9 on a 50 % group gives 0.4.
    assert!(ece(&[0.25, 0.25, 0.25, 0.25], &[true, false, false, false], 10) < 1e-12);
    assert!((ece(&[0.9, 0.9], &[true, false], 10) - 0.4).abs() < 1e-12);
}

#[test]
fn a_model_folder_with_a_wrong_format_is_rejected_with_the_reason() {
    let ds = dataset(None);
    let dir = tempfile::tempdir().unwrap();
    train(&ds, &tiny_options(2), Some(dir.path())).unwrap();
    let path = dir.path().join(META_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"format\": 1", "\"format\": 99", 1)).unwrap();
    let err = CachexiaEnsemble::load(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("format 99"), "{err}");
}

/// A hook fixture's prefetch as a timeline (index date of the API tests).
fn fixture_timeline(rel: &str) -> crate::clinical::Timeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel);
    let hook: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut record = crate::fhir::PatientRecord::default();
    for (key, v) in hook["prefetch"].as_object().unwrap() {
        match v["entry"].as_array() {
            Some(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    record.add_resource(&format!("{key}[{i}]"), e["resource"].clone());
                }
            }
            None if v.is_object() => record.add_resource(key, v.clone()),
            None => {}
        }
    }
    crate::clinical::Timeline::from_record(&record, "2026-11-20".parse().unwrap())
}

#[test]
fn inputs_from_a_demographics_only_record_have_only_the_clinical_modality() {
    let raw = RawInputs::from_timeline(&fixture_timeline("hooks/demographics-only.json"), None);
    assert_eq!(raw.present(), [true, false, false, false, false]);
    let full = RawInputs::from_timeline(&fixture_timeline("hooks/cachexia-full.json"), None);
    assert_eq!(full.present(), [true, true, true, true, false]);
    // CRP 24 mg/L is read on the log scale; a missing CRP stays missing.
    assert!((full.continuous[1][1] - 24f64.ln()).abs() < 1e-9);
    assert!(raw.continuous[1][1].is_nan());
}

/// Four patients with different modalities present, inputs from a fixed
/// formula.
fn mixed_batch(device: &candle_core::Device) -> super::inputs::ModalityBatch {
    let rows = mixed_rows();
    super::inputs::ModalityBatch::new(&rows.iter().collect::<Vec<_>>(), device).unwrap()
}

fn mixed_rows() -> Vec<super::inputs::Encoded> {
    use super::inputs::{Encoded, input_dims};
    let presence = [
        [true; 5],
        [true, false, true, true, false],
        [true, false, false, false, false],
        [false, true, true, false, true],
    ];
    let rows: Vec<Encoded> = presence
        .iter()
        .enumerate()
        .map(|(r, present)| Encoded {
            x: input_dims().map(|dim| {
                (0..dim)
                    .map(|i| ((r * 31 + i * 7) % 13) as f32 / 6.5 - 1.0)
                    .collect()
            }),
            present: *present,
        })
        .collect();
    rows
}

/// Training must reach every parameter: candle-nn's fused LayerNorm and
/// softmax have no backward pass, and a model built on them trains only its
/// residual path (the attention's query/key weights and every LayerNorm
/// would keep their initial values). The same weights loaded for inference
/// (fused kernels, the token-attention op) give the same logits.
#[test]
fn every_parameter_gets_a_gradient_and_inference_matches_training() {
    use super::inputs::input_dims;
    use super::model::{CachexiaFusion, Config};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;

    let dev = Device::Cpu;
    let cfg = Config::tiny(2, input_dims());
    let varmap = VarMap::new();
    let model =
        CachexiaFusion::load(VarBuilder::from_varmap(&varmap, DType::F32, &dev), &cfg).unwrap();
    super::train::init_params(&varmap, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3)).unwrap();
    let batch = mixed_batch(&dev);
    let logits = model.forward(&batch).unwrap();
    assert!(logits.track_op());
    let weights = Tensor::new(&[1f32, -0.5, 2.0, 0.7], &dev).unwrap();
    let grads = (&logits * weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in &names {
        let g = grads
            .get(data[*name].as_tensor())
            .unwrap_or_else(|| panic!("{name} gets no gradient"));
        let size = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(size > 0.0, "{name} has a zero gradient");
    }
    let tensors = names
        .iter()
        .map(|n| ((*n).clone(), data[*n].as_tensor().detach()))
        .collect();
    let frozen =
        CachexiaFusion::load(VarBuilder::from_tensors(tensors, DType::F32, &dev), &cfg).unwrap();
    let inferred = frozen.forward(&batch).unwrap();
    assert!(!inferred.track_op());
    let diff = crate::ml::ops::max_abs_diff(&inferred, &logits);
    assert!(
        diff < 1e-5,
        "inference differs from the training path by {diff}"
    );
}

/// All members stacked in one pass, on distinct tokens, give each member's
/// own logits, with no, one and two blocks (the last block runs on the CLS
/// token alone), for rows with repeated and absent modalities.
#[test]
fn stacked_forward_equals_each_member() {
    use super::inputs::input_dims;
    use super::model::{CachexiaFusion, Config, StackedFusion};
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;

    let dev = Device::Cpu;
    // The mixed rows, then rows as a hook scores them: the first patient
    // with one modality left out, or one input zeroed, at a time.
    let mut rows = mixed_rows();
    for mi in 0..5 {
        let mut r = rows[0].clone();
        r.present[mi] = false;
        rows.push(r);
        let mut r = rows[0].clone();
        r.x[mi][0] = 0.0;
        rows.push(r);
    }
    let refs: Vec<_> = rows.iter().collect();
    let batch = super::inputs::ModalityBatch::new(&refs, &dev).unwrap();
    let tokens = super::model::TokenBatch::new(&refs, &dev).unwrap();
    for layers in [0, 1, 2] {
        let cfg = Config::tiny(layers, input_dims());
        let members: Vec<CachexiaFusion> = (0..3)
            .map(|seed| {
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
                let model = CachexiaFusion::load(vb, &cfg).unwrap();
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                super::train::init_params(&varmap, &mut rng).unwrap();
                let tensors = crate::ml::ops::frozen_tensors(&varmap);
                drop(model);
                CachexiaFusion::load(VarBuilder::from_tensors(tensors, DType::F32, &dev), &cfg)
                    .unwrap()
            })
            .collect();
        let stacked = StackedFusion::new(&members).unwrap();
        let all = stacked.forward(&tokens).unwrap();
        assert_eq!(all.dims(), &[3, batch.len()]);
        for (m, member) in members.iter().enumerate() {
            let own = member.forward(&batch).unwrap();
            let diff = crate::ml::ops::max_abs_diff(&all.get(m).unwrap(), &own);
            assert!(
                diff < 1e-5,
                "{layers} layers, member {m}: differs by {diff}"
            );
        }
    }
}

/// A tiny ensemble trained with `seed` on the test cohort, and the first
/// `n` patients' inputs encoded for it.
fn tiny_model_and_rows(seed: u64, n: usize) -> (CachexiaEnsemble, Vec<super::inputs::Encoded>) {
    let ds = dataset(None);
    let model = train(&ds, &tiny_options(seed), None).unwrap();
    let encoded = ds
        .examples
        .iter()
        .take(n)
        .map(|e| model.meta.standardizer.encode(&e.raw))
        .collect();
    (model, encoded)
}

/// A row's logits are bit for bit the same whatever batch it is scored in:
/// alone, or among 150 rows that [`CachexiaEnsemble::member_logits`] splits
/// into two passes (this tiny model fits 113 rows in one), so a stored
/// prediction can be re-scored exactly.
#[test]
fn a_rows_logits_do_not_depend_on_its_batch() {
    let (model, encoded) = tiny_model_and_rows(3, 150);
    let rows: Vec<_> = encoded.iter().collect();
    let together = model.member_logits(&rows).unwrap();
    for (r, row) in rows.iter().enumerate().step_by(13) {
        let alone = model.member_logits(&[*row]).unwrap();
        for (m, member) in alone.iter().enumerate() {
            assert_eq!(
                member[0].to_bits(),
                together[m][r].to_bits(),
                "row {r}, member {m}"
            );
        }
    }
}

/// The ensemble's stacked, chunked inference equals the members one by
/// one on a hook-sized set of rows (more than one chunk).
#[test]
fn ensemble_logits_equal_the_members_one_by_one() {
    let (model, encoded) = tiny_model_and_rows(4, 150);
    let rows: Vec<_> = encoded.iter().collect();
    let stacked = model.member_logits(&rows).unwrap();
    let single = model.member_logits_unstacked(&rows).unwrap();
    assert_eq!(stacked.len(), single.len());
    for (a, b) in stacked.iter().zip(&single) {
        assert_eq!(a.len(), rows.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "stacked logits differ by {worst}");
    }
}
