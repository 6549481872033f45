-- The accounting of disclosures (owned by clinicd-audit): each patient an audit event disclosed,
-- written in the append that writes the event: its own patient, and every patient a search or a
-- list returned (the event's `metadata.patients`), so the accounting finds them all. Derived
-- from the chained events (which it does not change); append-only like them.
CREATE TABLE audit_disclosures (
    patient_id   uuid        NOT NULL,
    seq          bigint      NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (patient_id, seq)
);
CREATE TRIGGER audit_disclosures_append_only BEFORE UPDATE ON audit_disclosures
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_disclosures_no_truncate BEFORE TRUNCATE ON audit_disclosures
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- What the trail already holds: each event's patient, the patients of appointment lists and
-- the ids of patient searches.
INSERT INTO audit_disclosures (patient_id, seq, occurred_at)
SELECT DISTINCT patient_id, seq, occurred_at FROM (
    SELECT patient_id, seq, occurred_at FROM audit_events WHERE patient_id IS NOT NULL
    UNION ALL
    SELECT (jsonb_array_elements_text(metadata->'patients'))::uuid, seq, occurred_at
      FROM audit_events WHERE jsonb_typeof(metadata->'patients') = 'array'
    UNION ALL
    SELECT (jsonb_array_elements_text(metadata->'ids'))::uuid, seq, occurred_at
      FROM audit_events WHERE resource_type = 'patient' AND action = 'search'
       AND jsonb_typeof(metadata->'ids') = 'array'
) disclosed;
