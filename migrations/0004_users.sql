-- User accounts (owned by clinicd-identity). Every person has their own account (HIPAA unique
-- user identification). Usernames and e-mail addresses are unique case-insensitively.
CREATE TABLE users (
    id                    uuid        PRIMARY KEY,
    username              text        NOT NULL CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$'),
    email                 text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    display_name          text        NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    status                text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'locked')),
    password_hash         text        NOT NULL,
    must_change_password  boolean     NOT NULL DEFAULT false,
    mfa_enabled           boolean     NOT NULL DEFAULT false,
    password_changed_at   timestamptz NOT NULL DEFAULT now(),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_username_unique ON users (lower(username));
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
