-- Export controls (owned by clinicd-secops, docs/lifecycle.md): which patients each user has
-- exported or downloaded from today, so that every instance enforces one daily limit. Ids and
-- days only; yesterday and older are forgotten by the hourly upkeep.
CREATE TABLE export_usage (
    user_id     uuid        NOT NULL REFERENCES users (id),
    day         date        NOT NULL,
    patient_id  uuid        NOT NULL,
    first_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, day, patient_id)
);
