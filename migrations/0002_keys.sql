-- Keys (owned by clinicd-crypto). The KMS key is the root; below it one branch key per
-- purpose (and per rotation), stored wrapped by KMS; below the `field` branch key one random
-- key per patient (subject), stored wrapped by the branch key. Destroying a subject key
-- (wrapped set to NULL) makes that patient's encrypted fields unrecoverable.

CREATE TABLE data_keys (
    id            uuid        PRIMARY KEY,
    purpose       text        NOT NULL CHECK (purpose IN ('field', 'blind_index', 'audit', 'file')),
    version       integer     NOT NULL CHECK (version > 0),
    wrapped       bytea,
    kek_id        text        NOT NULL,
    kek_version   integer     NOT NULL CHECK (kek_version > 0),
    status        text        NOT NULL CHECK (status IN ('active', 'retired', 'destroyed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz,
    UNIQUE (purpose, version),
    CHECK ((status = 'destroyed') = (wrapped IS NULL))
);

-- At most one active branch key per purpose.
CREATE UNIQUE INDEX data_keys_one_active ON data_keys (purpose) WHERE status = 'active';

CREATE TABLE subject_keys (
    subject_id     uuid        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    branch_key_id  uuid        NOT NULL REFERENCES data_keys (id),
    wrapped        bytea,
    status         text        NOT NULL CHECK (status IN ('active', 'retired', 'destroyed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    destroyed_at   timestamptz,
    PRIMARY KEY (subject_id, version),
    CHECK ((status = 'destroyed') = (wrapped IS NULL))
);

CREATE UNIQUE INDEX subject_keys_one_active ON subject_keys (subject_id) WHERE status = 'active';
CREATE INDEX subject_keys_by_branch ON subject_keys (branch_key_id) WHERE wrapped IS NOT NULL;
