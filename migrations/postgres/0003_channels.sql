-- Channels: each broadcaster's own stage group, stream key, publisher liveness and counts.
-- The channel `default` always exists; it takes over the master stage remembered so far.
CREATE TABLE channels (
    name             TEXT PRIMARY KEY,
    title            TEXT NOT NULL,
    description      TEXT,
    -- SHA-256 (hex) of the channel's stream key; the key itself is never stored.
    stream_key_hash  TEXT UNIQUE,
    master_stage_arn TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

INSERT INTO channels (name, title, master_stage_arn, created_at, updated_at)
SELECT 'default', 'Live', (SELECT value FROM settings WHERE key = 'master_stage_arn'), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT), CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT);
DELETE FROM settings WHERE key = 'master_stage_arn';

-- What belongs to which channel. Rows written before channels existed belong to `default`.
ALTER TABLE stages ADD COLUMN channel TEXT NOT NULL DEFAULT 'default';
CREATE INDEX stages_channel ON stages (channel);
ALTER TABLE watch_sessions ADD COLUMN channel TEXT NOT NULL DEFAULT 'default';
CREATE INDEX watch_sessions_channel ON watch_sessions (channel, joined_at);
ALTER TABLE viewer_snapshots ADD COLUMN channel TEXT NOT NULL DEFAULT 'default';

-- The live publisher of each channel, as the instance that carries its media reports it.
-- Reports expire within seconds unless renewed, so the old one-row table is not carried over.
DROP TABLE publisher_live;
CREATE TABLE publisher_live (
    channel        TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    stage_arn      TEXT NOT NULL,
    since_ms       BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL
);
