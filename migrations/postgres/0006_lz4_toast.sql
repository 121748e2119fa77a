-- The hook record's large JSONB values (the input snapshot, 30-40 KB a hook,
-- the result and the card) are TOAST-compressed with lz4 instead of
-- PostgreSQL's default pglz: inserting a 28 KB snapshot cost ~0.25 ms less
-- server CPU (1,000 inserts: 0.98 s with pglz, 0.75 s with lz4; sizes within
-- 6 %; docs/benchmarks.md, "CDS hook latency"). New rows only: existing rows
-- keep pglz and read the same. lz4 needs a server built with it (PostgreSQL
-- 14+ with --with-lz4, as Debian's and the official images are); elsewhere
-- this changes nothing.
DO $$
BEGIN
    ALTER TABLE predictions ALTER COLUMN features SET COMPRESSION lz4;
    ALTER TABLE predictions ALTER COLUMN result SET COMPRESSION lz4;
    ALTER TABLE cards ALTER COLUMN card SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available here: hook records stay pglz-compressed';
END
$$;
