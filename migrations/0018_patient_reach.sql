-- The care-team rule, in one place (owned by the RBAC crate, crates/rbac/src/care_team.rs):
-- how `p_user` reaches `p_patient` at `p_at`: 'care_team' (assigned to the patient's team),
-- 'break_glass' (an unexpired emergency grant), or NULL (not at all). Every query that scopes
-- rows to the caller calls this (`patient_reach($1, p.id, $2) IS NOT NULL`) rather than
-- repeating the rule. A plain SQL function of one expression, STABLE and not STRICT, so the
-- planner inlines it into the calling query: no per-row function call.
CREATE FUNCTION patient_reach(p_user uuid, p_patient uuid, p_at timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM patient_assignments pa
                      WHERE pa.patient_id = p_patient AND pa.user_id = p_user)
            THEN 'care_team'
        WHEN EXISTS (SELECT 1 FROM break_glass_grants bg
                      WHERE bg.patient_id = p_patient AND bg.user_id = p_user
                        AND bg.expires_at > p_at)
            THEN 'break_glass'
    END
$$;
