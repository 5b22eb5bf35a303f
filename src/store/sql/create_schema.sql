-- Creates the schema of database.schema; {schema} is replaced by its name (a plain identifier,
-- checked with the settings), since an identifier cannot be a parameter.
CREATE SCHEMA IF NOT EXISTS "{schema}"
