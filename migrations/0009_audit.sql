-- The audit trail (owned by clinicd-audit). Append-only: triggers refuse UPDATE, DELETE and
-- TRUNCATE; the server's own database role should hold INSERT and SELECT only on these tables
-- (docs/audit.md gives the GRANTs).

-- One row per audited request or security event. `seq` is gap-free (a single writer per
-- transaction holds an advisory lock); `hash` = SHA-256(prev_hash || canonical encoding of the
-- row), so changing, removing or reordering a row breaks every later link. No PHI in clear:
-- route templates, never paths; ids, never values; before/after values only as a ciphertext.
CREATE TABLE audit_events (
    seq             bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor_user_id   uuid,
    actor_username  text,
    session_id      uuid,
    action          text        NOT NULL,
    resource_type   text,
    resource_id     text,
    patient_id      uuid,
    outcome         text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied', 'error')),
    http_method     text,
    route           text,
    status_code     integer,
    client_ip       text,
    user_agent      text,
    request_id      text,
    reason          text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    sealed_values   bytea,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    PRIMARY KEY (seq, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX audit_events_by_time ON audit_events (occurred_at);
CREATE INDEX audit_events_by_patient ON audit_events (patient_id, occurred_at) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_by_actor ON audit_events (actor_user_id, occurred_at);

-- Monthly partitions; a default partition catches anything outside them, so an append never
-- fails for want of a partition (maintenance creates partitions ahead).
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
DO $$
DECLARE
    month date := date_trunc('month', now())::date - interval '1 month';
BEGIN
    FOR i IN 0..24 LOOP
        EXECUTE format(
            'CREATE TABLE audit_events_%s PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
            to_char(month, 'YYYY_MM'), month, (month + interval '1 month')::date);
        month := (month + interval '1 month')::date;
    END LOOP;
END $$;

-- After each batch the writer records the chain head: the last sequence number and hash with
-- an HMAC under the audit key (key provider), which someone with the database but without the
-- key cannot compute for a rebuilt chain.
CREATE TABLE audit_heads (
    seq          bigint      PRIMARY KEY,
    hash         bytea       NOT NULL,
    key_version  integer     NOT NULL,
    mac          bytea       NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_heads_append_only BEFORE UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
-- TRUNCATE of a single partition does not fire the parent's statement trigger: each partition
-- gets its own.
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'audit_events'::regclass LOOP
        EXECUTE format(
            'CREATE TRIGGER audit_partition_no_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()',
            part);
    END LOOP;
END $$;

-- Identity's security events (its table; it owns the SQL that claims and marks them) are
-- forwarded into the trail; the mark is set in the same transaction as the append, so each
-- event lands exactly once.
ALTER TABLE security_events ADD COLUMN forwarded_at timestamptz;
CREATE INDEX security_events_unforwarded ON security_events (id) WHERE forwarded_at IS NULL;

-- Partitions archived past retention: where the retained chain starts again. Append-only too.
CREATE TABLE audit_archives (
    partition_name text        PRIMARY KEY,
    month          date        NOT NULL,
    first_seq      bigint      NOT NULL,
    last_seq       bigint      NOT NULL,
    last_hash      bytea       NOT NULL,
    row_count      bigint      NOT NULL,
    file_name      text        NOT NULL,
    file_sha256    text        NOT NULL,
    archived_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
