-- TOTP second factor and backup codes (owned by clinicd-identity).

-- The TOTP secret is a field ciphertext (crypto crate, purpose key, bound to this table,
-- column and user). `last_step` is the last time step accepted: a code is never accepted twice.
CREATE TABLE mfa_totp (
    user_id       uuid        PRIMARY KEY REFERENCES users (id),
    secret        bytea       NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Single-use backup codes, stored as SHA-256 hashes (each code carries about 94 bits).
CREATE TABLE mfa_backup_codes (
    user_id    uuid        NOT NULL REFERENCES users (id),
    code_hash  bytea       NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, code_hash)
);

-- MFA challenges handed out by the password step; each can complete one login.
CREATE TABLE mfa_challenges (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id),
    remember_me boolean     NOT NULL DEFAULT false,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
