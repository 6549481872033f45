-- Data lifecycle (owned by clinicd-lifecycle, docs/lifecycle.md): legal holds, erasure requests
-- with their certificates, and the database's copy of the erasure ledger. No PHI: ids, times,
-- reasons and case references (which the API tells the user must not name a patient).

-- A legal hold on a set of patients or on everything. Released, never deleted.
CREATE TABLE legal_holds (
    id              uuid        PRIMARY KEY,
    scope           text        NOT NULL CHECK (scope IN ('patients', 'all')),
    reason          text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    case_reference  text        NOT NULL CHECK (length(case_reference) BETWEEN 1 AND 100),
    placed_by       uuid        NOT NULL REFERENCES users (id),
    placed_at       timestamptz NOT NULL,
    released_by     uuid        REFERENCES users (id),
    released_at     timestamptz,
    release_reason  text        CHECK (length(release_reason) BETWEEN 1 AND 500),
    CHECK ((released_at IS NULL) = (released_by IS NULL)),
    CHECK ((released_at IS NULL) = (release_reason IS NULL))
);
CREATE INDEX legal_holds_active ON legal_holds (placed_at) WHERE released_at IS NULL;

CREATE TABLE legal_hold_patients (
    hold_id     uuid NOT NULL REFERENCES legal_holds (id),
    patient_id  uuid NOT NULL REFERENCES patients (id),
    PRIMARY KEY (hold_id, patient_id)
);
CREATE INDEX legal_hold_patients_by_patient ON legal_hold_patients (patient_id, hold_id);

-- The active hold that covers a patient, or NULL. Every destructive path (file delete and
-- purge, audit archiving, erasure) asks it inside the transaction that destroys; it first takes
-- the lifecycle lock shared, and placing a hold takes it exclusively, so a hold placed while a
-- destruction is under way waits for it, and one placed first is always seen.
CREATE FUNCTION legal_hold_for(patient uuid) RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held uuid;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7022629598042026701);
    SELECT h.id INTO held FROM legal_holds h
     WHERE h.released_at IS NULL
       AND (h.scope = 'all'
            OR EXISTS (SELECT 1 FROM legal_hold_patients p WHERE p.hold_id = h.id AND p.patient_id = patient))
     ORDER BY h.placed_at, h.id
     LIMIT 1;
    RETURN held;
END $$;

-- Any active hold at all (the audit trail's archiving stops while one is in force).
CREATE FUNCTION legal_hold_any() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held uuid;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7022629598042026701);
    SELECT h.id INTO held FROM legal_holds h WHERE h.released_at IS NULL ORDER BY h.placed_at, h.id LIMIT 1;
    RETURN held;
END $$;

-- Erasure requests: asked by one person (or by the retention policy), approved or rejected by
-- another. A completed request carries its certificate of destruction.
CREATE TABLE erasure_requests (
    id               uuid        PRIMARY KEY,
    patient_id       uuid        NOT NULL REFERENCES patients (id),
    basis            text        NOT NULL CHECK (basis IN ('retention_expired', 'patient_request', 'court_order', 'created_in_error')),
    reason           text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    -- NULL: filed by the retention policy.
    requested_by     uuid        REFERENCES users (id),
    requested_at     timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'rejected', 'completed')),
    decided_by       uuid        REFERENCES users (id),
    decided_at       timestamptz,
    decision_reason  text        CHECK (length(decision_reason) BETWEEN 1 AND 500),
    certificate      jsonb,
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK ((state = 'completed') = (certificate IS NOT NULL)),
    CHECK (decided_by IS NULL OR requested_by IS NULL OR decided_by <> requested_by)
);
CREATE UNIQUE INDEX erasure_requests_one_pending ON erasure_requests (patient_id) WHERE state = 'pending';
CREATE INDEX erasure_requests_by_time ON erasure_requests (requested_at);

-- The database's copy of the erasure ledger (the other copy lives outside the database, like the
-- audit checkpoints, so that a restore of an older backup can replay it). Append-only.
CREATE TABLE erasure_ledger (
    seq          bigint      PRIMARY KEY CHECK (seq >= 1),
    patient_id   uuid        NOT NULL,
    request_id   uuid        NOT NULL,
    erased_at    timestamptz NOT NULL,
    prev_hash    bytea       NOT NULL,
    hash         bytea       NOT NULL,
    key_version  integer     NOT NULL,
    mac          bytea       NOT NULL
);
CREATE UNIQUE INDEX erasure_ledger_by_patient ON erasure_ledger (patient_id);
CREATE FUNCTION erasure_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the erasure ledger is append-only' USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER erasure_ledger_append_only BEFORE UPDATE OR DELETE ON erasure_ledger
    FOR EACH ROW EXECUTE FUNCTION erasure_ledger_refuse_change();
CREATE TRIGGER erasure_ledger_no_truncate BEFORE TRUNCATE ON erasure_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION erasure_ledger_refuse_change();

-- Objects of an erased patient's files still to delete from the store: written in the erasing
-- transaction, deleted from the store right after it commits (and by the retention job if that
-- failed). Their data keys were under the destroyed subject key, so they are unreadable already.
CREATE TABLE erasure_objects (
    object_key  text        PRIMARY KEY,
    request_id  uuid        NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);

-- An erased patient's row is a tombstone: `erased_at` set, every ciphertext emptied, the MRN
-- replaced by a fresh number that links to nothing (domain's table, changed here for the
-- lifecycle).
ALTER TABLE patients ADD COLUMN erased_at timestamptz;

-- A signed note never changes, except that an erasure removes it: the erasing transaction
-- names the patient in `clinicd.erasing` (SET LOCAL), and only that patient's notes may go.
CREATE OR REPLACE FUNCTION clinical_notes_signed_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'signed'
       -- coalesce: an unset setting is NULL, and NOT (... = NULL) would let the delete through.
       AND NOT (TG_OP = 'DELETE' AND coalesce(current_setting('clinicd.erasing', true), '') = OLD.patient_id::text) THEN
        RAISE EXCEPTION 'clinical note % is signed and cannot change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

-- Two new permissions (docs/rbac.md): placing and releasing legal holds, and asking for and
-- approving erasures. A superset of the old list, so the roles' CHECKs still hold.
CREATE OR REPLACE FUNCTION rbac_permission_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY[
    'patient:read', 'patient:write', 'patient:read_identifiers', 'care_team:manage',
    'appointment:read', 'appointment:write', 'note:read', 'note:write',
    'file:upload', 'file:read', 'audit:read', 'audit:read_values',
    'user:manage', 'role:manage', 'security:read', 'keys:manage', 'break_glass', 'export',
    'lifecycle:hold', 'lifecycle:erase'
  ]::text[]
$$;

INSERT INTO roles (name, description, built_in, privileged, permissions) VALUES
    ('RecordsManager', 'Places and releases legal holds; asks for and approves erasures (never both for one request)',
     true, true, ARRAY['lifecycle:hold', 'lifecycle:erase']);
UPDATE roles SET permissions = permissions || ARRAY['lifecycle:hold', 'lifecycle:erase']
  WHERE name = 'PrivacyOfficer';
UPDATE roles SET delegable = delegable || ARRAY['lifecycle:hold', 'lifecycle:erase']
  WHERE name = 'Admin';
