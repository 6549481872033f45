-- The care-team rule, unchanged, in PL/pgSQL. As a SQL function with EXISTS sub-queries it
-- cannot be inlined, so PostgreSQL planned its query again on every statement that called it
-- (about 0.06 ms of a patient read's 0.08; docs/performance.md). PL/pgSQL keeps each
-- connection's plans between calls.
CREATE OR REPLACE FUNCTION patient_reach(p_user uuid, p_patient uuid, p_at timestamptz) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM patient_assignments pa
                WHERE pa.patient_id = p_patient AND pa.user_id = p_user) THEN
        RETURN 'care_team';
    END IF;
    IF EXISTS (SELECT 1 FROM break_glass_grants bg
                WHERE bg.patient_id = p_patient AND bg.user_id = p_user
                  AND bg.expires_at > p_at) THEN
        RETURN 'break_glass';
    END IF;
    RETURN NULL;
END $$;
