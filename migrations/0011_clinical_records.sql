-- Clinical records (owned by clinicd-domain): patients, appointments and notes.
-- Every direct identifier and every clinical text is a field ciphertext (bytea) under the
-- patient's subject key; lookups without the MRN go through truncated blind indexes
-- (docs/field-encryption.md). A `SELECT *` shows no identifier in clear.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE SEQUENCE patient_mrn_seq START 100000;

ALTER TABLE patients
    ADD COLUMN mrn                        text        NOT NULL UNIQUE CHECK (mrn ~ '^[0-9]{9}$'),
    ADD COLUMN given_name                 bytea       NOT NULL,
    ADD COLUMN family_name                bytea       NOT NULL,
    ADD COLUMN date_of_birth              bytea       NOT NULL,
    ADD COLUMN sex                        text        NOT NULL CHECK (sex IN ('female', 'male', 'other', 'unknown')),
    ADD COLUMN ssn                        bytea,
    ADD COLUMN address                    bytea,
    ADD COLUMN phone                      bytea,
    ADD COLUMN email                      bytea,
    ADD COLUMN insurance_primary          bytea,
    ADD COLUMN insurance_secondary        bytea,
    ADD COLUMN emergency_contact          bytea,
    ADD COLUMN status                     text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'deceased')),
    ADD COLUMN version                    integer     NOT NULL DEFAULT 1,
    ADD COLUMN updated_at                 timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN created_by                 uuid        REFERENCES users (id),
    -- Set by `clinicd import patients`: the source system's id, so a re-run does not duplicate.
    ADD COLUMN import_key                 bytea       UNIQUE,
    ADD COLUMN ssn_bidx                   bytea,
    ADD COLUMN ssn_bidx_version           integer,
    ADD COLUMN date_of_birth_bidx         bytea       NOT NULL,
    ADD COLUMN date_of_birth_bidx_version integer     NOT NULL,
    ADD COLUMN family_name_bidx           bytea       NOT NULL,
    ADD COLUMN family_name_bidx_version   integer     NOT NULL;
CREATE INDEX patients_ssn_bidx ON patients (ssn_bidx) WHERE ssn_bidx IS NOT NULL;
CREATE INDEX patients_family_dob_bidx ON patients (family_name_bidx, date_of_birth_bidx);

-- One row per distinct token of the given and family names.
CREATE TABLE patient_name_tokens (
    patient_id   uuid    NOT NULL REFERENCES patients (id),
    token        bytea   NOT NULL,
    key_version  integer NOT NULL,
    PRIMARY KEY (patient_id, token, key_version)
);
CREATE INDEX patient_name_tokens_by_token ON patient_name_tokens (token);

-- Appointments. A provider cannot be booked twice at once: the exclusion constraint holds
-- for live bookings (cancelled and no-show ones free the slot).
CREATE TABLE appointments (
    id           uuid        PRIMARY KEY,
    patient_id   uuid        NOT NULL REFERENCES patients (id),
    provider_id  uuid        NOT NULL REFERENCES users (id),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('new_patient', 'follow_up', 'annual', 'procedure', 'telehealth', 'other')),
    status       text        NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'arrived', 'completed', 'cancelled', 'no_show')),
    version      integer     NOT NULL DEFAULT 1,
    created_by   uuid        REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at AND ends_at - starts_at <= interval '12 hours'),
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        provider_id WITH =, tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status NOT IN ('cancelled', 'no_show'))
);
CREATE INDEX appointments_by_patient ON appointments (patient_id, starts_at);
CREATE INDEX appointments_by_provider ON appointments (provider_id, starts_at);

-- Clinical notes. A signed note never changes (the trigger below refuses it, whatever the
-- client); corrections are amendments: new notes pointing at the one they correct.
CREATE TABLE clinical_notes (
    id              uuid        PRIMARY KEY,
    patient_id      uuid        NOT NULL REFERENCES patients (id),
    author_id       uuid        NOT NULL REFERENCES users (id),
    encounter_date  date        NOT NULL,
    body            bytea       NOT NULL,
    amends          uuid        REFERENCES clinical_notes (id),
    status          text        NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'signed')),
    signed_at       timestamptz,
    version         integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'signed') = (signed_at IS NOT NULL))
);
CREATE INDEX clinical_notes_by_patient ON clinical_notes (patient_id, encounter_date DESC);
CREATE INDEX clinical_notes_by_original ON clinical_notes (amends) WHERE amends IS NOT NULL;

CREATE FUNCTION clinical_notes_signed_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'signed' THEN
        RAISE EXCEPTION 'clinical note % is signed and cannot change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER clinical_notes_signed_are_final BEFORE UPDATE OR DELETE ON clinical_notes
    FOR EACH ROW EXECUTE FUNCTION clinical_notes_signed_are_final();
