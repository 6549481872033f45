-- Login failures per username, known or not (owned by clinicd-identity). Replaces the per-account
-- counter of 0006: an unknown username must meet the same delays, challenge and lockout as a real
-- one, or the answers tell which usernames exist. Keyed by a keyed hash of the folded username
-- (people type passwords into the username field); `user_id` links the row of a real account, for
-- the administrators' view and unlock.
CREATE TABLE login_attempts (
    username_key     bytea       PRIMARY KEY,
    user_id          uuid        REFERENCES users (id) ON DELETE CASCADE,
    failed_attempts  integer     NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    first_failed_at  timestamptz,
    last_failed_at   timestamptz,
    locked_until     timestamptz
);
CREATE INDEX login_attempts_by_user ON login_attempts (user_id) WHERE user_id IS NOT NULL;
-- For the upkeep job that forgets rows whose window and lock are long over.
CREATE INDEX login_attempts_by_last_failure ON login_attempts (last_failed_at);

ALTER TABLE users
    DROP COLUMN failed_attempts,
    DROP COLUMN first_failed_at,
    DROP COLUMN last_failed_at,
    DROP COLUMN locked_until;
