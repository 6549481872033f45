-- RBAC (owned by clinicd-rbac): the permission sets of roles, care teams and break-the-glass.
-- docs/rbac.md holds the built-in roles' table; a test checks this seed against it.

-- The closed set of permission names (crates/rbac/src/permission.rs). A new permission is a
-- new migration that replaces this function.
CREATE FUNCTION rbac_permission_names() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY[
    'patient:read', 'patient:write', 'patient:read_identifiers', 'care_team:manage',
    'appointment:read', 'appointment:write', 'note:read', 'note:write',
    'file:upload', 'file:read', 'audit:read', 'audit:read_values',
    'user:manage', 'role:manage', 'security:read', 'keys:manage', 'break_glass', 'export'
  ]::text[]
$$;

-- "Privileged" is what identity stored as "MFA required": holders need a second factor.
ALTER TABLE roles RENAME COLUMN mfa_required TO privileged;
-- `permissions`: what holders may do. `delegable`: what holders may grant to others without
-- holding it for use (the Admin role hands out clinical permissions it cannot use).
ALTER TABLE roles
    ADD COLUMN permissions text[] NOT NULL DEFAULT '{}' CHECK (permissions <@ rbac_permission_names()),
    ADD COLUMN delegable   text[] NOT NULL DEFAULT '{}' CHECK (delegable <@ rbac_permission_names()),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

UPDATE roles SET
    description = 'Administers users, roles, keys and the audit trail; reads no clinical data',
    permissions = ARRAY['audit:read', 'user:manage', 'role:manage', 'security:read', 'keys:manage'],
    delegable = ARRAY['patient:read', 'patient:write', 'patient:read_identifiers', 'care_team:manage',
                      'appointment:read', 'appointment:write', 'note:read', 'note:write',
                      'file:upload', 'file:read', 'audit:read_values', 'break_glass', 'export']
  WHERE name = 'Admin';
UPDATE roles SET
    permissions = ARRAY['patient:read', 'appointment:read', 'appointment:write', 'note:read', 'note:write',
                        'file:upload', 'file:read', 'break_glass']
  WHERE name = 'Provider';
UPDATE roles SET
    permissions = ARRAY['patient:read', 'patient:write', 'patient:read_identifiers', 'care_team:manage',
                        'appointment:read', 'appointment:write', 'file:upload', 'file:read']
  WHERE name = 'Staff';
UPDATE roles SET
    permissions = ARRAY['patient:read', 'appointment:read', 'note:read', 'file:read']
  WHERE name = 'ReadOnly';
INSERT INTO roles (name, description, built_in, privileged, permissions) VALUES
    ('PrivacyOfficer', 'Reviews the audit trail and emergency accesses; answers right-of-access requests',
     true, true, ARRAY['audit:read', 'audit:read_values', 'security:read', 'export']);

-- Patients. The clinical-records migration adds the demographics; care teams and emergency
-- grants need only the id.
CREATE TABLE patients (
    id          uuid        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Who may reach which patient.
CREATE TABLE patient_assignments (
    patient_id   uuid        NOT NULL REFERENCES patients (id),
    user_id      uuid        NOT NULL REFERENCES users (id),
    assigned_by  uuid        REFERENCES users (id),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, user_id)
);
CREATE INDEX patient_assignments_by_user ON patient_assignments (user_id, patient_id);

-- Emergency access outside the care team. `reason` is a field ciphertext (it may describe the
-- patient). Rows are never deleted: they are the review record.
CREATE TABLE break_glass_grants (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id),
    patient_id   uuid        NOT NULL REFERENCES patients (id),
    reason       bytea       NOT NULL,
    granted_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL CHECK (expires_at > granted_at),
    reviewed_by  uuid        REFERENCES users (id),
    reviewed_at  timestamptz
);
CREATE INDEX break_glass_grants_by_user ON break_glass_grants (user_id, patient_id, expires_at);
CREATE INDEX break_glass_grants_pending ON break_glass_grants (granted_at) WHERE reviewed_at IS NULL;
