//! all-MiniLM-L6-v2 speed in candle: latency per sentence and throughput
//! (tokens/s, `[CLS]`/`[SEP]` counted) at batch 1 and batch 16, on the
//! sentences of `fixtures/minilm/bench-sentences.txt`, tokenisation included.
//! The PyTorch side is `scripts/reference/minilm_bench.py` on the same file.
//!
//!   RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2 cargo bench --bench minilm
//!
//! Two implementations:
//! - `oncohooks`: `ml::TextEncoder` (packed batches: no work on padding);
//! - `candle-transformers`: `models::bert::BertModel` as shipped, batches
//!   padded to their longest sentence (tokenizer `BatchLongest`), mean
//!   pooling over the mask — the baseline the packed model replaces.
//!
//! Both run on a 2-thread rayon pool. Each figure is the median of
//! `MINILM_BENCH_REPS` (default 7) passes over all sentences after one
//! warm-up pass. Lines starting with `RESULT` are machine-readable.

mod common;

use common::median;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use oncohooks::ml::{TextEncoder, TextEncoderOptions};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const THREADS: usize = 2;

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// candle-transformers' BERT with the tokenizer set up as
/// sentence-transformers does (pad to the batch's longest, truncate at 256).
struct Padded {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl Padded {
    fn load(dir: &std::path::Path) -> Padded {
        let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap())
            .expect("config.json");
        let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let vb = VarBuilder::from_slice_safetensors(&weights, DType::F32, &Device::Cpu).unwrap();
        let model = BertModel::load(vb, &cfg).unwrap();
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: 256,
                ..Default::default()
            }))
            .unwrap();
        Padded { model, tokenizer }
    }

    fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).unwrap();
        let (b, l) = (enc.len(), enc[0].get_ids().len());
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let ids = Tensor::from_vec(ids, (b, l), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (b, l), &Device::Cpu).unwrap();
        let types = ids.zeros_like().unwrap();
        let hidden = self.model.forward(&ids, &types, Some(&mask)).unwrap();
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let sum = hidden.broadcast_mul(&m).unwrap().sum(1).unwrap();
        let pooled = sum.broadcast_div(&m.sum(1).unwrap()).unwrap();
        let norm = pooled
            .sqr()
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .sqrt()
            .unwrap();
        pooled.broadcast_div(&norm).unwrap().to_vec2().unwrap()
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("ONCOHOOKS_TEXT_ENCODER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/all-MiniLM-L6-v2"));
    let reps: usize = std::env::var("MINILM_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let text = std::fs::read_to_string(root.join("fixtures/minilm/bench-sentences.txt"))
        .expect("fixtures/minilm/bench-sentences.txt");
    let sentences: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();

    let t = Instant::now();
    let enc = TextEncoder::load_with(
        &dir,
        &Device::Cpu,
        &TextEncoderOptions {
            threads: THREADS,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e} (run scripts/setup-models.sh)"));
    println!(
        "load: {:.0} ms ({})",
        t.elapsed().as_secs_f64() * 1e3,
        enc.model_id()
    );
    let tokens: usize = sentences
        .iter()
        .map(|s| enc.count_tokens(s).unwrap().min(254) + 2)
        .sum();
    println!(
        "{} sentences, {} tokens ([CLS]/[SEP] included), mean {:.1} tokens; {} threads, \
         CANDLE_NUM_THREADS={:?}, RAYON_NUM_THREADS={:?}",
        sentences.len(),
        tokens,
        tokens as f64 / sentences.len() as f64,
        THREADS,
        std::env::var("CANDLE_NUM_THREADS").ok(),
        std::env::var("RAYON_NUM_THREADS").ok(),
    );

    let padded = Padded::load(&dir);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap();
    // Same vectors from both (sanity: the benchmark compares like with like).
    let a = enc.embed(&sentences[..16]).unwrap();
    let b = pool.install(|| padded.embed(&sentences[..16]));
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("max abs diff packed vs padded: {worst:e}");
    assert!(worst < 1e-4);

    for batch in [1usize, 16] {
        let ours = time(reps, || {
            for chunk in sentences.chunks(batch) {
                std::hint::black_box(enc.embed(chunk).unwrap());
            }
        });
        let theirs = time(reps, || {
            pool.install(|| {
                for chunk in sentences.chunks(batch) {
                    std::hint::black_box(padded.embed(chunk));
                }
            })
        });
        for (name, d) in [("oncohooks", ours), ("candle-transformers", theirs)] {
            let s = d.as_secs_f64();
            println!(
                "RESULT impl={name} batch={batch} ms_per_sentence={:.3} tokens_per_s={:.0} total_ms={:.1}",
                s * 1e3 / sentences.len() as f64,
                tokens as f64 / s,
                s * 1e3
            );
        }
    }
}
