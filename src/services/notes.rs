//! A patient's notes → the notes vector the cachexia model takes, within a
//! hook's deadline (issue 4 §6).
//!
//! A 256-token note costs all-MiniLM-L6-v2 several GFLOP, so each note's
//! vector is cached by the SHA-256 of its exact text and the encoder
//! identity, in the database every replica shares
//! (`store::embeddings`). A hook:
//! 1. looks up the vectors of its notes in this process's memory, then
//!    the ones not there in the cache (one query, skipped when memory has
//!    them all);
//! 2. embeds the uncached ones inline, newest first, while their word pieces
//!    fit `[models] notes_inline_token_budget`;
//! 3. hands the rest to a bounded background queue, which embeds and caches
//!    them, and meanwhile treats them as missing (the card says so);
//! 4. pools the vectors it has exactly as training does
//!    (`TextEncoder::embed_patient_notes`: mean of the note vectors, every
//!    copy of a repeated note counted, re-normalised).
//!
//! Without a store (offline `oncohooks score`) nothing can be queued for
//! later, so every note is embedded inline.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ml::{TextEncoder, note_digest, pool_embeddings};
use crate::store::Store;
use crate::store::embeddings::NoteEmbedding;

/// Notes waiting in the background queue, at most (in batches of one
/// hook's deferred notes). A full queue drops the batch; those notes are
/// queued again by the next hook that sees them.
const QUEUE_BATCHES: usize = 256;

/// What the pipeline did with one patient's notes; stored with the
/// prediction (`result.notes`) and summarised on the card. Counts only, never
/// text.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotesOutcome {
    /// Notes with text on record (blank ones are not notes).
    pub notes: usize,
    /// Vectors found in the cache.
    pub cached: usize,
    /// Embedded during this hook.
    pub embedded_inline: usize,
    /// Word pieces embedded during this hook.
    pub inline_tokens: usize,
    /// Left for the background queue (missing for this hook).
    pub queued: usize,
    /// Neither cached nor embedded nor queued (the queue was full, or the
    /// encoder failed); missing for this hook.
    pub failed: usize,
    /// The encoder identity the vectors belong to.
    pub encoder: String,
    /// The pooled vector; `None` when no note has one (notes missing).
    #[serde(skip)]
    pub vector: Option<Vec<f32>>,
}

impl NotesOutcome {
    /// Notes whose vectors went into the pooled vector.
    pub fn used(&self) -> usize {
        self.cached + self.embedded_inline
    }
}

/// The notes pipeline; cheap to clone (one shared encoder, queue and cache).
#[derive(Clone)]
pub struct NotesPipeline {
    inner: Arc<Inner>,
}

struct Inner {
    encoder: Arc<TextEncoder>,
    store: Option<Store>,
    inline_token_budget: usize,
    queue: Option<mpsc::Sender<Vec<PendingNote>>>,
    /// Digests queued and not yet cached: a note seen by many hooks while it
    /// waits is queued once.
    pending: Arc<Mutex<HashSet<String>>>,
    /// Vectors this process has read from the shared cache.
    memory: MemoryCache,
}

/// A bounded in-process copy of vectors read from the shared cache, so that
/// a note seen again costs no database round trip. Always correct: a cached
/// vector is never overwritten (`Store::put_note_embeddings`), so what was
/// read once stays what the database holds. Only vectors *read back* from
/// the database enter it, never this process's own inline results, so
/// every replica serves the database's copy.
///
/// Two generations instead of a strict LRU: lookups and inserts are O(1)
/// with no per-entry bookkeeping. Inserts go to the young map; when it
/// holds half the capacity it becomes the old map and the previous old map
/// is dropped. A hit in the old map moves the entry back to the young one,
/// so notes of patients still being viewed survive a turnover.
struct MemoryCache {
    /// Entries per generation; 0 turns the memory off.
    half: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Vec<f32>>,
    old: HashMap<String, Vec<f32>>,
}

impl MemoryCache {
    /// At most `capacity` vectors (rounded up to even); 0: off.
    fn new(capacity: usize) -> Self {
        Self {
            half: capacity.div_ceil(2),
            generations: Mutex::new(Generations::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vectors of `digests` held in memory.
    fn get_many(&self, digests: &[String]) -> HashMap<String, Vec<f32>> {
        let mut found = HashMap::new();
        if self.half == 0 {
            return found;
        }
        let mut g = self.lock();
        for d in digests {
            if let Some(v) = g.young.get(d) {
                found.insert(d.clone(), v.clone());
            } else if let Some(v) = g.old.remove(d) {
                found.insert(d.clone(), v.clone());
                self.insert_locked(&mut g, d.clone(), v);
            }
        }
        found
    }

    fn insert(&self, digest: String, vector: Vec<f32>) {
        if self.half == 0 {
            return;
        }
        let mut g = self.lock();
        self.insert_locked(&mut g, digest, vector);
    }

    fn insert_locked(&self, g: &mut Generations, digest: String, vector: Vec<f32>) {
        if g.young.len() >= self.half && !g.young.contains_key(&digest) {
            g.old = std::mem::take(&mut g.young);
        }
        g.old.remove(&digest);
        g.young.insert(digest, vector);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

struct PendingNote {
    digest: String,
    text: String,
}

impl NotesPipeline {
    /// Starts the pipeline. With a store and inside a Tokio runtime, the
    /// background embedder starts too; it stops when the last clone of the
    /// pipeline is dropped.
    pub fn start(
        encoder: Arc<TextEncoder>,
        store: Option<Store>,
        inline_token_budget: usize,
        memory_entries: usize,
    ) -> Self {
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let queue = match (&store, tokio::runtime::Handle::try_current()) {
            (Some(store), Ok(rt)) => {
                let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
                rt.spawn(drain(
                    rx,
                    Arc::clone(&encoder),
                    store.clone(),
                    Arc::clone(&pending),
                ));
                Some(tx)
            }
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                encoder,
                store,
                inline_token_budget,
                queue,
                pending,
                memory: MemoryCache::new(memory_entries),
            }),
        }
    }

    /// The encoder identity (`TextEncoder::identity`): a model trained on
    /// another encoder's vectors must not be fed these.
    pub fn identity(&self) -> &str {
        self.inner.encoder.identity()
    }

    /// The notes vector of one patient. `notes`: (date, text) of each note,
    /// in any order. Never fails: what cannot be embedded now counts as
    /// missing, and the outcome says how much.
    pub async fn patient_vector(&self, notes: Vec<(Option<NaiveDate>, String)>) -> NotesOutcome {
        let inner = &self.inner;
        let identity = inner.encoder.identity().to_owned();
        let mut notes: Vec<(Option<NaiveDate>, String, String)> = notes
            .into_iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .map(|(d, t)| {
                let digest = note_digest(&t);
                (d, t, digest)
            })
            .collect();
        let mut outcome = NotesOutcome {
            notes: notes.len(),
            encoder: identity.clone(),
            ..NotesOutcome::default()
        };
        if notes.is_empty() {
            return outcome;
        }
        // Newest first: when the budget runs out, the oldest notes wait.
        // Undated notes last. A stable sort keeps the record's order within
        // a date.
        notes.sort_by_key(|n| std::cmp::Reverse(n.0));

        // Each distinct note once, newest first.
        let mut seen = HashSet::new();
        let unique: Vec<PendingNote> = notes
            .iter()
            .filter(|(_, _, d)| seen.insert(d.as_str()))
            .map(|(_, text, digest)| PendingNote {
                digest: digest.clone(),
                text: text.clone(),
            })
            .collect();
        let digests: Vec<String> = unique.iter().map(|n| n.digest.clone()).collect();
        let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
        if let Some(store) = &inner.store {
            vectors = inner.memory.get_many(&digests);
            let unread: Vec<String> = digests
                .iter()
                .filter(|d| !vectors.contains_key(*d))
                .cloned()
                .collect();
            if !unread.is_empty() {
                match store.get_note_embeddings(&identity, &unread).await {
                    Ok(found) => {
                        for (d, v) in found {
                            if v.len() == inner.encoder.dim() {
                                inner.memory.insert(d.clone(), v.clone());
                                vectors.insert(d, v);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading cached note embeddings failed; embedding what the budget allows");
                    }
                }
            }
        }
        let cached_digests: HashSet<String> = vectors.keys().cloned().collect();

        let todo: Vec<PendingNote> = unique
            .into_iter()
            .filter(|n| !vectors.contains_key(&n.digest))
            .collect();

        let mut deferred = Vec::new();
        if !todo.is_empty() {
            // Without a store there is no "later": embed everything.
            let budget = if inner.store.is_some() {
                inner.inline_token_budget
            } else {
                usize::MAX
            };
            let encoder = Arc::clone(&inner.encoder);
            let span = tracing::Span::current();
            let inline = tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                embed_within_budget(&encoder, todo, budget)
            })
            .await;
            match inline {
                Ok(r) => {
                    outcome.inline_tokens = r.tokens;
                    if !r.embedded.is_empty() {
                        self.cache_in_background(&identity, &r.embedded);
                    }
                    for (digest, v) in r.embedded {
                        vectors.insert(digest, v);
                    }
                    deferred = r.deferred;
                }
                Err(e) => tracing::warn!(error = %e, "Note embedding task failed"),
            }
        }
        let queued = self.enqueue(deferred);

        // Per note, repeats included, as training pools them.
        let mut pooled_inputs = Vec::new();
        for (_, _, digest) in &notes {
            if let Some(v) = vectors.get(digest) {
                pooled_inputs.push(v.clone());
                if cached_digests.contains(digest) {
                    outcome.cached += 1;
                } else {
                    outcome.embedded_inline += 1;
                }
            } else if queued.contains(digest) {
                outcome.queued += 1;
            } else {
                outcome.failed += 1;
            }
        }
        outcome.vector = pool_embeddings(&pooled_inputs);
        outcome
    }

    /// Writes inline vectors to the cache without holding up the hook.
    fn cache_in_background(&self, identity: &str, embedded: &[(String, Vec<f32>)]) {
        let Some(store) = self.inner.store.clone() else {
            return;
        };
        let items: Vec<NoteEmbedding> = embedded
            .iter()
            .map(|(d, v)| NoteEmbedding {
                text_sha256: d.clone(),
                vector: v.clone(),
            })
            .collect();
        let identity = identity.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.put_note_embeddings(&identity, &items).await {
                tracing::warn!(error = %e, "Caching note embeddings failed; they will be embedded again");
            }
        });
    }

    /// Queues notes not already waiting; returns the digests now waiting.
    fn enqueue(&self, notes: Vec<PendingNote>) -> HashSet<String> {
        let mut waiting = HashSet::new();
        let Some(queue) = &self.inner.queue else {
            return waiting;
        };
        let mut fresh = Vec::new();
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            for n in notes {
                waiting.insert(n.digest.clone());
                if pending.insert(n.digest.clone()) {
                    fresh.push(n);
                }
            }
        }
        if fresh.is_empty() {
            return waiting;
        }
        if let Err(e) = queue.try_send(fresh) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            tracing::warn!(
                notes = batch.len(),
                "Note embedding queue full; these notes stay missing until a later hook"
            );
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            for n in &batch {
                pending.remove(&n.digest);
                waiting.remove(&n.digest);
            }
        }
        waiting
    }
}

struct InlineResult {
    embedded: Vec<(String, Vec<f32>)>,
    deferred: Vec<PendingNote>,
    tokens: usize,
}

/// Blocking: counts word pieces (cheap) and embeds, newest first, the notes
/// that fit the budget. A note larger than the whole budget always waits.
fn embed_within_budget(
    encoder: &TextEncoder,
    todo: Vec<PendingNote>,
    budget: usize,
) -> InlineResult {
    let mut selected = Vec::new();
    let mut deferred = Vec::new();
    let mut tokens = 0usize;
    for n in todo {
        let cost = match encoder.count_tokens(&n.text) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Tokenising a note failed; it counts as missing");
                continue;
            }
        };
        if tokens.saturating_add(cost) <= budget {
            tokens += cost;
            selected.push(n);
        } else {
            deferred.push(n);
        }
    }
    let texts: Vec<&str> = selected.iter().map(|n| n.text.as_str()).collect();
    let embedded = match encoder.embed_documents(&texts) {
        Ok(vs) => selected.into_iter().map(|n| n.digest).zip(vs).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "Embedding notes failed; they count as missing");
            tokens = 0;
            Vec::new()
        }
    };
    InlineResult {
        embedded,
        deferred,
        tokens,
    }
}

/// The background embedder: one batch at a time, CPU work off the async
/// workers, vectors into the shared cache.
async fn drain(
    mut rx: mpsc::Receiver<Vec<PendingNote>>,
    encoder: Arc<TextEncoder>,
    store: Store,
    pending: Arc<Mutex<HashSet<String>>>,
) {
    let identity = encoder.identity().to_owned();
    while let Some(batch) = rx.recv().await {
        let enc = Arc::clone(&encoder);
        let digests: Vec<String> = batch.iter().map(|n| n.digest.clone()).collect();
        let embedded = tokio::task::spawn_blocking(move || {
            let texts: Vec<&str> = batch.iter().map(|n| n.text.as_str()).collect();
            enc.embed_documents(&texts)
        })
        .await;
        match embedded {
            Ok(Ok(vs)) => {
                let items: Vec<NoteEmbedding> = digests
                    .iter()
                    .cloned()
                    .zip(vs)
                    .map(|(text_sha256, vector)| NoteEmbedding {
                        text_sha256,
                        vector,
                    })
                    .collect();
                if let Err(e) = store.put_note_embeddings(&identity, &items).await {
                    tracing::warn!(error = %e, "Caching queued note embeddings failed");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "Embedding queued notes failed"),
            Err(e) => tracing::warn!(error = %e, "Note embedding task failed"),
        }
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        for d in &digests {
            p.remove(d);
        }
    }
}

#[cfg(test)]
mod tests {
    //! With the real all-MiniLM-L6-v2 (`scripts/setup-models.sh`, which the
    //! test command runs) and an in-memory SQLite cache.
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::Duration;

    use super::*;

    fn encoder() -> Arc<TextEncoder> {
        static ENC: OnceLock<Arc<TextEncoder>> = OnceLock::new();
        ENC.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
            let opts = crate::ml::TextEncoderOptions {
                threads: 1,
                ..Default::default()
            };
            Arc::new(
                TextEncoder::load_with(&dir, &candle_core::Device::Cpu, &opts)
                    .expect("run scripts/setup-models.sh"),
            )
        })
        .clone()
    }

    async fn store() -> Store {
        let s = Store::connect("sqlite::memory:", 1).await.unwrap();
        s.migrate().await.unwrap();
        s
    }

    /// A cache that already holds the vectors of `texts`.
    async fn store_holding(enc: &TextEncoder, texts: &[&str]) -> Store {
        let store = store().await;
        let vectors: Vec<NoteEmbedding> = texts
            .iter()
            .map(|t| NoteEmbedding {
                text_sha256: note_digest(t),
                vector: enc.embed_document(t).unwrap(),
            })
            .collect();
        store
            .put_note_embeddings(enc.identity(), &vectors)
            .await
            .unwrap();
        store
    }

    fn day(d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(2026, 3, d)
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "max abs diff {worst}");
    }

    const OLD: &str = "Patient reports fatigue but denies appetite loss. Weight stable.";
    const NEW: &str = "Early satiety and poor appetite for three weeks; lost 4 kg.";
    const MID: &str =
        "Seen by dietitian; oral supplements started. Temporal wasting noted on exam.";

    #[tokio::test]
    async fn budget_embeds_newest_first_queues_the_rest_and_later_hooks_use_the_cache() {
        let enc = encoder();
        let budget = enc.count_tokens(NEW).unwrap();
        let store = store().await;
        let p = NotesPipeline::start(Arc::clone(&enc), Some(store.clone()), budget, 64);
        let notes = vec![
            (day(1), OLD.to_owned()),
            (day(20), NEW.to_owned()),
            (day(10), MID.to_owned()),
            (day(5), "   ".to_owned()),
        ];

        let first = p.patient_vector(notes.clone()).await;
        assert_eq!(first.notes, 3, "a blank note is not a note");
        assert_eq!(
            (
                first.cached,
                first.embedded_inline,
                first.queued,
                first.failed
            ),
            (0, 1, 2, 0)
        );
        assert_eq!(first.inline_tokens, budget);
        // Only the newest note fitted: the vector is its vector alone.
        assert_close(
            first.vector.as_ref().unwrap(),
            &enc.embed_document(NEW).unwrap(),
        );

        // The background queue embeds and caches the other two.
        let digests: Vec<String> = [OLD, NEW, MID].iter().map(|t| note_digest(t)).collect();
        let mut cached = 0;
        for _ in 0..600 {
            cached = store
                .get_note_embeddings(enc.identity(), &digests)
                .await
                .unwrap()
                .len();
            if cached == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cached, 3, "queued notes were not cached");

        let second = p.patient_vector(notes).await;
        assert_eq!(
            (second.cached, second.embedded_inline, second.queued),
            (3, 0, 0)
        );
        // Pooled exactly as training pools a patient's notes.
        let all = enc.embed_patient_notes(&[OLD, NEW, MID]).unwrap().unwrap();
        assert_close(second.vector.as_ref().unwrap(), &all);
    }

    #[tokio::test]
    async fn without_a_store_every_note_is_embedded_inline_and_repeats_count_as_in_training() {
        let enc = encoder();
        let p = NotesPipeline::start(Arc::clone(&enc), None, 0, 64);
        let notes = vec![
            (None, NEW.to_owned()),
            (day(2), OLD.to_owned()),
            (day(3), NEW.to_owned()),
        ];
        let o = p.patient_vector(notes).await;
        assert_eq!((o.notes, o.embedded_inline, o.queued), (3, 3, 0));
        let expected = enc.embed_patient_notes(&[NEW, OLD, NEW]).unwrap().unwrap();
        assert_close(o.vector.as_ref().unwrap(), &expected);
        // Different from pooling each distinct note once.
        let once = enc.embed_patient_notes(&[NEW, OLD]).unwrap().unwrap();
        assert!(
            o.vector
                .unwrap()
                .iter()
                .zip(&once)
                .any(|(a, b)| (a - b).abs() > 1e-3)
        );
    }

    #[tokio::test]
    async fn a_note_larger_than_the_budget_waits_and_no_notes_means_missing() {
        let enc = encoder();
        let store = store().await;
        let p = NotesPipeline::start(Arc::clone(&enc), Some(store), 4, 64);
        let o = p.patient_vector(vec![(day(1), MID.to_owned())]).await;
        assert_eq!((o.embedded_inline, o.queued, o.inline_tokens), (0, 1, 0));
        assert!(
            o.vector.is_none(),
            "no vector yet: the notes modality is missing"
        );
        let none = p.patient_vector(vec![(day(1), "\n".to_owned())]).await;
        assert_eq!(none.notes, 0);
        assert!(none.vector.is_none());
    }

    #[tokio::test]
    async fn vectors_read_once_are_served_from_memory_without_the_database() {
        let enc = encoder();
        let store = store_holding(&enc, &[OLD, NEW]).await;
        // Budget 0: nothing may be embedded inline, so only a cache can
        // supply the vectors.
        let p = NotesPipeline::start(Arc::clone(&enc), Some(store.clone()), 0, 64);
        let notes = vec![(day(1), OLD.to_owned()), (day(2), NEW.to_owned())];
        let first = p.patient_vector(notes.clone()).await;
        assert_eq!((first.cached, first.queued), (2, 0));

        // The database goes away: the same notes still come from memory,
        // bit for bit.
        store.close().await;
        let second = p.patient_vector(notes).await;
        assert_eq!((second.cached, second.queued, second.failed), (2, 0, 0));
        assert_eq!(second.vector, first.vector);
        // A note memory has never read is not invented: it needs the
        // database (gone) or the inline budget (0), so it is missing.
        let third = p.patient_vector(vec![(day(3), MID.to_owned())]).await;
        assert_eq!(third.cached, 0);
        assert!(third.vector.is_none());
    }

    #[tokio::test]
    async fn memory_off_reads_the_database_every_time() {
        let enc = encoder();
        let store = store_holding(&enc, &[OLD]).await;
        let p = NotesPipeline::start(Arc::clone(&enc), Some(store.clone()), 0, 0);
        let notes = vec![(day(1), OLD.to_owned())];
        assert_eq!(p.patient_vector(notes.clone()).await.cached, 1);
        store.close().await;
        assert_eq!(p.patient_vector(notes).await.cached, 0);
    }

    #[test]
    fn the_memory_is_bounded_and_keeps_what_is_read() {
        let m = MemoryCache::new(4);
        let key = |n: usize| format!("{n:064x}");
        for n in 0..10 {
            m.insert(key(n), vec![n as f32]);
            assert!(m.len() <= 4, "{} entries after {n} inserts", m.len());
        }
        // 8 and 9 are young, 6 and 7 old; older ones are gone.
        assert!(m.get_many(&[key(0), key(5)]).is_empty());
        // Reading 6 moves it to the young generation: it survives the next
        // turnover, 7 (unread) does not.
        assert_eq!(m.get_many(&[key(6)])[&key(6)], vec![6.0]);
        m.insert(key(10), vec![10.0]);
        m.insert(key(11), vec![11.0]);
        let left = m.get_many(&[key(6), key(7), key(10), key(11)]);
        assert!(left.contains_key(&key(6)) && !left.contains_key(&key(7)));
        assert!(m.len() <= 4);
        // Inserting a key again replaces it without growing.
        let before = m.len();
        m.insert(key(11), vec![11.5]);
        assert_eq!(m.len(), before);
        assert_eq!(m.get_many(&[key(11)])[&key(11)], vec![11.5]);
        // Off: nothing is kept.
        let off = MemoryCache::new(0);
        off.insert(key(1), vec![1.0]);
        assert_eq!(off.len(), 0);
    }
}
