-- The session check of a patient read or search in the read's own statement. An instance
-- remembers, for up to a minute, the sessions it has checked (crates/identity/src/sessions.rs,
-- `recall`), and a request of such a session is admitted on what it remembers: the user, and
-- the access version whose grants allowed the route. The record or candidate SELECT then
-- calls this function as a one-time filter (it reads no column of the row, so PostgreSQL
-- evaluates it once, before any row). The statement fails with SQLSTATE CK002 unless, in the
-- statement's own snapshot, the session is still live by every condition of
-- `live_sessions`, its user still needs no password change, and the user's access version is
-- still the one remembered (a trigger bumps it with every change to their roles, the roles'
-- permissions or their second factors), as is the username the audit trail names. The API then checks the session in full, as for any
-- other route, and answers on that. So a revocation, a disabled account or a role change
-- applies to the next request on every instance, as with a query of its own: nothing is
-- decided on what the instance remembers alone (docs/performance.md).
CREATE FUNCTION session_confirmed(p_session uuid, p_user uuid, p_username text,
                                  p_access_version bigint, p_now timestamptz,
                                  p_seen_after timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM 1
       FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.id = p_session AND s.user_id = p_user AND s.revoked_at IS NULL
        AND s.absolute_expires_at > p_now AND s.last_seen_at > p_seen_after
        AND u.status = 'active' AND NOT u.must_change_password
        AND u.access_version = p_access_version AND u.username = p_username;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the session is not confirmed' USING ERRCODE = 'CK002';
    END IF;
    RETURN true;
END $$;
