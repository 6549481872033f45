-- Per-account failure counter for anti-automation (owned by clinicd-identity). Kept in Postgres
-- so that it holds across every instance behind the load balancer.
ALTER TABLE users
    ADD COLUMN failed_attempts  integer     NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    ADD COLUMN first_failed_at  timestamptz,
    ADD COLUMN last_failed_at   timestamptz,
    ADD COLUMN locked_until     timestamptz;
