-- Crypto-shredding (owned by clinicd-domain): a shredded patient's row stays as a tombstone, but
-- nothing may still find it by a known value, so its blind indexes can be emptied.
ALTER TABLE patients
    ALTER COLUMN date_of_birth_bidx DROP NOT NULL,
    ALTER COLUMN date_of_birth_bidx_version DROP NOT NULL,
    ALTER COLUMN family_name_bidx DROP NOT NULL,
    ALTER COLUMN family_name_bidx_version DROP NOT NULL;
