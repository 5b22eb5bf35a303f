-- Makes a row exist for each activity id $1 that visits refer to (the activity was not sent).
INSERT INTO activities (id) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING
