-- Progress of re-keying jobs (owned by clinicd-crypto): one row per job and encrypted column,
-- advanced after every committed batch, so an interrupted job resumes where it stopped.
CREATE TABLE rekey_progress (
    job          text        NOT NULL,
    table_name   text        NOT NULL,
    column_name  text        NOT NULL,
    last_id      uuid,
    rows_seen    bigint      NOT NULL DEFAULT 0,
    rows_moved   bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (job, table_name, column_name)
);
