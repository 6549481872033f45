-- Each run of a backup command (owned by the clinicd binary): when the last backup, verify and
-- drill succeeded, for the metrics and the alert on a stale backup. Counts, sizes, labels and
-- times only; never PHI. The audit trail holds the same runs as events.
CREATE TABLE backup_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command      text        NOT NULL CHECK (command IN ('now', 'verify', 'drill', 'restore')),
    label        text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('ok', 'failed')),
    detail       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX backup_runs_by_command ON backup_runs (command, finished_at DESC);
