-- Sensitivity labels on clinical notes (owned by clinicd-domain, docs/lifecycle.md): HL7's
-- confidentiality code (N normal, R restricted, V very restricted) and its information
-- sensitivity codes, so that they map onto FHIR `meta.security`. A note with a sensitivity code
-- is at least restricted.
ALTER TABLE clinical_notes
    ADD COLUMN confidentiality text   NOT NULL DEFAULT 'N' CHECK (confidentiality IN ('N', 'R', 'V')),
    ADD COLUMN sensitivity     text[] NOT NULL DEFAULT '{}'
        CHECK (sensitivity <@ ARRAY['PSY', 'PSYTHPN', 'ETH', 'HIV', 'STD', 'SEX', 'GDIS', 'SDV']::text[]),
    ADD CONSTRAINT clinical_notes_coded_is_restricted CHECK (cardinality(sensitivity) = 0 OR confidentiality <> 'N');

-- A signed note never changes, except its label (relabelled with a reason, audited) and its
-- erasure (0021).
CREATE OR REPLACE FUNCTION clinical_notes_signed_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'signed' THEN
        IF TG_OP = 'DELETE'
           AND coalesce(current_setting('clinicd.erasing', true), '') = OLD.patient_id::text THEN
            RETURN OLD;
        END IF;
        IF TG_OP = 'UPDATE'
           AND (to_jsonb(NEW) - 'confidentiality' - 'sensitivity' - 'updated_at')
             = (to_jsonb(OLD) - 'confidentiality' - 'sensitivity' - 'updated_at') THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'clinical note % is signed and cannot change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

-- A permission per restricted subtype (docs/rbac.md). No built-in role holds them: a clinic
-- gives them to the roles that need them (a behavioural-health role, say); Admin delegates them.
CREATE OR REPLACE FUNCTION rbac_permission_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY[
    'patient:read', 'patient:write', 'patient:read_identifiers', 'care_team:manage',
    'appointment:read', 'appointment:write', 'note:read', 'note:write',
    'file:upload', 'file:read', 'audit:read', 'audit:read_values',
    'user:manage', 'role:manage', 'security:read', 'keys:manage', 'break_glass', 'export',
    'lifecycle:hold', 'lifecycle:erase',
    'restricted:psychotherapy', 'restricted:substance_use', 'restricted:hiv',
    'restricted:reproductive', 'restricted:other'
  ]::text[]
$$;
UPDATE roles SET delegable = delegable || ARRAY['restricted:psychotherapy', 'restricted:substance_use',
    'restricted:hiv', 'restricted:reproductive', 'restricted:other']
  WHERE name = 'Admin';
