-- Note-embedding cache (PostgreSQL). See docs/storage.md and docs/models.md.
-- A clinical note costs the text encoder several GFLOP, so its vector is
-- computed once and shared by every replica. Keyed by the SHA-256 of the
-- note's exact text and the encoder identity (weights hash + chunking
-- scheme): a new model or scheme simply misses. The note text itself is
-- never stored here; the vector is little-endian f32, `dim` values.
CREATE TABLE note_embeddings (
    encoder     text NOT NULL,
    text_sha256 text NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    dim         integer NOT NULL CHECK (dim > 0),
    embedding   bytea NOT NULL CHECK (length(embedding) = 4 * dim),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (encoder, text_sha256)
);
