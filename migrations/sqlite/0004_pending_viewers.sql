-- Viewers of the app's pages on the embedded backend who were given a ticket but whose media
-- session has not connected yet: they hold a seat on their stage for a short while and are
-- counted (moved to `presence`) only when their WHEP session connects.
CREATE TABLE pending_viewers (
    stage_arn      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    PRIMARY KEY (stage_arn, user_id)
);
CREATE INDEX pending_viewers_expires ON pending_viewers (expires_at);
