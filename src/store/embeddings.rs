//! The note-embedding cache: text-encoder vectors keyed by the SHA-256 of a
//! note's exact text and the encoder identity
//! (`ml::TextEncoder::identity`), shared by every replica through the
//! database. A note costs MiniLM several GFLOP (issue 4 §6), so it is
//! embedded once; the note text is never stored here.

use super::StoreError;

/// One cached vector.
#[derive(Clone, Debug, PartialEq)]
pub struct NoteEmbedding {
    /// Lower-case hex SHA-256 of the note text (`ml::note_digest`).
    pub text_sha256: String,
    pub vector: Vec<f32>,
}

pub(crate) const TABLE: &str = "note_embeddings";

pub(crate) fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses what the table's CHECKs would refuse, by name, before any SQL.
pub(crate) fn validate(encoder: &str, items: &[NoteEmbedding]) -> Result<(), StoreError> {
    if encoder.is_empty() {
        return Err(StoreError::InvalidRecord("empty encoder identity".into()));
    }
    for it in items {
        if !is_digest(&it.text_sha256) {
            return Err(StoreError::InvalidRecord(
                "note embedding key is not a lower-case hex SHA-256".into(),
            ));
        }
        if it.vector.is_empty() || it.vector.len() > i32::MAX as usize / 4 {
            return Err(StoreError::InvalidRecord(format!(
                "note embedding of {} values",
                it.vector.len()
            )));
        }
        if it.vector.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::InvalidRecord(
                "note embedding holds a non-finite value".into(),
            ));
        }
    }
    Ok(())
}

/// Little-endian f32 bytes.
pub(crate) fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Vec<f32>, StoreError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return Err(StoreError::CorruptRow {
            table: TABLE,
            column: "embedding",
            reason: format!("{} bytes is not a whole number of f32", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_little_endian_bytes() {
        let v = vec![1.0f32, -0.5, f32::MIN_POSITIVE, 3.25e-8];
        let b = to_bytes(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..4], &1.0f32.to_le_bytes());
        assert_eq!(from_bytes(&b).unwrap(), v);
        assert!(from_bytes(&b[..5]).is_err());
    }

    #[test]
    fn keys_must_be_hex_sha256_and_values_finite() {
        let ok = NoteEmbedding {
            text_sha256: "a".repeat(64),
            vector: vec![0.1],
        };
        assert!(validate("enc", std::slice::from_ref(&ok)).is_ok());
        assert!(validate("", std::slice::from_ref(&ok)).is_err());
        let upper = NoteEmbedding {
            text_sha256: "A".repeat(64),
            ..ok.clone()
        };
        assert!(validate("enc", &[upper]).is_err());
        let nan = NoteEmbedding {
            vector: vec![f32::NAN],
            ..ok.clone()
        };
        assert!(validate("enc", &[nan]).is_err());
        let empty = NoteEmbedding {
            vector: vec![],
            ..ok
        };
        assert!(validate("enc", &[empty]).is_err());
    }
}
