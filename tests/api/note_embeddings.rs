//! The note-embedding cache (issue 4 §6), run against SQLite and PostgreSQL:
//! vectors round-trip bit for bit, keys are (text digest, encoder identity),
//! a second put of a key keeps the first vector, bad input is refused.

use oncohooks::ml::note_digest;
use oncohooks::store::{NoteEmbedding, StoreError};

use crate::both_backends;
use crate::support::db::TestDb;

both_backends!(
    note_embeddings_round_trip_bit_for_bit_per_encoder,
    a_cached_note_embedding_is_not_overwritten,
    malformed_note_embeddings_are_refused_by_name,
);

const ENC: &str = "all-MiniLM-L6-v2@53aa51172d14/doc-v1-256";

fn vector(seed: u32, dim: usize) -> Vec<f32> {
    // Values with full mantissas and both signs, so a lossy encoding shows.
    (0..dim)
        .map(|i| ((seed * 7919 + i as u32) as f32 * 0.618_034).sin() / 3.0)
        .collect()
}

async fn note_embeddings_round_trip_bit_for_bit_per_encoder(db: &mut TestDb) {
    let notes = ["Early satiety, lost 6 kg.", "Appétit diminué 😔", ""];
    let items: Vec<NoteEmbedding> = notes
        .iter()
        .enumerate()
        .map(|(i, n)| NoteEmbedding {
            text_sha256: note_digest(n),
            vector: vector(i as u32, 384),
        })
        .collect();
    let unknown = note_digest("never embedded");
    let mut keys: Vec<String> = items.iter().map(|i| i.text_sha256.clone()).collect();
    keys.push(unknown.clone());
    assert!(
        db.store
            .get_note_embeddings(ENC, &keys)
            .await
            .unwrap()
            .is_empty()
    );

    db.store.put_note_embeddings(ENC, &items).await.unwrap();

    let got = db.store.get_note_embeddings(ENC, &keys).await.unwrap();
    assert_eq!(got.len(), 3, "the unknown digest misses");
    for it in &items {
        let back = &got[&it.text_sha256];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back), bits(&it.vector));
    }
    assert!(!got.contains_key(&unknown));
    // Another encoder identity (new weights or chunking) misses.
    let other = "all-MiniLM-L6-v2@53aa51172d14/doc-v2-256";
    assert!(
        db.store
            .get_note_embeddings(other, &keys)
            .await
            .unwrap()
            .is_empty()
    );
    // A subset asks for only what it names; a malformed key just misses.
    let some = db
        .store
        .get_note_embeddings(ENC, &[keys[1].clone(), "not-a-digest".into()])
        .await
        .unwrap();
    assert_eq!(some.keys().collect::<Vec<_>>(), vec![&keys[1]]);
    assert!(
        db.store
            .get_note_embeddings(ENC, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.count("note_embeddings").await, 3);
}

async fn a_cached_note_embedding_is_not_overwritten(db: &mut TestDb) {
    let key = note_digest("Weight 58 kg, down from 66 kg.");
    let first = NoteEmbedding {
        text_sha256: key.clone(),
        vector: vector(1, 8),
    };
    db.store
        .put_note_embeddings(ENC, std::slice::from_ref(&first))
        .await
        .unwrap();
    let second = NoteEmbedding {
        text_sha256: key.clone(),
        vector: vector(2, 8),
    };
    let fresh = NoteEmbedding {
        text_sha256: note_digest("another note"),
        vector: vector(3, 8),
    };
    // A batch mixing a cached key and a new one: the new one is stored, the
    // cached one kept.
    db.store
        .put_note_embeddings(ENC, &[second, fresh.clone()])
        .await
        .unwrap();
    let got = db
        .store
        .get_note_embeddings(ENC, &[key.clone(), fresh.text_sha256.clone()])
        .await
        .unwrap();
    assert_eq!(got[&key], first.vector);
    assert_eq!(got[&fresh.text_sha256], fresh.vector);
    assert_eq!(db.count("note_embeddings").await, 2);
}

async fn malformed_note_embeddings_are_refused_by_name(db: &mut TestDb) {
    let good = NoteEmbedding {
        text_sha256: note_digest("x"),
        vector: vector(1, 4),
    };
    let cases = [
        (
            NoteEmbedding {
                text_sha256: "abc".into(),
                ..good.clone()
            },
            "SHA-256",
        ),
        (
            NoteEmbedding {
                vector: vec![],
                ..good.clone()
            },
            "0 values",
        ),
        (
            NoteEmbedding {
                vector: vec![0.5, f32::INFINITY],
                ..good.clone()
            },
            "non-finite",
        ),
    ];
    for (bad, expected) in cases {
        // The good item in the same call is not stored either: all or none.
        let err = db
            .store
            .put_note_embeddings(ENC, &[good.clone(), bad])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidRecord(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert!(
        db.store
            .put_note_embeddings("", std::slice::from_ref(&good))
            .await
            .is_err()
    );
    assert_eq!(db.count("note_embeddings").await, 0);
}
