-- Security operations (owned by clinicd-secops, docs/security-operations.md): shared rate
-- limits, abuse counters, blocks, insider-misuse alerts and their delivery. None of these
-- tables holds PHI: ids, addresses, counts, rule names and keyed hashes only.

-- Shared rate limits: the GCRA "theoretical arrival time" of each (policy, key). UNLOGGED: no
-- WAL, so a decision costs one in-memory upsert; a crash empties the table, which only forgives
-- recent attempts (the login lockout in `login_attempts` is logged and survives).
CREATE UNLOGGED TABLE rate_buckets (
    policy  text        NOT NULL,
    key     text        NOT NULL,
    tat     timestamptz NOT NULL,
    PRIMARY KEY (policy, key)
);
CREATE INDEX rate_buckets_by_tat ON rate_buckets (tat);

-- Bad outcomes that may show an attack (failed logins, refused tokens, 404/403 bursts, CORS and
-- CSRF refusals), kept for the longest detection window. `subject` is what is counted
-- distinctly: a keyed hash of a username or password, or a route and resource id; never a
-- secret or PHI. UNLOGGED for the same reason as above.
CREATE UNLOGGED TABLE abuse_signals (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind     text        NOT NULL,
    ip       inet,
    user_id  uuid,
    subject  text        NOT NULL,
    -- A second thing counted: for a failed login, a keyed hash of the password (spraying).
    secondary text,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX abuse_signals_by_ip ON abuse_signals (kind, ip, at);
CREATE INDEX abuse_signals_by_subject ON abuse_signals (kind, subject, at);
CREATE INDEX abuse_signals_by_at ON abuse_signals (at);
CREATE INDEX abuse_signals_by_secondary ON abuse_signals (secondary, at) WHERE secondary IS NOT NULL;

-- Blocks of a client address (or network) or of an account. A block ends when it expires or is
-- lifted; rows are kept as the history that escalates a repeat offender's next block.
CREATE TABLE blocks (
    id          uuid        PRIMARY KEY,
    target      text        NOT NULL CHECK (target IN ('ip', 'account')),
    network     cidr,
    user_id     uuid        REFERENCES users (id),
    source      text        NOT NULL CHECK (source IN ('automatic', 'manual')),
    rule        text        NOT NULL,
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    evidence    jsonb       NOT NULL DEFAULT '{}',
    offence     integer     NOT NULL DEFAULT 1 CHECK (offence >= 1),
    created_by  uuid        REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL CHECK (expires_at > created_at),
    lifted_at   timestamptz,
    lifted_by   uuid        REFERENCES users (id),
    lift_reason text,
    CHECK ((target = 'ip') = (network IS NOT NULL)),
    CHECK ((target = 'account') = (user_id IS NOT NULL))
);
CREATE INDEX blocks_active ON blocks (expires_at) WHERE lifted_at IS NULL;
CREATE INDEX blocks_by_network ON blocks (network, created_at) WHERE network IS NOT NULL;
CREATE INDEX blocks_by_user ON blocks (user_id, created_at) WHERE user_id IS NOT NULL;

-- Every instance keeps the active blocks in memory and reloads them on this notification
-- (LISTEN clinicd_blocks), so a block or an unblock holds everywhere within a second.
CREATE FUNCTION blocks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('clinicd_blocks', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER blocks_changed AFTER INSERT OR UPDATE ON blocks
    FOR EACH ROW EXECUTE FUNCTION blocks_notify();

-- Patients the privacy office watches (VIPs, employees, their families): every access to one
-- raises an alert. The label and reason say why; no PHI.
CREATE TABLE watched_patients (
    patient_id  uuid        PRIMARY KEY REFERENCES patients (id),
    label       text        NOT NULL CHECK (label IN ('vip', 'employee', 'other')),
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    added_by    uuid        NOT NULL REFERENCES users (id),
    added_at    timestamptz NOT NULL
);

-- Alerts: from automatic blocks and from the insider-misuse rules. One unresolved alert per
-- `dedup_key`: a repeat raises `occurrences` and `last_seen` instead of a new alert.
CREATE TABLE security_alerts (
    id               uuid        PRIMARY KEY,
    rule             text        NOT NULL,
    severity         text        NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    dedup_key        text        NOT NULL,
    subject_user     uuid        REFERENCES users (id),
    subject_ip       inet,
    summary          text        NOT NULL CHECK (length(summary) <= 500),
    evidence         jsonb       NOT NULL DEFAULT '{}',
    occurrences      integer     NOT NULL DEFAULT 1,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    acknowledged_by  uuid        REFERENCES users (id),
    acknowledged_at  timestamptz,
    resolved_by      uuid        REFERENCES users (id),
    resolved_at      timestamptz,
    resolution       text
);
CREATE UNIQUE INDEX security_alerts_live ON security_alerts (dedup_key) WHERE state <> 'resolved';
CREATE INDEX security_alerts_by_state ON security_alerts (state, last_seen DESC);

-- One delivery of an alert to one channel: retried with backoff, dead after the last try.
-- `suppressed`: over the hourly delivery cap (an attack must not become an alert storm).
CREATE TABLE alert_deliveries (
    id               uuid        PRIMARY KEY,
    alert_id         uuid        NOT NULL REFERENCES security_alerts (id),
    channel          text        NOT NULL CHECK (channel IN ('webhook', 'email')),
    state            text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead', 'suppressed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_error       text,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alert_deliveries_by_alert ON alert_deliveries (alert_id);

-- The misuse rules scan the accounting of disclosures (owned by clinicd-audit) by time: every
-- patient an event disclosed, searches and lists included.
CREATE INDEX audit_disclosures_by_time ON audit_disclosures (occurred_at);
