-- Separation of duties (owned by clinicd-rbac).

-- Dual control: a change that hands out access to clinical data, or administration itself,
-- waits here until a second administrator approves it (docs/rbac.md). `target` is a user id or,
-- for `role_permissions`, a role name; `payload` is what would be applied. A decision with no
-- `decided_by` was taken at the command line by the server's operator.
CREATE TABLE access_proposals (
    id           uuid        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('user_roles', 'role_permissions', 'user_email',
                                                      'user_enable', 'user_disable',
                                                      'user_reset_password', 'user_reset_mfa')),
    target       text        NOT NULL,
    payload      jsonb       NOT NULL,
    proposed_by  uuid        NOT NULL REFERENCES users (id),
    proposed_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL CHECK (expires_at > proposed_at),
    decided_by   uuid        REFERENCES users (id),
    decided_at   timestamptz,
    decision     text        CHECK (decision IN ('approved', 'rejected')),
    CHECK ((decision IS NULL) = (decided_at IS NULL)),
    -- Nobody approves their own proposal (the application refuses it first).
    CHECK (decision IS DISTINCT FROM 'approved' OR decided_by IS DISTINCT FROM proposed_by)
);
CREATE INDEX access_proposals_pending ON access_proposals (proposed_at) WHERE decision IS NULL;

-- Care-team assignments name their reason (a field ciphertext: it may describe the patient).
-- Empty for assignments made before, and for the registrant of a patient.
ALTER TABLE patient_assignments ADD COLUMN reason bytea;
