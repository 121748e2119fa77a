-- Note-embedding cache (SQLite). See docs/storage.md and docs/models.md.
-- A clinical note costs the text encoder several GFLOP, so its vector is
-- computed once. Keyed by the SHA-256 of the note's exact text and the
-- encoder identity (weights hash + chunking scheme): a new model or scheme
-- simply misses. The note text itself is never stored here; the vector is
-- little-endian f32, `dim` values.
CREATE TABLE note_embeddings (
    encoder     TEXT NOT NULL,
    text_sha256 TEXT NOT NULL CHECK (length(text_sha256) = 64 AND text_sha256 NOT GLOB '*[^0-9a-f]*'),
    dim         INTEGER NOT NULL CHECK (dim > 0),
    embedding   BLOB NOT NULL CHECK (length(embedding) = 4 * dim),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (encoder, text_sha256)
) STRICT;
