-- Consents a patient has signed (owned by clinicd-domain, docs/lifecycle.md): today one kind, a
-- 42 CFR Part 2 consent to disclose substance-use treatment records to a named recipient for a
-- purpose, until a date. The terms (kind, recipient, purpose, dates) are one field ciphertext
-- under the patient's subject key: a row that said "Part 2" beside a patient id would itself
-- disclose substance-use treatment, and erasure reaches the terms with the key. Revocation is a
-- column, so a revoked consent stays on record.
CREATE TABLE patient_consents (
    id          uuid        PRIMARY KEY,
    patient_id  uuid        NOT NULL REFERENCES patients (id),
    terms       bytea       NOT NULL,
    recorded_by uuid        NOT NULL REFERENCES users (id),
    recorded_at timestamptz NOT NULL,
    revoked_by  uuid        REFERENCES users (id),
    revoked_at  timestamptz,
    CHECK ((revoked_by IS NULL) = (revoked_at IS NULL))
);
CREATE INDEX patient_consents_patient ON patient_consents (patient_id);
