-- Encrypted files (owned by clinicd-files): one row per stored object, written only once the
-- object is complete. The object holds ciphertext only (docs/files.md gives the format); its
-- data key is a field ciphertext under the patient's subject key, so rotating or re-keying
-- rewrites these rows and never an object, and shredding the patient makes the files
-- unreadable. The original name and the plaintext digest are encrypted too: a clear SHA-256
-- would confirm a guess of a document's contents.

CREATE TABLE files (
    id            uuid        PRIMARY KEY,
    patient_id    uuid        NOT NULL REFERENCES patients (id),
    -- NULL for files brought in by `clinicd files import` (then `import_key` is set).
    uploaded_by   uuid        REFERENCES users (id),
    category      text        NOT NULL CHECK (category IN ('insurance_card_front', 'insurance_card_back',
                                                           'photo_id', 'referral', 'lab_result', 'other')),
    content_type  text        NOT NULL CHECK (content_type IN ('application/pdf', 'image/png', 'image/jpeg',
                                                               'image/tiff', 'text/plain')),
    size_bytes    bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256        bytea       NOT NULL,
    name          bytea,
    data_key      bytea       NOT NULL,
    object_key    text        NOT NULL UNIQUE,
    format        smallint    NOT NULL,
    -- Keyed hash of (patient, path, content) for an imported file, so a re-run skips it.
    import_key    bytea       UNIQUE,
    created_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    deleted_by    uuid        REFERENCES users (id),
    -- A soft-deleted file's object and key are kept until then (retention), then purged.
    purge_after   timestamptz,
    CHECK (uploaded_by IS NOT NULL OR import_key IS NOT NULL),
    CHECK ((deleted_at IS NULL) = (purge_after IS NULL)),
    CHECK (deleted_by IS NULL OR deleted_at IS NOT NULL)
);
CREATE INDEX files_by_patient ON files (patient_id, created_at) WHERE deleted_at IS NULL;
CREATE INDEX files_to_purge ON files (purge_after) WHERE purge_after IS NOT NULL;
