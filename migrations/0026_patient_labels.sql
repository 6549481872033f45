-- A patient's sensitivity label (owned by clinicd-domain, docs/lifecycle.md): a floor for the
-- whole record. Setting it raises every note's and file's label to at least it, and every note
-- and file written afterwards starts from it; the demographics stay readable to the care team.
-- No row: normal.
CREATE TABLE patient_labels (
    patient_id      uuid        PRIMARY KEY REFERENCES patients (id),
    confidentiality text        NOT NULL CHECK (confidentiality IN ('N', 'R', 'V')),
    sensitivity     text[]      NOT NULL DEFAULT '{}'
        CHECK (sensitivity <@ ARRAY['PSY', 'PSYTHPN', 'ETH', 'HIV', 'STD', 'SEX', 'GDIS', 'SDV']::text[]),
    updated_at      timestamptz NOT NULL,
    CHECK (cardinality(sensitivity) = 0 OR confidentiality <> 'N')
);
