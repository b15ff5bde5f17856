-- The live publisher as the instance that carries its media reports it, so that every instance
-- of a deployment agrees. One row at most; it expires unless the reporting instance renews it.
CREATE TABLE publisher_live (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    user_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    stage_arn      TEXT NOT NULL,
    since_ms       BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL
);
