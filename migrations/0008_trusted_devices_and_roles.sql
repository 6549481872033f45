-- Trusted devices, the e-mail/SMS fallback code, and the roles' "MFA required" flag
-- (owned by clinicd-identity; RBAC adds permissions to `roles`).

-- "Remember this device for 30 days": an opaque 256-bit token held by the device, stored as a
-- SHA-256 hash. It stands in for the second factor only: the password is still required.
CREATE TABLE trusted_devices (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id),
    token_hash    bytea       NOT NULL UNIQUE,
    label         text        CHECK (length(label) <= 512),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_reason text
);
CREATE INDEX trusted_devices_live_by_user ON trusted_devices (user_id) WHERE revoked_at IS NULL;

-- A one-time code sent by the OtpSender (fallback for a user without their authenticator),
-- bound to one MFA challenge, stored hashed; at most 3 sends per challenge.
ALTER TABLE mfa_challenges
    ADD COLUMN otp_hash      bytea,
    ADD COLUMN otp_expires_at timestamptz,
    ADD COLUMN otp_sends     integer NOT NULL DEFAULT 0;

-- Roles. Stored now for the per-role "MFA required" flag; RBAC adds the permission sets and
-- enforces it.
CREATE TABLE roles (
    name          text        PRIMARY KEY CHECK (name ~ '^[A-Za-z][A-Za-z0-9_-]{0,63}$'),
    description   text        NOT NULL DEFAULT '',
    built_in      boolean     NOT NULL DEFAULT false,
    mfa_required  boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO roles (name, description, built_in, mfa_required) VALUES
    ('Admin', 'Administers users, roles, keys and the audit trail; no clinical data by default', true, true),
    ('Provider', 'Clinician: reads and writes the records of patients in their care', true, true),
    ('Staff', 'Front desk: registration, scheduling and care-team assignments', true, false),
    ('ReadOnly', 'Reads the records of patients in their care', true, false);

CREATE TABLE user_roles (
    user_id      uuid        NOT NULL REFERENCES users (id),
    role_name    text        NOT NULL REFERENCES roles (name),
    assigned_by  uuid        REFERENCES users (id),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_name)
);
