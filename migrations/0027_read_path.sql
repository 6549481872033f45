-- Fewer round trips on the read path (docs/performance.md).

-- 1. A batch of audit events in one round trip. The writer keeps the chain's head in memory,
-- links and MACs the batch against it in the application (the chain and the HMAC are exactly
-- as before), and calls this function in a statement of its own, which is its own transaction:
-- it takes the chain's advisory lock, checks that the head is still the one the batch was
-- linked to, and only then inserts the events, their disclosures and the new head. If another
-- instance moved the head it writes nothing and returns the current head, and the writer
-- links the batch again. The lock is the one `append_in` takes ("clinicd audit" in ASCII).
CREATE FUNCTION audit_append(
    expected_seq     bigint,
    expected_hash    bytea,
    seqs             bigint[],
    occurred         timestamptz[],
    actor_ids        uuid[],
    actor_names      text[],
    session_ids      uuid[],
    actions          text[],
    resource_types   text[],
    resource_ids     text[],
    patient_ids      uuid[],
    outcomes         text[],
    http_methods     text[],
    routes           text[],
    status_codes     int[],
    client_ips       text[],
    user_agents      text[],
    request_ids      text[],
    reasons          text[],
    metadatas        jsonb[],
    sealed           bytea[],
    prev_hashes      bytea[],
    hashes           bytea[],
    disclosed        uuid[],
    disclosed_seqs   bigint[],
    disclosed_times  timestamptz[],
    head_key_version int,
    head_mac         bytea
) RETURNS TABLE (moved boolean, head_seq bigint, head_hash bytea)
LANGUAGE plpgsql AS $$
DECLARE
    current_seq  bigint;
    current_hash bytea;
    last         int := array_length(seqs, 1);
BEGIN
    IF last IS NULL OR seqs[1] <> expected_seq + 1 OR prev_hashes[1] <> expected_hash THEN
        RAISE EXCEPTION 'audit_append: a batch must start right after the expected head';
    END IF;
    PERFORM pg_advisory_xact_lock(7164217030042018932);
    SELECT h.seq, h.hash INTO current_seq, current_hash
        FROM audit_heads h ORDER BY h.seq DESC LIMIT 1;
    IF current_seq IS NULL THEN
        current_seq := 0;
    END IF;
    IF current_seq <> expected_seq
       OR (current_hash IS NOT NULL AND current_hash <> expected_hash) THEN
        RETURN QUERY SELECT true, current_seq, current_hash;
        RETURN;
    END IF;
    INSERT INTO audit_events (seq, occurred_at, actor_user_id, actor_username, session_id, action,
            resource_type, resource_id, patient_id, outcome, http_method, route, status_code,
            client_ip, user_agent, request_id, reason, metadata, sealed_values, prev_hash, hash)
        SELECT * FROM UNNEST(seqs, occurred, actor_ids, actor_names, session_ids, actions,
            resource_types, resource_ids, patient_ids, outcomes, http_methods, routes,
            status_codes, client_ips, user_agents, request_ids, reasons, metadatas, sealed,
            prev_hashes, hashes);
    IF array_length(disclosed, 1) IS NOT NULL THEN
        INSERT INTO audit_disclosures (patient_id, seq, occurred_at)
            SELECT * FROM UNNEST(disclosed, disclosed_seqs, disclosed_times);
    END IF;
    INSERT INTO audit_heads (seq, hash, key_version, mac)
        VALUES (seqs[last], hashes[last], head_key_version, head_mac);
    RETURN QUERY SELECT false, seqs[last], hashes[last];
END $$;

-- 2. What a user may do, versioned. Every change to what decides a user's grants (their
-- roles, a role's definition, their second factor) bumps `access_version` in the same
-- transaction, so a server may keep grants in memory keyed by (user, version): the session
-- check, which reads the user's row on every request anyway, returns the version, and a
-- changed version misses the cache on every instance at once. No time-based cache.
ALTER TABLE users ADD COLUMN access_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION users_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        UPDATE users SET access_version = access_version + 1;
    ELSIF TG_TABLE_NAME = 'roles' THEN
        UPDATE users SET access_version = access_version + 1
            WHERE id IN (SELECT ur.user_id FROM user_roles ur WHERE ur.role_name = OLD.name);
    ELSE
        UPDATE users SET access_version = access_version + 1
            WHERE id = OLD.user_id OR id = NEW.user_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER user_roles_access AFTER INSERT OR UPDATE OR DELETE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION users_access_changed();
CREATE TRIGGER roles_access AFTER UPDATE OR DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION users_access_changed();
CREATE TRIGGER mfa_totp_access AFTER INSERT OR DELETE ON mfa_totp
    FOR EACH ROW EXECUTE FUNCTION users_access_changed();
-- A login's TOTP step moves `last_step`; only enrolment changes what the user may do.
CREATE TRIGGER mfa_totp_confirmed_access AFTER UPDATE ON mfa_totp
    FOR EACH ROW WHEN (OLD.confirmed_at IS DISTINCT FROM NEW.confirmed_at
                       OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION users_access_changed();
CREATE TRIGGER user_roles_truncate_access AFTER TRUNCATE ON user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION users_access_changed();
CREATE TRIGGER roles_truncate_access AFTER TRUNCATE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION users_access_changed();
CREATE TRIGGER mfa_totp_truncate_access AFTER TRUNCATE ON mfa_totp
    FOR EACH STATEMENT EXECUTE FUNCTION users_access_changed();
