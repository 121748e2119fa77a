//! Model, training and classifier tests on tiny encoders (seconds): a
//! random 2-layer BERT in place of MiniLM, a 16 × 16 image tower, and
//! nodules drawn as spheres whose radiomics come from `radiomics::extract`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::classifier::{META_FILE, ModelMeta, NoduleModel, TextEncoderRef};
use super::model::{Config, NoduleNet, Prompts, Variant};
use super::train::{Example, TextSide, TrainOptions, TrainingSet, auroc, train};
use super::{NoduleClassifier, NoduleModelError, NoduleModelInput};
use crate::imaging::Volume;
use crate::imaging::patch::PatchConfig;
use crate::ml::bert::{self, BertModel};
use crate::ml::vit;

const H: usize = 32;

fn det(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random 2-layer BERT with the Hugging Face tensor names.
fn tiny_bert() -> Arc<BertModel> {
    let cfg: bert::Config = serde_json::from_value(serde_json::json!({
        "vocab_size": 40, "hidden_size": H, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
        "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12
    }))
    .unwrap();
    let mut t = HashMap::new();
    let mut seed = 0;
    let mut put = |name: String, shape: &[usize]| {
        seed += 1;
        let v = if name.contains("LayerNorm.weight") {
            (det(shape, seed, 0.1) + 1.0).unwrap()
        } else {
            det(shape, seed, 0.3)
        };
        t.insert(name, v);
    };
    put("embeddings.word_embeddings.weight".into(), &[40, H]);
    put("embeddings.position_embeddings.weight".into(), &[32, H]);
    put("embeddings.token_type_embeddings.weight".into(), &[2, H]);
    put("embeddings.LayerNorm.weight".into(), &[H]);
    put("embeddings.LayerNorm.bias".into(), &[H]);
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        for n in ["query", "key", "value"] {
            put(format!("{p}.attention.self.{n}.weight"), &[H, H]);
            put(format!("{p}.attention.self.{n}.bias"), &[H]);
        }
        put(format!("{p}.attention.output.dense.weight"), &[H, H]);
        put(format!("{p}.attention.output.dense.bias"), &[H]);
        put(format!("{p}.attention.output.LayerNorm.weight"), &[H]);
        put(format!("{p}.attention.output.LayerNorm.bias"), &[H]);
        put(format!("{p}.intermediate.dense.weight"), &[64, H]);
        put(format!("{p}.intermediate.dense.bias"), &[64]);
        put(format!("{p}.output.dense.weight"), &[H, 64]);
        put(format!("{p}.output.dense.bias"), &[H]);
        put(format!("{p}.output.LayerNorm.weight"), &[H]);
        put(format!("{p}.output.LayerNorm.bias"), &[H]);
    }
    let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
    Arc::new(BertModel::load(vb, &cfg).unwrap())
}

/// `[CLS]` = 1, `[SEP]` = 2; "benign nodule" = [5, 7], "malignant nodule"
/// = [6, 8, 7] (different lengths, as word pieces can be).
fn tiny_prompts() -> Prompts {
    Prompts::new(tiny_bert(), 1, 2, [vec![5, 7], vec![6, 8, 7]]).unwrap()
}

fn tiny_vision() -> vit::Config {
    vit::Config {
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_channels: 3,
        image_size: 16,
        patch_size: 8,
        rms_norm_eps: 1e-5,
        qkv_bias: false,
        use_bias: false,
    }
}

fn tiny_config(variant: Variant, n_radiomics: usize) -> Config {
    let mut c = Config::new(tiny_vision(), variant, H, n_radiomics);
    c.meta_hidden = 8;
    c
}

fn var_net(cfg: &Config) -> (VarMap, NoduleNet) {
    let varmap = VarMap::new();
    let net = NoduleNet::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        cfg,
    )
    .unwrap();
    (varmap, net)
}

#[test]
fn forward_gives_two_logits_per_nodule_deterministically() {
    let cfg = tiny_config(Variant::Full, 5);
    let (_vm, net) = var_net(&cfg);
    let prompts = tiny_prompts();
    let px = det(&[3, 3, 16, 16], 9, 0.5).affine(1.0, 0.5).unwrap();
    let z = det(&[3, 5], 10, 2.0);
    let a = net.forward(&px, Some(&z), &prompts).unwrap();
    assert_eq!(a.dims(), &[3, 2]);
    let a: Vec<Vec<f32>> = a.to_vec2().unwrap();
    let b: Vec<Vec<f32>> = net
        .forward(&px, Some(&z), &prompts)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(a, b, "same input, same bits");
    // A nodule alone scores as inside the batch.
    let one: Vec<Vec<f32>> = net
        .forward(
            &px.narrow(0, 2, 1).unwrap(),
            Some(&z.narrow(0, 2, 1).unwrap()),
            &prompts,
        )
        .unwrap()
        .to_vec2()
        .unwrap();
    for (x, y) in one[0].iter().zip(&a[2]) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    // Radiomics move the logits (through the prompts), and the full variant
    // refuses to run without them.
    let z2 = (&z * -1.0).unwrap();
    let c: Vec<Vec<f32>> = net
        .forward(&px, Some(&z2), &prompts)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_ne!(a, c);
    // Without radiomics the full variant runs its bare context (warm-up).
    let bare: Vec<Vec<f32>> = net.forward(&px, None, &prompts).unwrap().to_vec2().unwrap();
    assert_ne!(a, bare);
    // Image-only: class prompts shared by every nodule, radiomics ignored.
    let (_vm2, img) = var_net(&tiny_config(Variant::ImageOnly, 0));
    let d = img.forward(&px, None, &prompts).unwrap();
    assert_eq!(d.dims(), &[3, 2]);
    let e = img.forward(&px, Some(&z), &prompts).unwrap();
    assert_eq!(d.to_vec2::<f32>().unwrap(), e.to_vec2::<f32>().unwrap());
}

/// The gradient of the malignant logit reaches the context vectors and
/// the meta-network through the frozen BERT, and it is the true gradient:
/// it matches a central finite difference of the same function.
#[test]
fn gradient_reaches_the_context_and_the_meta_network_through_bert() {
    let cfg = tiny_config(Variant::Full, 5);
    let (varmap, net) = var_net(&cfg);
    let prompts = tiny_prompts();
    let px = det(&[2, 3, 16, 16], 3, 0.5).affine(1.0, 0.5).unwrap();
    let z = det(&[2, 5], 4, 1.5);
    let loss = |net: &NoduleNet| {
        net.malignant_logit(&px, Some(&z), &prompts)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss(&net).backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for name in [
        "prompt.ctx",
        "prompt.meta_net.linear1.weight",
        "prompt.meta_net.linear2.bias",
        "vision.preprocessor.patchifier.proj.weight",
        "image_proj.weight",
        "logit_scale",
    ] {
        let g = grads
            .get(data[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let mag: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(mag > 0.0, "zero gradient for {name}");
    }
    // Finite differences on a few context entries and a meta-network weight.
    for (name, idx) in [
        ("prompt.ctx", [0usize, 3]),
        ("prompt.ctx", [3, 17]),
        ("prompt.meta_net.linear1.weight", [2, 1]),
    ] {
        let var = &data[name];
        let analytic: f32 = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()[idx[0]][idx[1]];
        let base = var.as_tensor().copy().unwrap();
        let shifted = |eps: f32| {
            let mut v: Vec<Vec<f32>> = base.to_vec2().unwrap();
            v[idx[0]][idx[1]] += eps;
            var.set(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap();
            let l: f32 = loss(&net).to_scalar().unwrap();
            var.set(&base).unwrap();
            l
        };
        let eps = 1e-2;
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic).abs() <= 0.05 * analytic.abs().max(0.05),
            "{name}{idx:?}: analytic {analytic} vs numeric {numeric}"
        );
    }
}

/// A nodule as a sphere of radius `r` voxels: the three centre planes
/// (windowed, in [0, 1]) and the 107 radiomics of its mask.
fn sphere(r: f64, hu: f32, rng: &mut ChaCha8Rng) -> ([Vec<f32>; 3], crate::radiomics::Features) {
    let n = 16usize;
    let c = 8.0 + rng.random_range(-0.5..0.5);
    let mut img = vec![-850f32; n * n * n];
    let mut mask = vec![0u8; n * n * n];
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                let d =
                    ((i as f64 - c).powi(2) + (j as f64 - c).powi(2) + (k as f64 - 8.0).powi(2))
                        .sqrt();
                let at = (k * n + j) * n + i;
                img[at] += rng.random_range(-60.0..60.0);
                if d <= r {
                    img[at] = hu + rng.random_range(-40.0..40.0);
                    mask[at] = 1;
                }
            }
        }
    }
    let win = |v: f32| ((v + 1000.0) / 1400.0).clamp(0.0, 1.0);
    let axial: Vec<f32> = (0..n * n).map(|p| win(img[(8 * n) * n + p])).collect();
    let coronal: Vec<f32> = (0..n * n)
        .map(|p| {
            let (row, col) = (p / n, p % n);
            win(img[((n - 1 - row) * n + 8) * n + col])
        })
        .collect();
    let sagittal: Vec<f32> = (0..n * n)
        .map(|p| {
            let (row, col) = (p / n, p % n);
            win(img[((n - 1 - row) * n + col) * n + 8])
        })
        .collect();
    let image = Volume::new(img, [n, n, n], [1.0; 3]);
    let m = Volume::new(mask, [n, n, n], [1.0; 3]);
    let f = crate::radiomics::extract(&image, &m, &Default::default()).unwrap();
    ([axial, coronal, sagittal], f)
}

/// Separable toy data: malignant spheres are larger and denser.
fn toy_nodules(
    count: usize,
    first_patient: usize,
    seed: u64,
) -> Vec<(String, NoduleModelInput, bool)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let malignant = i % 3 == 0;
            let (r, hu) = if malignant {
                (rng.random_range(4.5..6.5), 40.0)
            } else {
                (rng.random_range(2.0..3.5), -300.0)
            };
            let (views, radiomics) = sphere(r, hu, &mut rng);
            (
                format!("LIDC-IDRI-{:04}", first_patient + i / 2),
                NoduleModelInput { views, radiomics },
                malignant,
            )
        })
        .collect()
}

fn toy_set(nodules: &[(String, NoduleModelInput, bool)]) -> TrainingSet {
    let names: Vec<String> = nodules[0]
        .1
        .radiomics
        .iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    TrainingSet {
        examples: nodules
            .iter()
            .map(|(p, inp, y)| Example {
                patient: p.clone(),
                views: inp.views.clone(),
                radiomics: names
                    .iter()
                    .map(|n| inp.radiomics.get(n).unwrap())
                    .collect(),
                malignant: *y,
            })
            .collect(),
        feature_names: names,
        patch: PatchConfig {
            size: 16,
            spacing_mm: 1.0,
            ..Default::default()
        },
        source: serde_json::json!({"table": "toy spheres"}),
    }
}

fn toy_options(variant: Variant) -> TrainOptions {
    TrainOptions {
        variant,
        members: 2,
        warmup_epochs: 4,
        max_epochs: 4,
        patience: 4,
        batch_size: 16,
        learning_rate: 3e-3,
        vision: tiny_vision(),
        meta_hidden: 8,
        validation_fraction: 0.2,
        calibration_fraction: 0.25,
        ..Default::default()
    }
}

fn text_side(prompts: &Prompts) -> TextSide<'_> {
    TextSide {
        prompts,
        encoder: TextEncoderRef {
            name: "tiny-bert".into(),
            dir: "unused".into(),
            weights_sha256: "0123456789abcdef".into(),
            class_prompts: ["benign nodule".into(), "malignant nodule".into()],
            class_ids: prompts.class_ids().clone(),
        },
    }
}

/// Train on toy spheres, then: beats chance on held-out toy nodules; the
/// same seed writes the same bytes; the written folder loads back to the
/// same predictions; outputs keep the contract (set/review/interval);
/// drivers are gradient × input of the ensemble's calibrated log-odds.
#[test]
fn a_toy_table_trains_saves_reloads_and_explains() {
    let data = toy_nodules(72, 1, 7);
    let held_out = toy_nodules(30, 500, 8);
    let set = toy_set(&data);
    let prompts = tiny_prompts();
    let text = text_side(&prompts);
    let opts = toy_options(Variant::Full);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let model = train(&set, &text, &opts, Some(&a)).unwrap();

    // Beats chance clearly on nodules it never saw.
    let inputs: Vec<NoduleModelInput> = held_out.iter().map(|(_, i, _)| i.clone()).collect();
    let labels: Vec<bool> = held_out.iter().map(|(_, _, y)| *y).collect();
    let out = model.predict(&inputs).unwrap();
    let probs: Vec<f64> = out.iter().map(|o| o.probability).collect();
    let auc = auroc(&probs, &labels);
    assert!(auc > 0.85, "held-out toy AUROC {auc}");

    // Same seed, same bytes (model.json differs only in the wall time).
    let b = dir.path().join("b");
    train(&set, &text, &opts, Some(&b)).unwrap();
    for m in 0..opts.members {
        let f = format!("member-{m}.safetensors");
        assert_eq!(
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
            "{f}"
        );
    }
    let strip = |p: &Path| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.join(META_FILE)).unwrap()).unwrap();
        v["training"]["seconds"] = serde_json::Value::Null;
        v
    };
    assert_eq!(strip(&a), strip(&b));

    // Written folder → same predictions.
    let meta: ModelMeta =
        serde_json::from_slice(&std::fs::read(a.join(META_FILE)).unwrap()).unwrap();
    let loaded = NoduleModel::from_meta(&a, meta.clone(), &prompts, "0123456789abcdef").unwrap();
    let again = loaded.predict(&inputs).unwrap();
    for (x, y) in out.iter().zip(&again) {
        assert!((x.probability - y.probability).abs() < 1e-5);
        assert_eq!(x.prediction_set, y.prediction_set);
    }
    assert_eq!(loaded.info().patch.size, 16);
    assert!(loaded.info().trained_on_rendered_pixels);
    // Other encoder weights are refused, by name.
    let err = NoduleModel::from_meta(&a, meta, &prompts, "ffffffffffffffff")
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("not the ones this model was trained with"),
        "{err}"
    );

    // Contract: set of one class ⇔ no review; interval brackets the members.
    for o in &again {
        assert_eq!(o.review_suggested, o.prediction_set.len() != 1);
        assert!(o.interval.0 <= o.interval.1);
        assert!((0.0..=1.0).contains(&o.probability));
        assert_eq!(o.confidence, o.probability.max(1.0 - o.probability));
        assert_eq!(o.radiomics_drivers.len(), set.feature_names.len());
        let d = &o.radiomics_drivers;
        assert!(
            d.windows(2)
                .all(|w| w[0].contribution.abs() >= w[1].contribution.abs())
        );
    }

    // Drivers are the model's: contribution_j = z_j · ∂(mean log-odds / T)/∂z_j.
    let one = [&inputs[0]];
    let batch = loaded.batch(&one).unwrap();
    let z = batch.radiomics.clone().unwrap();
    let drivers = loaded.drivers(&batch).unwrap().unwrap();
    let t = loaded.meta.temperature;
    let zs: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
    let top = (0..zs.len())
        .max_by(|&i, &j| drivers[0][i].abs().total_cmp(&drivers[0][j].abs()))
        .unwrap();
    let logodds = |delta: f32| {
        let mut v = zs.clone();
        v[top] += delta;
        let b2 = super::classifier::Batch {
            pixels: batch.pixels.clone(),
            radiomics: Some(Tensor::from_vec(v, (1, zs.len()), &Device::Cpu).unwrap()),
        };
        let l = loaded.member_logits(&b2).unwrap();
        l.iter().map(|m| f64::from(m[0])).sum::<f64>() / l.len() as f64 / t
    };
    let eps = 1e-2;
    let numeric = f64::from(zs[top]) * (logodds(eps) - logodds(-eps)) / (2.0 * f64::from(eps));
    let analytic = drivers[0][top];
    assert!(
        (numeric - analytic).abs() <= 0.05 * analytic.abs().max(1e-3),
        "driver {analytic} vs finite difference {numeric}"
    );
}

#[test]
fn bad_inputs_are_named_errors_and_image_only_needs_no_radiomics() {
    let data = toy_nodules(48, 1, 11);
    let set = toy_set(&data);
    let prompts = tiny_prompts();
    let text = text_side(&prompts);
    let mut opts = toy_options(Variant::Full);
    opts.members = 1;
    opts.warmup_epochs = 1;
    opts.max_epochs = 1;
    let model = train(&set, &text, &opts, None).unwrap();
    let good = data[0].1.clone();

    let mut short = good.clone();
    short.views[1].truncate(10);
    let err = model.predict(&[short]).unwrap_err();
    assert!(matches!(err, NoduleModelError::Input(_)));
    assert!(err.to_string().contains("coronal"), "{err}");

    let mut nan = good.clone();
    nan.views[0][3] = f32::NAN;
    assert!(matches!(
        model.predict(&[nan]).unwrap_err(),
        NoduleModelError::Input(_)
    ));

    let no_radiomics = NoduleModelInput {
        views: good.views.clone(),
        radiomics: Default::default(),
    };
    let err = model
        .predict(std::slice::from_ref(&no_radiomics))
        .unwrap_err();
    assert!(err.to_string().contains("original_shape"), "{err}");

    // Image-only: the same nodule without radiomics is fine, no drivers.
    opts.variant = Variant::ImageOnly;
    let img = train(&set, &text, &opts, None).unwrap();
    let out = img.predict(&[no_radiomics]).unwrap();
    assert!(out[0].radiomics_drivers.is_empty());
    assert!(img.meta.standardizer.names.is_empty());

    // A test-split patient never reaches training.
    let mut leaked = set.clone();
    leaked.examples[0].patient = "LIDC-IDRI-0800".into();
    let err = train(&leaked, &text, &opts, None).err().unwrap();
    assert!(
        err.to_string().contains("test scans never reach training"),
        "{err}"
    );
}

#[test]
fn a_missing_text_encoder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = super::classifier::LoadedEncoder::load(&dir.path().join("nowhere"))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("setup-models.sh"),
        "{msg}"
    );
    // A folder without model.json is named.
    let err = super::load_classifier(dir.path()).err().unwrap();
    assert!(err.to_string().contains("model.json"), "{err}");
}

/// Timing probe at the real size (run by hand: `cargo test --lib
/// ml::nodule::tests::time_one_epoch -- --ignored --nocapture`): the real
/// MiniLM, the shipped image tower, ~1,350 nodules of 32 × 32 with 107
/// features, one member, one epoch. Random data: it measures time only.
#[test]
#[ignore]
fn time_one_epoch_at_the_real_size() {
    let dir = crate::ml::text_encoder::default_dir();
    let enc = super::classifier::LoadedEncoder::load(&dir).unwrap();
    let ids = [
        enc.pieces(super::classifier::CLASS_PROMPTS[0]).unwrap(),
        enc.pieces(super::classifier::CLASS_PROMPTS[1]).unwrap(),
    ];
    eprintln!("class word pieces {ids:?}");
    let prompts = enc.prompts(ids).unwrap();
    let text = TextSide::from_encoder(&enc, &dir, &prompts);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let names: Vec<String> = (0..107).map(|i| format!("f{i}")).collect();
    let examples = (0..1350)
        .map(|i| Example {
            patient: format!("LIDC-IDRI-{:04}", 1 + i / 2),
            views: std::array::from_fn(|_| (0..1024).map(|_| rng.random::<f32>()).collect()),
            radiomics: (0..107).map(|_| rng.random::<f64>()).collect(),
            malignant: i % 3 == 0,
        })
        .collect();
    let set = TrainingSet {
        feature_names: names,
        patch: PatchConfig {
            size: 32,
            spacing_mm: 1.5,
            ..Default::default()
        },
        examples,
        source: serde_json::Value::Null,
    };
    let variant = match std::env::var("NODULE_VARIANT").as_deref() {
        Ok("image-only") => Variant::ImageOnly,
        _ => Variant::Full,
    };
    let opts = TrainOptions {
        variant,
        members: 1,
        warmup_epochs: 1,
        max_epochs: 1,
        batch_size: std::env::var("NODULE_BATCH")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(32),
        progress: true,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    train(&set, &text, &opts, None).unwrap();
    eprintln!("one member, one epoch: {:.1} s", t.elapsed().as_secs_f64());
}

/// Load time of the shipped model (run by hand: `cargo test --lib
/// ml::nodule::tests::time_loading -- --ignored --nocapture` from the
/// repository root, with `models/all-MiniLM-L6-v2` unpacked).
#[test]
#[ignore]
fn time_loading_the_shipped_model() {
    let dir = Path::new("cds-hooks/lung-nodule-malignancy/model");
    let t = std::time::Instant::now();
    let clf = super::load_classifier(dir).unwrap();
    let load = t.elapsed().as_secs_f64();
    let s = clf.info().patch.size;
    let meta: ModelMeta =
        serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
    let radiomics = crate::radiomics::Features::from_pairs(
        meta.standardizer
            .names
            .iter()
            .zip(&meta.standardizer.mean)
            .map(|(n, m)| (n.clone(), *m))
            .collect(),
    );
    let input = NoduleModelInput {
        views: std::array::from_fn(|_| vec![0.3; s * s]),
        radiomics,
    };
    let t = std::time::Instant::now();
    let out = clf.predict(&[input]).unwrap();
    eprintln!(
        "load_classifier {load:.3} s; one nodule with drivers {:.3} s; p {:.3}",
        t.elapsed().as_secs_f64(),
        out[0].probability
    );
}
