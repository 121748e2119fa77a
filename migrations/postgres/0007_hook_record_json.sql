-- The hook record's documents (the input snapshot, the result, the card) are
-- stored as `json`, the exact text the server wrote, instead of `jsonb`.
--
-- Why: building jsonb from them (the fixture patient's: snapshot 4.8 KB,
-- result 9.3 KB, plus the cards) was PostgreSQL's largest cost per hook
-- after the kernel (docs/benchmarks.md, "Note vectors in memory, `json`
-- hook records, AVX2 model ops");
-- `json` only checks the syntax. Nothing queries inside these documents with
-- jsonb-only operators or indexes them; `->` and `->>` work on `json` too.
-- An audit record is also better kept byte for byte: `json` keeps key order
-- and number spelling, `jsonb` normalises both.
--
-- Existing rows are converted in place (a table rewrite under an exclusive
-- lock: minutes for millions of predictions, so run it in a maintenance
-- window on a large database). The append-only triggers do not fire: a
-- rewrite is not an UPDATE.
ALTER TABLE predictions
    ALTER COLUMN features TYPE json USING features::json,
    ALTER COLUMN result TYPE json USING result::json;
ALTER TABLE cards ALTER COLUMN card TYPE json USING card::json;

-- Keep migration 6's lz4 TOAST compression on the converted columns.
DO $$
BEGIN
    ALTER TABLE predictions ALTER COLUMN features SET COMPRESSION lz4;
    ALTER TABLE predictions ALTER COLUMN result SET COMPRESSION lz4;
    ALTER TABLE cards ALTER COLUMN card SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available here: hook records stay pglz-compressed';
END
$$;
