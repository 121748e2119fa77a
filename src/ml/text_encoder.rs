//! Sentence embeddings of clinical notes with all-MiniLM-L6-v2
//! (sentence-transformers; Reimers & Gurevych 2019, arXiv:1908.10084; the
//! 6-layer MiniLM of Wang et al. 2020, arXiv:2002.10957) in candle.
//!
//! # API (stable: `ml::cachexia` and the cachexia service build on it)
//! ```no_run
//! # use oncohooks::ml::{TextEncoder, TextEncoderOptions, pool_embeddings, note_digest};
//! # fn main() -> Result<(), oncohooks::ml::MlError> {
//! let device = candle_core::Device::Cpu;
//! let enc = TextEncoder::load_with(
//!     std::path::Path::new("models/all-MiniLM-L6-v2"),
//!     &device,
//!     &TextEncoderOptions { threads: 2, ..Default::default() },
//! )?;
//! // One 384-d unit vector per text; texts past 256 tokens are truncated,
//! // exactly as `SentenceTransformer.encode` does.
//! let v: Vec<Vec<f32>> = enc.embed(&["Early satiety, lost 6 kg."])?;
//! // A whole note: chunked to the model's length, chunks averaged.
//! let d: Vec<f32> = enc.embed_document("…a long progress note…")?;
//! // All of a patient's notes pooled into one vector (None: no notes).
//! let p: Option<Vec<f32>> = enc.embed_patient_notes(&["note 1", "note 2"])?;
//! // With the embedding cache (`store::Store::get_note_embeddings`): key by
//! // `(note_digest(text), enc.identity())`, embed the misses with
//! // `embed_documents`, then pool cached + fresh vectors yourself:
//! let key = (note_digest("note 1"), enc.identity().to_owned());
//! let pooled = pool_embeddings(&[d]);
//! # Ok(()) }
//! ```
//! - [`TextEncoder::load`] reads `model.safetensors`, `config.json`,
//!   `tokenizer.json` and (optionally) `sentence_bert_config.json` from a
//!   folder unpacked by `scripts/setup-models.sh`. A missing folder is an
//!   [`MlError::ModelFile`] naming the file; callers treat it as "notes are a
//!   missing modality", not as fatal.
//! - **Inference is CPU work that blocks for milliseconds to seconds**: call
//!   every `embed*` method from `tokio::task::spawn_blocking` (or a dedicated
//!   thread), never on an async worker. The encoder is `Send + Sync`; share it
//!   in an `Arc`. Each call runs on the encoder's own rayon pool of
//!   [`TextEncoderOptions::threads`] threads (matrix products, softmax,
//!   layer norm, tokenisation), so its CPU use is bounded and does not depend
//!   on the machine's core count. candle's element-wise ops use a
//!   process-wide pool sized by `CANDLE_NUM_THREADS` (else
//!   `RAYON_NUM_THREADS`, else the physical cores); set it in the
//!   environment when the process starts if it must be smaller.
//! - [`TextEncoder::model_id`] (`all-MiniLM-L6-v2@<sha256[..12]>`) names the
//!   weights for model cards and stored predictions;
//!   [`TextEncoder::identity`] adds the document scheme (chunking, pooling)
//!   and is the cache key for `embed_document` vectors.
//!
//! # Numerics and parity
//! Tokenisation ignores the padding (fixed 128) and truncation (128) that the
//! shipped `tokenizer.json` has built in: sentence-transformers truncates at
//! `max_seq_length` = 256 and pads per batch, and the packed model below has
//! no padding at all. Mean pooling over real tokens and L2 normalisation
//! follow `sentence_transformers.models.Pooling` / `Normalize`. The parity
//! test (`tests/minilm.rs`) checks the output against reference embeddings
//! computed with sentence-transformers + PyTorch
//! (`scripts/reference/minilm_reference.py`, stored in
//! `fixtures/minilm/reference.json`): max abs diff ≤ 1e-4, and a sentence
//! alone equals the same sentence in a batch (≤ 1e-5).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::MlError;
use super::bert::{self, BertModel, PackedBatch};

/// Chunking and pooling of [`TextEncoder::embed_document`]; part of
/// [`TextEncoder::identity`], so changing the scheme invalidates cached
/// document vectors. Bump it with any change to [`CHUNK_OVERLAP`] or the
/// pooling.
pub const DOCUMENT_SCHEME: &str = "doc-v1";

/// Tokens shared by consecutive chunks of a long note, so that a phrase cut
/// at a chunk boundary is still seen whole by one chunk.
pub const CHUNK_OVERLAP: usize = 32;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2 (from
/// `sentence_bert_config.json`), used when that file is absent. The model
/// was trained on sequences up to 128 word pieces but its card uses 256.
pub const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// How an encoder runs.
#[derive(Debug, Clone)]
pub struct TextEncoderOptions {
    /// Threads of the encoder's own rayon pool (≥ 1).
    pub threads: usize,
    /// Most sequences per forward pass.
    pub max_batch: usize,
    /// Most padded positions (`sequences × longest`) per forward pass; bounds
    /// the attention-score memory (`12 heads × L × this × 4 bytes`).
    pub max_batch_tokens: usize,
}

impl Default for TextEncoderOptions {
    fn default() -> Self {
        TextEncoderOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_batch: 32,
            max_batch_tokens: 4096,
        }
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// all-MiniLM-L6-v2 (or any BERT sentence-transformers checkpoint with mean
/// pooling and normalisation) ready to embed text. See the module docs.
pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    cls_id: u32,
    sep_id: u32,
    max_seq_len: usize,
    pool: rayon::ThreadPool,
    opts: TextEncoderOptions,
    model_id: String,
    identity: String,
    weights_sha256: String,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("identity", &self.identity)
            .field("max_seq_len", &self.max_seq_len)
            .field("threads", &self.opts.threads)
            .finish()
    }
}

const SETUP_HINT: &str = " (run scripts/setup-models.sh to unpack all-MiniLM-L6-v2)";

fn read(path: &Path) -> Result<Vec<u8>, MlError> {
    std::fs::read(path).map_err(|source| MlError::ModelFile {
        path: path.to_owned(),
        hint: SETUP_HINT,
        source,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, MlError> {
    serde_json::from_slice(bytes).map_err(|e| MlError::InvalidModelFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl TextEncoder {
    /// Loads with [`TextEncoderOptions::default`] (one thread per CPU).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, MlError> {
        Self::load_with(dir, device, &TextEncoderOptions::default())
    }

    /// Loads the encoder from `dir` (see the module docs for the files).
    ///
    /// The weights are read into memory once, hashed (SHA-256: the model
    /// id), and turned into tensors; the buffer is then dropped. Reading
    /// rather than memory-mapping keeps the crate free of `unsafe` and costs
    /// nothing extra, since hashing touches every byte anyway (~0.2 s for
    /// the 91 MB file).
    pub fn load_with(
        dir: &Path,
        device: &Device,
        opts: &TextEncoderOptions,
    ) -> Result<Self, MlError> {
        let config_path = dir.join("config.json");
        let cfg: bert::Config = parse_json(&config_path, &read(&config_path)?)?;
        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_len = match std::fs::read(&st_path) {
            Ok(bytes) => parse_json::<SentenceBertConfig>(&st_path, &bytes)?.max_seq_length,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_MAX_SEQ_LEN,
            Err(source) => {
                return Err(MlError::ModelFile {
                    path: st_path,
                    hint: "",
                    source,
                });
            }
        }
        .min(cfg.max_position_embeddings);
        if max_seq_len < 3 {
            return Err(MlError::InvalidModelFile {
                path: st_path,
                reason: format!("max_seq_length {max_seq_len} leaves no room for text"),
            });
        }

        let tok_path = dir.join("tokenizer.json");
        let tok_bytes = read(&tok_path)?;
        let mut tokenizer =
            Tokenizer::from_bytes(&tok_bytes).map_err(|source| MlError::TokenizerLoad {
                path: tok_path.clone(),
                source,
            })?;
        // The shipped tokenizer.json pads to 128 and truncates at 128
        // (STACK.md): both off; truncation to `max_seq_len` is done here.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|source| MlError::TokenizerLoad {
                path: tok_path.clone(),
                source,
            })?;
        let special = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| MlError::InvalidModelFile {
                    path: tok_path.clone(),
                    reason: format!("no {t} token in the vocabulary"),
                })
        };
        let (cls_id, sep_id) = (special("[CLS]")?, special("[SEP]")?);

        let weights_path = dir.join("model.safetensors");
        let weights = read(&weights_path)?;
        let weights_sha256 = hex::encode(Sha256::digest(&weights));
        let vb = VarBuilder::from_slice_safetensors(&weights, DType::F32, device)?;
        let model = BertModel::load(vb, &cfg)?;
        drop(weights);

        let threads = opts.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("text-encoder-{i}"))
            .build()?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "text-encoder".into());
        let model_id = format!("{name}@{}", &weights_sha256[..12]);
        let identity = format!("{model_id}/{DOCUMENT_SCHEME}-{max_seq_len}");
        Ok(TextEncoder {
            model,
            tokenizer,
            cls_id,
            sep_id,
            max_seq_len,
            pool,
            opts: TextEncoderOptions {
                threads,
                max_batch: opts.max_batch.max(1),
                max_batch_tokens: opts.max_batch_tokens.max(max_seq_len),
            },
            model_id,
            identity,
            weights_sha256,
        })
    }

    /// `all-MiniLM-L6-v2@<first 12 hex of SHA-256(model.safetensors)>`:
    /// which weights, for model cards and stored predictions.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// [`Self::model_id`] plus the document scheme and sequence length
    /// (`…@53aa51172d14/doc-v1-256`): everything that determines an
    /// [`Self::embed_document`] vector. Key cached note embeddings by it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Full SHA-256 (hex) of `model.safetensors`.
    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    /// Embedding width (384).
    pub fn dim(&self) -> usize {
        self.model.hidden_size()
    }

    /// Longest sequence the model sees, `[CLS]` and `[SEP]` included (256).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn threads(&self) -> usize {
        self.opts.threads
    }

    /// Word pieces of `text` without special tokens (cheap: no model run).
    /// The cost of [`Self::embed_document`] grows with it; a hook can budget
    /// inline embedding by it.
    pub fn count_tokens(&self, text: &str) -> Result<usize, MlError> {
        Ok(self.pool.install(|| self.word_pieces(&[text]))?[0].len())
    }

    /// One unit vector per text, as `SentenceTransformer.encode(texts,
    /// normalize_embeddings=True)`: truncated to [`Self::max_seq_len`]
    /// tokens, mean-pooled, L2-normalised. Blocking CPU work (module docs).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, MlError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| {
            let room = self.max_seq_len - 2;
            let seqs: Vec<Vec<u32>> = self
                .word_pieces(texts)?
                .into_iter()
                .map(|p| self.wrap(&p[..p.len().min(room)]))
                .collect();
            self.embed_sequences(&seqs)
        })
    }

    /// One unit vector for a whole note of any length: its word pieces are
    /// cut into windows of `max_seq_len − 2` tokens overlapping by
    /// [`CHUNK_OVERLAP`], each window embedded like a sentence, and the
    /// window vectors averaged and re-normalised. A note that fits in one
    /// window gives exactly [`Self::embed`]'s vector. Blocking CPU work.
    pub fn embed_document(&self, text: &str) -> Result<Vec<f32>, MlError> {
        Ok(self
            .embed_documents(&[text])?
            .pop()
            .expect("one vector per document"))
    }

    /// [`Self::embed_document`] for several notes, their chunks batched
    /// together (faster than one call per note).
    pub fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, MlError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| {
            let mut seqs = Vec::new();
            let mut owner = Vec::new();
            for (doc, pieces) in self.word_pieces(texts)?.into_iter().enumerate() {
                for window in chunk_windows(pieces.len(), self.max_seq_len - 2, CHUNK_OVERLAP) {
                    seqs.push(self.wrap(&pieces[window]));
                    owner.push(doc);
                }
            }
            let vectors = self.embed_sequences(&seqs)?;
            Ok(pool_groups(vectors, &owner, texts.len())
                .into_iter()
                .map(|v| v.expect("every document has a chunk"))
                .collect())
        })
    }

    /// One vector for all of a patient's notes: each note through
    /// [`Self::embed_document`], then [`pool_embeddings`]. Notes that are
    /// empty or whitespace carry no text and are skipped; `None` when no note
    /// is left (the notes modality is missing). Blocking CPU work.
    pub fn embed_patient_notes(&self, notes: &[&str]) -> Result<Option<Vec<f32>>, MlError> {
        let notes: Vec<&str> = notes
            .iter()
            .copied()
            .filter(|n| !n.trim().is_empty())
            .collect();
        if notes.is_empty() {
            return Ok(None);
        }
        Ok(pool_embeddings(&self.embed_documents(&notes)?))
    }

    /// Word pieces of each text, no special tokens, no truncation.
    fn word_pieces(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, MlError> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(MlError::Tokenize)?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// `[CLS] pieces [SEP]`, as BERT's single-sentence template.
    fn wrap(&self, pieces: &[u32]) -> Vec<u32> {
        let mut s = Vec::with_capacity(pieces.len() + 2);
        s.push(self.cls_id);
        s.extend_from_slice(pieces);
        s.push(self.sep_id);
        s
    }

    /// Embeds token sequences (specials included, ≤ max_seq_len each).
    /// Sequences are sorted by length into batches so that the attention's
    /// padded view wastes little; results come back in input order.
    fn embed_sequences(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, MlError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let mut out = vec![Vec::new(); seqs.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = seqs[order[start]].len();
            let mut end = start + 1;
            while end < order.len()
                && end - start < self.opts.max_batch
                && (end - start + 1) * longest <= self.opts.max_batch_tokens
            {
                end += 1;
            }
            let members = &order[start..end];
            let refs: Vec<&[u32]> = members.iter().map(|&i| seqs[i].as_slice()).collect();
            let batch = PackedBatch::new(&refs, self.model.device())?;
            let states = self.model.forward(&batch)?;
            let pooled = bert::l2_normalize(&self.model.mean_pool(&states, &batch)?)?;
            for (&i, v) in members.iter().zip(pooled.to_vec2::<f32>()?) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }
}

/// Windows of at most `size` tokens over `n` tokens, each starting
/// `size − overlap` after the previous one, the last one ending at `n`. At
/// least one (empty) window, so that an empty text is embedded as
/// `[CLS] [SEP]` like sentence-transformers does.
pub fn chunk_windows(n: usize, size: usize, overlap: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    let stride = size.saturating_sub(overlap).max(1);
    let mut windows = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + size).min(n);
        windows.push(start..end);
        if end >= n {
            return windows;
        }
        start += stride;
    }
}

/// Mean of unit vectors, re-normalised to unit length: how chunk vectors
/// become a note vector and note vectors a patient vector. `None` for no
/// vectors (or vectors of unequal width).
pub fn pool_embeddings(vectors: &[Vec<f32>]) -> Option<Vec<f32>> {
    let dim = vectors.first()?.len();
    if vectors.iter().any(|v| v.len() != dim) {
        return None;
    }
    let mut sum = vec![0f64; dim];
    for v in vectors {
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += f64::from(x);
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    Some(sum.iter().map(|x| (x / norm) as f32).collect())
}

/// [`pool_embeddings`] per group: `vectors[i]` belongs to group `owner[i]`
/// (chunks → a note, notes → a patient); `None` for a group without vectors.
pub fn pool_groups(
    vectors: Vec<Vec<f32>>,
    owner: &[usize],
    groups: usize,
) -> Vec<Option<Vec<f32>>> {
    let mut per_group: Vec<Vec<Vec<f32>>> = vec![Vec::new(); groups];
    for (v, &g) in vectors.into_iter().zip(owner) {
        per_group[g].push(v);
    }
    per_group.iter().map(|vs| pool_embeddings(vs)).collect()
}

/// SHA-256 (hex) of a note's exact UTF-8 text: the content key of the
/// note-embedding cache (the text itself is never stored there).
pub fn note_digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Where `scripts/setup-models.sh` unpacks the encoder, relative to the
/// repository root (and the `[models] text_encoder_dir` default).
pub fn default_dir() -> PathBuf {
    PathBuf::from("models/all-MiniLM-L6-v2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_can_be_shared_with_blocking_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<TextEncoder>();
    }

    #[test]
    fn chunk_windows_cover_every_token_with_the_overlap() {
        assert_eq!(chunk_windows(0, 254, 32), vec![0..0]);
        assert_eq!(chunk_windows(10, 254, 32), vec![0..10]);
        assert_eq!(chunk_windows(254, 254, 32), vec![0..254]);
        assert_eq!(chunk_windows(255, 254, 32), vec![0..254, 222..255]);
        let w = chunk_windows(1000, 254, 32);
        assert_eq!(w.first(), Some(&(0..254)));
        assert_eq!(w.last().map(|r| r.end), Some(1000));
        for pair in w.windows(2) {
            assert_eq!(pair[0].end - pair[1].start, 32, "{pair:?}");
        }
    }

    #[test]
    fn pooling_is_the_renormalised_mean() {
        let p = pool_embeddings(&[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((p[0] - h).abs() < 1e-7 && (p[1] - h).abs() < 1e-7, "{p:?}");
        assert_eq!(pool_embeddings(&[]), None);
        assert_eq!(pool_embeddings(&[vec![1.0], vec![1.0, 0.0]]), None);
    }

    #[test]
    fn missing_model_folder_names_the_file_and_the_setup_script() {
        let dir = tempfile::tempdir().unwrap();
        let err = TextEncoder::load(&dir.path().join("nope"), &Device::Cpu).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("config.json"), "{msg}");
        assert!(msg.contains("scripts/setup-models.sh"), "{msg}");
    }

    #[test]
    fn note_digest_is_sha256_hex_of_the_exact_text() {
        assert_eq!(
            note_digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(note_digest("a"), note_digest("a "));
    }
}
