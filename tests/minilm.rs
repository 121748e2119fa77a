//! Parity of the candle all-MiniLM-L6-v2 with the reference implementation
//! (sentence-transformers on PyTorch): embeddings of fixed sentences against
//! `fixtures/minilm/reference.json` (made by
//! `scripts/reference/minilm_reference.py`), batched against single, and the
//! chunked long-document path.
//!
//! Needs the real weights in `models/all-MiniLM-L6-v2` (`scripts/setup-models.sh`,
//! which `scripts/test.sh` runs first). Without them these tests FAIL: a
//! skipped parity test would hide a broken encoder.

use std::path::PathBuf;
use std::sync::OnceLock;

use oncohooks::ml::{TextEncoder, TextEncoderOptions, pool_embeddings};
use serde::Deserialize;

const PARITY_TOL: f32 = 1e-4;
const BATCH_TOL: f32 = 1e-5;

#[derive(Deserialize)]
struct Reference {
    model_safetensors_sha256: String,
    max_seq_length: usize,
    sentences: Vec<RefSentence>,
}

#[derive(Deserialize)]
struct RefSentence {
    text: String,
    word_pieces: usize,
    chunks: usize,
    embedding: Vec<f32>,
    document_embedding: Vec<f32>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let path = root().join("fixtures/minilm/reference.json");
        let text = std::fs::read_to_string(&path).expect("fixtures/minilm/reference.json");
        serde_json::from_str(&text).expect("reference.json parses")
    })
}

fn load(opts: &TextEncoderOptions) -> TextEncoder {
    let dir = std::env::var_os("ONCOHOOKS_TEXT_ENCODER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));
    TextEncoder::load_with(&dir, &candle_core::Device::Cpu, opts).unwrap_or_else(|e| {
        panic!(
            "the MiniLM parity tests need the real weights in {}: run scripts/setup-models.sh \
                 (scripts/test.sh does). Error: {e}: {}",
            dir.display(),
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        )
    })
}

fn encoder() -> &'static TextEncoder {
    static E: OnceLock<TextEncoder> = OnceLock::new();
    E.get_or_init(|| {
        load(&TextEncoderOptions {
            threads: 2,
            ..Default::default()
        })
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector widths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn texts() -> Vec<&'static str> {
    reference()
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect()
}

#[test]
fn the_weights_are_the_ones_the_reference_was_computed_with() {
    let enc = encoder();
    let r = reference();
    assert_eq!(enc.weights_sha256(), r.model_safetensors_sha256);
    assert_eq!(enc.max_seq_len(), r.max_seq_length);
    assert_eq!(enc.dim(), 384);
    assert_eq!(
        enc.model_id(),
        format!("all-MiniLM-L6-v2@{}", &r.model_safetensors_sha256[..12])
    );
    assert!(enc.identity().starts_with(enc.model_id()));
}

#[test]
fn single_sentences_match_sentence_transformers_within_1e_4() {
    let enc = encoder();
    let mut worst = 0f32;
    for s in &reference().sentences {
        let got = enc.embed(&[&s.text]).unwrap().pop().unwrap();
        let d = max_abs_diff(&got, &s.embedding);
        assert!(
            d <= PARITY_TOL,
            "max abs diff {d:e} > {PARITY_TOL:e} for {:?}",
            s.text.chars().take(40).collect::<String>()
        );
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
        worst = worst.max(d);
    }
    // The long note really is past the model's length: truncation is tested.
    assert!(reference().sentences.iter().any(|s| s.word_pieces > 254));
    assert!(reference().sentences.iter().any(|s| s.text.is_empty()));
    eprintln!("worst max abs diff vs PyTorch: {worst:e}");
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_sentence_at_a_time() {
    let enc = encoder();
    let texts = texts();
    let batched = enc.embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (t, b) in texts.iter().zip(&batched) {
        let single = enc.embed(&[t]).unwrap().pop().unwrap();
        let d = max_abs_diff(&single, b);
        assert!(d <= BATCH_TOL, "batched vs single {d:e} for {t:?}");
    }
    // Order is the caller's, not the internal length sort.
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let back = enc.embed(&reversed).unwrap();
    for (i, v) in back.iter().rev().enumerate() {
        assert!(max_abs_diff(v, &batched[i]) <= BATCH_TOL);
    }
    // A batch split by the size limits gives the same vectors too.
    let small = load(&TextEncoderOptions {
        threads: 1,
        max_batch: 3,
        max_batch_tokens: 256,
    });
    for (a, b) in small.embed(&texts).unwrap().iter().zip(&batched) {
        assert!(max_abs_diff(a, b) <= BATCH_TOL);
    }
}

#[test]
fn documents_are_chunked_like_the_reference_and_deterministic() {
    let enc = encoder();
    let r = reference();
    let texts = texts();
    let docs = enc.embed_documents(&texts).unwrap();
    for ((s, doc), t) in r.sentences.iter().zip(&docs).zip(&texts) {
        let d = max_abs_diff(doc, &s.document_embedding);
        assert!(d <= PARITY_TOL, "document vector off by {d:e} for {t:?}");
        if s.chunks == 1 {
            // A note that fits in one window is embedded like a sentence.
            let single = enc.embed(&[t]).unwrap().pop().unwrap();
            assert!(max_abs_diff(doc, &single) <= BATCH_TOL);
        }
        assert_eq!(enc.count_tokens(t).unwrap(), s.word_pieces);
    }
    let long = r
        .sentences
        .iter()
        .find(|s| s.chunks > 1)
        .expect("a long note");
    let i = texts.iter().position(|t| *t == long.text).unwrap();
    // Chunking changes the vector (all the text counts, not just 256 tokens).
    assert!(max_abs_diff(&docs[i], &long.embedding) > 1e-3);
    // Same input, same bits: alone, twice, and inside a batch of notes.
    let a = enc.embed_document(&long.text).unwrap();
    let b = enc.embed_document(&long.text).unwrap();
    assert_eq!(a, b, "embed_document is deterministic");
    assert!(max_abs_diff(&a, &docs[i]) <= BATCH_TOL);
}

#[test]
fn patient_notes_pool_into_one_vector_or_none() {
    let enc = encoder();
    assert_eq!(enc.embed_patient_notes(&[]).unwrap(), None);
    assert_eq!(enc.embed_patient_notes(&["", "  \n\t"]).unwrap(), None);
    let notes = [
        "Patient reports poor appetite and early satiety for three weeks.",
        "Weight 58 kg, down from 66 kg six months ago (12% loss).",
    ];
    let pooled = enc
        .embed_patient_notes(&[notes[0], " ", notes[1]])
        .unwrap()
        .expect("two notes");
    let expected = pool_embeddings(&enc.embed_documents(&notes).unwrap()).unwrap();
    assert!(max_abs_diff(&pooled, &expected) <= BATCH_TOL);
    let one = enc.embed_patient_notes(&[notes[0]]).unwrap().unwrap();
    assert!(max_abs_diff(&one, &enc.embed_document(notes[0]).unwrap()) <= BATCH_TOL);
    assert!(max_abs_diff(&one, &pooled) > 1e-3, "the second note counts");
}

#[test]
fn training_batches_many_patients_notes_into_the_same_vectors_as_one_patient_at_a_time() {
    use oncohooks::ml::cachexia::NotesEmbedder;
    let enc = encoder();
    let t = texts();
    let patients: Vec<Vec<String>> = vec![
        vec![t[0].to_owned(), t[1].to_owned()],
        vec![],
        vec!["  ".to_owned()],
        t.iter().map(|s| s.to_string()).collect(),
        vec![t[2].to_owned()],
    ];
    let batched = enc.embed_patients(&patients).unwrap();
    assert_eq!(batched.len(), patients.len());
    for (p, b) in patients.iter().zip(&batched) {
        let one = NotesEmbedder::embed_patient_notes(enc, p).unwrap();
        match (one, b) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(max_abs_diff(&a, b) <= 1e-5),
            (a, b) => panic!("{a:?} vs {b:?}"),
        }
    }
    assert!(batched[1].is_none() && batched[2].is_none());
}
