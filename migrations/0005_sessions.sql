-- Sessions, refresh tokens and security events (owned by clinicd-identity).

CREATE TABLE sessions (
    id                   uuid        PRIMARY KEY,
    user_id              uuid        NOT NULL REFERENCES users (id),
    created_at           timestamptz NOT NULL,
    last_seen_at         timestamptz NOT NULL,
    absolute_expires_at  timestamptz NOT NULL,
    remember_me          boolean     NOT NULL DEFAULT false,
    client_ip            inet,
    user_agent           text        CHECK (length(user_agent) <= 512),
    revoked_at           timestamptz,
    revoked_reason       text
);
CREATE INDEX sessions_live_by_user ON sessions (user_id, created_at) WHERE revoked_at IS NULL;

-- Opaque refresh tokens, stored as SHA-256 hashes (they are 256-bit random values, so a fast
-- hash suffices). Each is single use: using one marks it used and issues the next; presenting a
-- used one again revokes the whole session (likely token theft).
CREATE TABLE refresh_tokens (
    token_hash   bytea       PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sessions (id),
    created_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Authentication and session security events, until the audit trail takes them over.
CREATE TABLE security_events (
    id           uuid        PRIMARY KEY,
    occurred_at  timestamptz NOT NULL,
    kind         text        NOT NULL,
    user_id      uuid,
    session_id   uuid,
    client_ip    inet,
    detail       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX security_events_by_time ON security_events (occurred_at);
