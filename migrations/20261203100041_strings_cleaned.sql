-- Strings Postgres cannot store (NUL, lone surrogates, invalid UTF-8) are repaired before they
-- are written; each run counts them.
ALTER TABLE sync_runs ADD COLUMN strings_cleaned integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN sync_runs.strings_cleaned IS 'strings (and numbers) in the pages the run wrote that were repaired so Postgres could store them: NUL, lone surrogates and invalid UTF-8 became U+FFFD, numbers past a double their text (0 before this column existed)';
