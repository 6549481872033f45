-- A search computes its blind indexes under the key versions its instance last saw, and its
-- candidate SELECT checks them with this function, in the same statement: if a version was
-- added, retired into use or destroyed since (a rotation on any instance), the statement fails
-- with SQLSTATE CK001 and the search reads the versions again and reruns. A search so needs no
-- round trip of its own to read the versions, and never runs under a stale set
-- (docs/performance.md). The argument is the versions newest first, as the keyring lists them.
CREATE FUNCTION blind_index_versions_are(p_versions integer[]) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_versions IS DISTINCT FROM (
        SELECT coalesce(array_agg(version ORDER BY version DESC), '{}')
          FROM data_keys WHERE purpose = 'blind_index' AND status <> 'destroyed') THEN
        RAISE EXCEPTION 'the blind-index key versions have changed' USING ERRCODE = 'CK001';
    END IF;
    RETURN true;
END $$;
