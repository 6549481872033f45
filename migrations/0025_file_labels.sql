-- Sensitivity labels on files (owned by clinicd-files; their meaning is the domain's label,
-- docs/lifecycle.md): the same HL7 confidentiality and sensitivity codes as clinical notes.
ALTER TABLE files
    ADD COLUMN confidentiality text   NOT NULL DEFAULT 'N' CHECK (confidentiality IN ('N', 'R', 'V')),
    ADD COLUMN sensitivity     text[] NOT NULL DEFAULT '{}'
        CHECK (sensitivity <@ ARRAY['PSY', 'PSYTHPN', 'ETH', 'HIV', 'STD', 'SEX', 'GDIS', 'SDV']::text[]),
    ADD CONSTRAINT files_coded_is_restricted CHECK (cardinality(sensitivity) = 0 OR confidentiality <> 'N');
