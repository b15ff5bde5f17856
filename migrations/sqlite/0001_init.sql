-- Stages this server manages.
CREATE TABLE stages (
    arn               TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    is_master         INTEGER NOT NULL DEFAULT 0,
    auto_scaled       INTEGER NOT NULL DEFAULT 0,
    parent_arn        TEXT,
    tags              TEXT NOT NULL DEFAULT '{}',
    endpoints         TEXT NOT NULL DEFAULT '{}',
    active_session_id TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

-- Viewers present now: one row per (stage, user), so a user is counted once per stage.
CREATE TABLE presence (
    stage_arn      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    session_id     BIGINT NOT NULL,
    joined_at      BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    PRIMARY KEY (stage_arn, user_id)
);
CREATE INDEX presence_last_heartbeat ON presence (last_heartbeat);

-- Watch history: one row per continuous viewing.
CREATE TABLE watch_sessions (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id                TEXT NOT NULL,
    stage_arn              TEXT NOT NULL,
    participant_id         TEXT NOT NULL,
    joined_at              BIGINT NOT NULL,
    left_at                BIGINT,
    watch_duration_seconds BIGINT
);
CREATE INDEX watch_sessions_user ON watch_sessions (user_id, joined_at);
CREATE INDEX watch_sessions_stage ON watch_sessions (stage_arn, joined_at);

-- Per-stage viewer counts over time.
CREATE TABLE viewer_snapshots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    stage_arn    TEXT NOT NULL,
    taken_at     BIGINT NOT NULL,
    viewer_count BIGINT NOT NULL
);
CREATE INDEX viewer_snapshots_time ON viewer_snapshots (taken_at);
CREATE INDEX viewer_snapshots_stage ON viewer_snapshots (stage_arn, taken_at);

-- Participant replications into stages (auto-scaling state).
CREATE TABLE replications (
    destination_arn TEXT PRIMARY KEY,
    source_arn      TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    started_at      BIGINT NOT NULL
);

-- Small durable settings (the remembered master stage, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
