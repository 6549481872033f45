-- Each run of a scheduled job (owned by the clinicd binary's job runner; the queue itself lives
-- in graphile_worker's schema `clinicd_jobs`, which it creates and migrates). For operators:
-- which tick ran, on which instance, how it went. Never holds PHI (counts and error text).
CREATE TABLE job_runs (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job            text        NOT NULL,
    scheduled_for  timestamptz,
    instance       uuid        NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    outcome        text        NOT NULL CHECK (outcome IN ('ok', 'failed')),
    detail         jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX job_runs_by_job ON job_runs (job, started_at DESC);

-- Partition upkeep for the scheduled job, callable by a server role that may only read and
-- append the trail (docs/audit.md): SECURITY DEFINER, so the partitions belong to the trail's
-- owner, and they can only add partitions or move stranded rows, never change or remove one.
-- EXECUTE is granted to the server's role by the DBA, not to PUBLIC.

-- The partition of `month` (any day in it), unless it exists; returns its name if created.
CREATE FUNCTION audit_create_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name  text := 'audit_events_' || to_char(date_trunc('month', month), 'YYYY_MM');
BEGIN
    -- Serialises upkeep across instances and commands ("audit parts" in ASCII).
    PERFORM pg_advisory_xact_lock(7022629598042026612);
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                   name, first, (first + interval '1 month')::date);
    EXECUTE format('CREATE TRIGGER audit_partition_no_truncate BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', name);
    RETURN name;
END $$;

-- Rows that reached the default partition (upkeep lapsed) move into partitions of their own
-- months, unchanged (the chain covers content, not place), and a fresh empty default takes its
-- place; Postgres refuses a month's partition while the default holds rows of that month.
-- Returns the partitions created. Nothing stranded, the usual case, costs one query.
CREATE FUNCTION audit_rehome_default() RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    created text[] := '{}';
    month   date;
    name    text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_events_default) THEN
        RETURN created;
    END IF;
    PERFORM pg_advisory_xact_lock(7022629598042026612);
    -- Another caller may have re-homed them while this one waited.
    IF NOT EXISTS (SELECT 1 FROM audit_events_default) THEN
        RETURN created;
    END IF;
    ALTER TABLE audit_events DETACH PARTITION audit_events_default;
    ALTER TABLE audit_events_default RENAME TO audit_events_stranded;
    FOR month IN
        SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date
        FROM audit_events_stranded ORDER BY 1
    LOOP
        name := audit_create_partition(month);
        IF name IS NOT NULL THEN
            created := created || name;
        END IF;
    END LOOP;
    INSERT INTO audit_events SELECT * FROM audit_events_stranded;
    DROP TABLE audit_events_stranded;
    CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
    CREATE TRIGGER audit_partition_no_truncate BEFORE TRUNCATE ON audit_events_default
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
    RETURN created;
END $$;

REVOKE ALL ON FUNCTION audit_create_partition(date), audit_rehome_default() FROM PUBLIC;
