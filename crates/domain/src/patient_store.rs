//! The SQL of `patients` and `patient_name_tokens`: create, read, update with a version check,
//! and searches limited to the patients a viewer may reach.

use chrono::{DateTime, Utc};
use clinicd_crypto::{
    Batch, BlindIndexSpec, CryptoError, DerivedIndex, Keyring, SubjectId,
    blind_index::name_tokens,
    reindex::{versions_changed, versions_check, versions_param},
};
use clinicd_identity::sessions::SessionCheck;
use clinicd_identity::users::UserId;
use clinicd_rbac::{RbacError, Reach};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::patient::{
    self, DOB_INDEX, FAMILY_NAME_INDEX, NAME_TOKEN_INDEX, Patient, PatientData, SSN_INDEX, open,
    open_json, seal, seal_json,
};
use crate::read_connections::{ReadConnections, ReadLease};
use crate::types::{DateOfBirth, EmailAddress, PatientStatus, PersonName, Phone, Sex, Ssn};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such record")]
    NotFound,
    /// The record changed since the caller read it: its current version.
    #[error("the record has changed (now version {0})")]
    VersionMismatch(i32),
    #[error("a stored value does not parse")]
    Corrupt,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encryption error: {0}")]
    Crypto(#[from] CryptoError),
    /// The statement found the caller's remembered session no longer as remembered (SQLSTATE
    /// CK002 from `session_confirmed`): check the session in full.
    #[error("the session was not confirmed")]
    SessionNotConfirmed,
}

/// SQLSTATE raised by `session_confirmed` (migration 0031).
const SESSION_NOT_CONFIRMED: &str = "CK002";

/// A database error, or [`StoreError::SessionNotConfirmed`] if the statement failed its session
/// check.
fn read_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.code().as_deref() == Some(SESSION_NOT_CONFIRMED) => {
            StoreError::SessionNotConfirmed
        }
        _ => StoreError::Database(error),
    }
}

/// The care-team rule is asked of RBAC; its only failure on these paths is the database's.
impl From<RbacError> for StoreError {
    fn from(error: RbacError) -> Self {
        match error {
            RbacError::Database(error) => Self::Database(error),
            other => Self::Database(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

/// Who is asking, for searches limited to the care team (and unexpired break-the-glass grants).
#[derive(Debug, Clone, Copy)]
pub struct Viewer {
    pub user: Uuid,
    pub now: DateTime<Utc>,
}

/// How to find patients. Exact matches only (case- and accent-insensitive for names).
#[derive(Clone, PartialEq, Eq)]
pub enum Search {
    Mrn(String),
    Ssn(Ssn),
    FamilyNameAndBirth(PersonName, DateOfBirth),
    /// Every token must be one of the patient's name tokens.
    NameTokens(Vec<String>),
    /// No criterion: the viewer's own patients.
    Mine,
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The mode only: the values are PHI.
        let mode = match self {
            Self::Mrn(_) => "Mrn",
            Self::Ssn(_) => "Ssn",
            Self::FamilyNameAndBirth(..) => "FamilyNameAndBirth",
            Self::NameTokens(_) => "NameTokens",
            Self::Mine => "Mine",
        };
        write!(f, "Search::{mode}(..)")
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    mrn: String,
    given_name: Vec<u8>,
    family_name: Vec<u8>,
    date_of_birth: Vec<u8>,
    sex: String,
    ssn: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
    email: Option<Vec<u8>>,
    insurance_primary: Option<Vec<u8>>,
    insurance_secondary: Option<Vec<u8>>,
    emergency_contact: Option<Vec<u8>>,
    status: String,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// How the viewer reaches the patient (the SQL function `patient_reach`); only in
    /// `get_reachable`.
    #[sqlx(default)]
    reach: Option<String>,
}

/// The columns of [`Row`] for the runtime search query (the checked queries spell them out).
const COLUMNS: &str = "p.id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.sex, p.ssn, p.address, \
     p.phone, p.email, p.insurance_primary, p.insurance_secondary, p.emergency_contact, p.status, \
     p.version, p.created_at, p.updated_at";

/// A new patient, encrypted and indexed, ready to insert.
pub struct NewPatient {
    id: Uuid,
    sealed: Sealed,
    data: PatientData,
}

impl std::fmt::Debug for NewPatient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPatient")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The ciphertexts and index values of one patient, ready to write.
struct Sealed {
    given_name: Vec<u8>,
    family_name: Vec<u8>,
    date_of_birth: Vec<u8>,
    ssn: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
    phone: Option<Vec<u8>>,
    email: Option<Vec<u8>>,
    insurance_primary: Option<Vec<u8>>,
    insurance_secondary: Option<Vec<u8>>,
    emergency_contact: Option<Vec<u8>>,
    ssn_index: Option<(Vec<u8>, i32)>,
    dob_index: (Vec<u8>, i32),
    family_index: (Vec<u8>, i32),
    tokens: Vec<(Vec<u8>, i32)>,
}

/// What a tombstone removed besides the row's own values: counts, for the certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tombstoned {
    pub notes: u64,
    pub appointments: u64,
}

#[derive(Debug, Clone)]
pub struct PatientStore {
    db: PgPool,
    /// The API worker's own connections for the hot reads (a record, a search), if it has
    /// them ([`PatientStore::on_connections`]); else those run on `db` too.
    own_reads: Option<std::sync::Arc<ReadConnections>>,
    keyring: std::sync::Arc<Keyring>,
}

impl PatientStore {
    /// The patient's label, the floor of their notes' and files' (normal if none was set).
    pub async fn label(&self, patient: Uuid) -> Result<crate::Label, StoreError> {
        let row = sqlx::query!(
            "SELECT confidentiality, sensitivity FROM patient_labels WHERE patient_id = $1",
            patient
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(row
            .map(|r| crate::Label::from_stored(&r.confidentiality, &r.sensitivity))
            .unwrap_or_default())
    }

    /// Sets the patient's label and raises every note of theirs to at least it, in the caller's
    /// transaction (the files' owner raises the files in the same one). Notes keep any higher
    /// label of their own; lowering the patient's label lowers no note.
    pub async fn set_label(
        &self,
        tx: &mut PgConnection,
        patient: Uuid,
        label: &crate::Label,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let codes = label.codes();
        sqlx::query!(
            "INSERT INTO patient_labels (patient_id, confidentiality, sensitivity, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id) DO UPDATE \
             SET confidentiality = EXCLUDED.confidentiality, sensitivity = EXCLUDED.sensitivity, \
                 updated_at = EXCLUDED.updated_at",
            patient,
            label.confidentiality.as_str(),
            &codes,
            at
        )
        .execute(&mut *tx)
        .await?;
        // 'N' < 'R' < 'V' as text, so GREATEST is the higher level.
        let raised = sqlx::query!(
            "UPDATE clinical_notes SET confidentiality = GREATEST(confidentiality, $2), \
               sensitivity = ARRAY(SELECT DISTINCT c FROM unnest(sensitivity || $3::text[]) AS c ORDER BY c) \
             WHERE patient_id = $1 AND (confidentiality < $2 OR NOT sensitivity @> $3::text[])",
            patient,
            label.confidentiality.as_str(),
            &codes
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(raised)
    }

    pub fn new(db: PgPool, keyring: std::sync::Arc<Keyring>) -> Self {
        Self {
            db,
            own_reads: None,
            keyring,
        }
    }

    /// The same store running its reads of records (`get`, `get_reachable`, `search`) on an
    /// API worker's own connections; everything else stays on the shared pool.
    pub fn on_connections(self, own: std::sync::Arc<ReadConnections>) -> Self {
        Self {
            own_reads: Some(own),
            ..self
        }
    }

    async fn read_lease(&self) -> Result<ReadLease<'_>, sqlx::Error> {
        ReadLease::acquire(&self.db, self.own_reads.as_deref()).await
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Encrypts and indexes a new patient's record, before any transaction opens: key work
    /// may need a connection of its own, and a transaction held meanwhile would pin one per
    /// request (under load, the pool would run dry).
    pub async fn prepare(&self, data: &PatientData) -> Result<NewPatient, StoreError> {
        let id = Uuid::now_v7();
        Ok(NewPatient {
            id,
            sealed: self.seal(id, data).await?,
            data: data.clone(),
        })
    }

    /// Registers a prepared patient in the caller's transaction (which may add the creator to
    /// the care team). The MRN comes from a sequence.
    pub async fn create(
        &self,
        tx: &mut PgConnection,
        patient: &NewPatient,
        created_by: Option<Uuid>,
    ) -> Result<Patient, StoreError> {
        self.insert(tx, patient, created_by, None)
            .await?
            .ok_or(StoreError::Corrupt)
    }

    /// Registers a patient brought over from another system, once: `None` if a patient with
    /// this import key (a keyed hash of the source system's id, see
    /// [`crate::patient::IMPORT_KEY`]) exists.
    pub async fn import(
        &self,
        tx: &mut PgConnection,
        patient: &NewPatient,
        import_key: &[u8],
    ) -> Result<Option<Patient>, StoreError> {
        self.insert(tx, patient, None, Some(import_key)).await
    }

    /// The import key of a source system's record id (`None` if it is empty): its keyed hash
    /// under the active blind-index key ([`crate::patient::IMPORT_KEY`]).
    pub async fn import_key(&self, source_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .keyring
            .blind_index(&patient::IMPORT_KEY, source_id)
            .await?
            .map(|index| index.value))
    }

    /// Whether a patient was imported from this source record id: its keyed hash is looked up
    /// under every live blind-index key, so a re-run after a key rotation still recognises
    /// what an earlier run imported.
    pub async fn imported(&self, source_id: &str) -> Result<bool, StoreError> {
        let keys: Vec<Vec<u8>> = self
            .keyring
            .blind_index_candidates(&patient::IMPORT_KEY, source_id)
            .await?
            .into_iter()
            .map(|index| index.value)
            .collect();
        Ok(sqlx::query_scalar!(
            "SELECT EXISTS (SELECT 1 FROM patients WHERE import_key = ANY($1)) AS \"v!\"",
            &keys
        )
        .fetch_one(&self.db)
        .await?)
    }

    async fn insert(
        &self,
        tx: &mut PgConnection,
        patient: &NewPatient,
        created_by: Option<Uuid>,
        import_key: Option<&[u8]>,
    ) -> Result<Option<Patient>, StoreError> {
        let (id, sealed, data) = (patient.id, &patient.sealed, &patient.data);
        let sequence: i64 = sqlx::query_scalar!("SELECT nextval('patient_mrn_seq') AS \"v!\"")
            .fetch_one(&mut *tx)
            .await?;
        let mrn = patient::mrn(sequence);
        let created: Option<DateTime<Utc>> = sqlx::query_scalar!("INSERT INTO patients (id, mrn, given_name, family_name, date_of_birth, sex, ssn, address, phone, email, \
               insurance_primary, insurance_secondary, emergency_contact, status, version, created_by, \
               ssn_bidx, ssn_bidx_version, date_of_birth_bidx, date_of_birth_bidx_version, \
               family_name_bidx, family_name_bidx_version, import_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15, $16, $17, $18, $19, $20, $21, $22) \
             ON CONFLICT (import_key) DO NOTHING RETURNING created_at", id, &mrn, &sealed.given_name, &sealed.family_name, &sealed.date_of_birth, data.sex.as_str(), sealed.ssn.as_deref(), sealed.address.as_deref(), sealed.phone.as_deref(), sealed.email.as_deref(), sealed.insurance_primary.as_deref(), sealed.insurance_secondary.as_deref(), sealed.emergency_contact.as_deref(), data.status.as_str(), created_by, sealed.ssn_index.as_ref().map(|i| i.0.clone()), sealed.ssn_index.as_ref().map(|i| i.1), &sealed.dob_index.0, sealed.dob_index.1, &sealed.family_index.0, sealed.family_index.1, import_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(created_at) = created else {
            return Ok(None);
        };
        write_tokens(tx, id, &sealed.tokens).await?;
        Ok(Some(Patient {
            id,
            mrn,
            data: data.clone(),
            version: 1,
            created_at,
            updated_at: created_at,
        }))
    }

    /// The id of the patient with this MRN, without opening the record (for imports that name
    /// patients by MRN).
    pub async fn id_by_mrn(&self, mrn: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(
            sqlx::query_scalar!("SELECT id FROM patients WHERE mrn = $1", mrn)
                .fetch_optional(&self.db)
                .await?,
        )
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Patient>, StoreError> {
        let mut lease = self.read_lease().await?;
        let row: Option<Row> = sqlx::query_as!(Row, "SELECT p.id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.sex, p.ssn, p.address, p.phone, p.email, p.insurance_primary, p.insurance_secondary, p.emergency_contact, p.status, p.version, p.created_at, p.updated_at, NULL::text AS reach FROM patients p WHERE p.id = $1", id)
        .fetch_optional(lease.connection()?)
        .await?;
        lease.release();
        match row {
            Some(row) => Ok(Some(self.open(row).await?)),
            None => Ok(None),
        }
    }

    /// The patient, if `viewer` may reach them, and how: one query, the record and the
    /// care-team rule together (the read path is the hot one). With `session`, the same
    /// statement also confirms the caller's remembered session, before it reads a row
    /// ([`StoreError::SessionNotConfirmed`] if it cannot).
    pub async fn get_reachable(
        &self,
        id: Uuid,
        viewer: Viewer,
        session: Option<&SessionCheck>,
    ) -> Result<Option<(Patient, Reach)>, StoreError> {
        let mut lease = self.read_lease().await?;
        let found: Option<Row> = match session {
            None => sqlx::query_as!(Row, "SELECT p.id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.sex, p.ssn, p.address, p.phone, p.email, p.insurance_primary, p.insurance_secondary, p.emergency_contact, p.status, p.version, p.created_at, p.updated_at, r.reach FROM patients p \
                 CROSS JOIN LATERAL (SELECT patient_reach($2, p.id, $3) AS reach) r \
                 WHERE p.id = $1 AND r.reach IS NOT NULL", id, viewer.user, viewer.now)
            .fetch_optional(lease.connection()?)
            .await?,
            // The session condition reads no column of the row: a one-time filter, evaluated
            // once before the scan whether or not the patient exists.
            Some(check) => sqlx::query_as!(Row, "SELECT p.id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.sex, p.ssn, p.address, p.phone, p.email, p.insurance_primary, p.insurance_secondary, p.emergency_contact, p.status, p.version, p.created_at, p.updated_at, r.reach FROM patients p \
                 CROSS JOIN LATERAL (SELECT patient_reach($2, p.id, $3) AS reach) r \
                 WHERE p.id = $1 AND r.reach IS NOT NULL AND session_confirmed($4, $5, $6, $7, $8, $9)",
                 id, viewer.user, viewer.now, check.session, check.user, check.username, check.access_version, check.now, check.seen_after)
            .fetch_optional(lease.connection()?)
            .await
            .map_err(read_error)?,
        };
        lease.release();
        match found {
            Some(row) => {
                let reach = Reach::from_sql(row.reach.as_deref());
                Ok(Some((self.open(row).await?, reach)))
            }
            None => Ok(None),
        }
    }

    /// Confirms the caller's remembered session in a statement of its own, for a search that
    /// needs no candidate query.
    async fn confirm(&self, check: &SessionCheck) -> Result<(), StoreError> {
        let mut lease = self.read_lease().await?;
        sqlx::query_scalar!(
            "SELECT session_confirmed($1, $2, $3, $4, $5, $6)",
            check.session,
            check.user,
            check.username,
            check.access_version,
            check.now,
            check.seen_after
        )
        .fetch_one(lease.connection()?)
        .await
        .map_err(read_error)?;
        lease.release();
        Ok(())
    }

    /// Registers a prepared patient in the caller's transaction, and puts the registrant on
    /// the patient's care team in the same one: nobody registers a patient they then cannot
    /// reach, and no patient exists without a team.
    pub async fn register(
        &self,
        tx: &mut PgConnection,
        prepared: &NewPatient,
        registrant: UserId,
    ) -> Result<Patient, StoreError> {
        let patient = self.create(tx, prepared, Some(registrant.0)).await?;
        clinicd_rbac::care_team::assign_registrant(tx, patient.id, registrant).await?;
        Ok(patient)
    }

    /// Encrypts and indexes a changed record, before any transaction opens (see
    /// [`Self::prepare`]).
    pub async fn prepare_change(
        &self,
        id: Uuid,
        data: &PatientData,
    ) -> Result<NewPatient, StoreError> {
        Ok(NewPatient {
            id,
            sealed: self.seal(id, data).await?,
            data: data.clone(),
        })
    }

    /// Replaces the record with a prepared change if it is still at `expected_version`, in the
    /// caller's transaction; the new version is one more.
    pub async fn update(
        &self,
        tx: &mut PgConnection,
        change: &NewPatient,
        expected_version: i32,
    ) -> Result<Patient, StoreError> {
        let (id, sealed, data) = (change.id, &change.sealed, &change.data);
        let updated = sqlx::query!("UPDATE patients SET given_name = $3, family_name = $4, date_of_birth = $5, sex = $6, ssn = $7, \
               address = $8, phone = $9, email = $10, insurance_primary = $11, insurance_secondary = $12, \
               emergency_contact = $13, status = $14, ssn_bidx = $15, ssn_bidx_version = $16, \
               date_of_birth_bidx = $17, date_of_birth_bidx_version = $18, family_name_bidx = $19, \
               family_name_bidx_version = $20, version = version + 1, updated_at = now() \
             WHERE id = $1 AND version = $2 RETURNING version, mrn, created_at, updated_at", id, expected_version, &sealed.given_name, &sealed.family_name, &sealed.date_of_birth, data.sex.as_str(), sealed.ssn.as_deref(), sealed.address.as_deref(), sealed.phone.as_deref(), sealed.email.as_deref(), sealed.insurance_primary.as_deref(), sealed.insurance_secondary.as_deref(), sealed.emergency_contact.as_deref(), data.status.as_str(), sealed.ssn_index.as_ref().map(|i| i.0.clone()), sealed.ssn_index.as_ref().map(|i| i.1), &sealed.dob_index.0, sealed.dob_index.1, &sealed.family_index.0, sealed.family_index.1)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((version, mrn, created_at, updated_at)) =
            updated.map(|row| (row.version, row.mrn, row.created_at, row.updated_at))
        else {
            let current: Option<i32> =
                sqlx::query_scalar!("SELECT version FROM patients WHERE id = $1", id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(current.map_or(StoreError::NotFound, StoreError::VersionMismatch));
        };
        sqlx::query!("DELETE FROM patient_name_tokens WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?;
        write_tokens(tx, id, &sealed.tokens).await?;
        Ok(Patient {
            id,
            mrn,
            data: data.clone(),
            version,
            created_at,
            updated_at,
        })
    }

    /// Crypto-shreds a patient in the caller's transaction: destroys their subject keys (every
    /// field, note and file key under them becomes unreadable, on every instance once this
    /// commits) and removes the blind indexes and name tokens that would still let someone
    /// find the row by a known value. The row stays as a tombstone for the lifecycle to reduce.
    /// Returns the versions of the subject keys destroyed.
    pub async fn shred(&self, tx: &mut PgConnection, id: Uuid) -> Result<Vec<u32>, StoreError> {
        sqlx::query!("UPDATE patients SET ssn_bidx = NULL, ssn_bidx_version = NULL, date_of_birth_bidx = NULL, \
               date_of_birth_bidx_version = NULL, family_name_bidx = NULL, family_name_bidx_version = NULL \
             WHERE id = $1", id)
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM patient_name_tokens WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?;
        Ok(self
            .keyring
            .destroy_subject_versions(tx, SubjectId(id))
            .await?)
    }

    /// Reduces a shredded patient to a tombstone in the caller's transaction (which must have
    /// set `clinicd.erasing` to the patient, so that signed notes may go): their notes and
    /// appointments are deleted, every ciphertext of the row emptied, and the MRN replaced by a
    /// fresh one that links to nothing outside. The id stays, for the audit trail and the
    /// erasure ledger, and so do the care-team rows (ids only), so that the care team is told
    /// 410 Gone rather than 404. Returns the counts removed, by table.
    pub async fn tombstone(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Tombstoned, StoreError> {
        // Amendments point at the notes they correct: one statement removes both.
        let notes = sqlx::query!("DELETE FROM clinical_notes WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Consents' terms are under the destroyed key already; the rows go too, and the label
        // (a code beside a patient id says something about them).
        sqlx::query!("DELETE FROM patient_consents WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM patient_labels WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?;
        let appointments = sqlx::query!("DELETE FROM appointments WHERE patient_id = $1", id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let sequence: i64 = sqlx::query_scalar!("SELECT nextval('patient_mrn_seq') AS \"v!\"")
            .fetch_one(&mut *tx)
            .await?;
        let updated = sqlx::query!(
            "UPDATE patients SET mrn = $2, given_name = '\\x', family_name = '\\x', date_of_birth = '\\x', \
               sex = 'unknown', ssn = NULL, address = NULL, phone = NULL, email = NULL, insurance_primary = NULL, \
               insurance_secondary = NULL, emergency_contact = NULL, import_key = NULL, status = 'inactive', \
               version = version + 1, updated_at = $3, erased_at = $3 \
             WHERE id = $1 AND erased_at IS NULL",
            id,
            patient::mrn(sequence),
            at
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::NotFound);
        }
        Ok(Tombstoned {
            notes,
            appointments,
        })
    }

    /// When the patient was erased (`None`: never), or `Err(NotFound)` for no such patient.
    pub async fn erased_at(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar!(
            "SELECT erased_at FROM patients WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// One page of the patients `viewer` may reach that match `search`, ordered by id, after
    /// `cursor`. Candidates come from the truncated blind indexes and are decrypted and compared
    /// exactly; the second value is the cursor for the next page, if there may be one.
    pub async fn search(
        &self,
        search: &Search,
        viewer: Viewer,
        cursor: Option<Uuid>,
        limit: usize,
        session: Option<&SessionCheck>,
    ) -> Result<(Vec<Patient>, Option<Uuid>), StoreError> {
        // The blind indexes are computed under the key versions this instance last saw, and
        // the candidate query checks them (`versions_check`). If a rotation has changed them,
        // the search reads them again and reruns; a second change in between is improbable,
        // a third an operator rotating in a loop, which answers as a database error.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .search_once(search, viewer, cursor, limit, session)
                .await
            {
                Err(StoreError::Database(error)) if versions_changed(&error) && attempts < 3 => {
                    self.keyring.blind_index_versions().await?;
                }
                result => return result,
            }
        }
    }

    async fn search_once(
        &self,
        search: &Search,
        viewer: Viewer,
        cursor: Option<Uuid>,
        limit: usize,
        session: Option<&SessionCheck>,
    ) -> Result<(Vec<Patient>, Option<Uuid>), StoreError> {
        let (condition, binds) = self.condition(search).await?;
        let Some(condition) = condition else {
            if let Some(check) = session {
                self.confirm(check).await?;
            }
            return Ok((Vec::new(), None));
        };
        let batch = (limit * 2 + 8) as i64;
        // The session condition reads no column of a row: a one-time filter, evaluated once
        // before the scan, whether or not any patient matches.
        let session_condition = match session {
            Some(_) => {
                let n = 5 + binds.len();
                format!(
                    " AND session_confirmed(${}, ${}, ${}, ${}, ${}, ${})",
                    n,
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                )
            }
            None => String::new(),
        };
        // Runtime query: the condition is chosen per search (which blind index, over how many
        // key versions), so its text is only known here; every value in it is a bind.
        let sql = format!(
            "SELECT {COLUMNS} FROM patients p WHERE patient_reach($1, p.id, $2) IS NOT NULL AND ($3::uuid IS NULL OR p.id > $3) \
             AND {condition}{session_condition} ORDER BY p.id LIMIT $4"
        );
        let mut found = Vec::new();
        let mut after = cursor;
        loop {
            let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(viewer.user)
                .bind(viewer.now)
                .bind(after)
                .bind(batch);
            for bind in &binds {
                query = match bind {
                    Bind::Text(text) => query.bind(text.clone()),
                    Bind::Value(value) => query.bind(value.clone()),
                    Bind::Values(values) => query.bind(values.clone()),
                    Bind::Versions(versions) => query.bind(versions.clone()),
                };
            }
            if let Some(check) = session {
                query = query
                    .bind(check.session)
                    .bind(check.user)
                    .bind(check.username.clone())
                    .bind(check.access_version)
                    .bind(check.now)
                    .bind(check.seen_after);
            }
            // Back before the rows are decrypted: a key the cache lacks is read on the shared pool.
            let mut lease = self.read_lease().await?;
            let rows = query
                .fetch_all(lease.connection()?)
                .await
                .map_err(read_error)?;
            lease.release();
            let exhausted = (rows.len() as i64) < batch;
            for row in rows {
                after = Some(row.id);
                // A crypto-shredded patient is skipped: there is nothing left to match.
                let matched = match self.matches(search, &row).await {
                    Err(StoreError::Crypto(CryptoError::KeyDestroyed)) => continue,
                    matched => matched?,
                };
                if !matched {
                    continue;
                }
                let patient = match self.open(row).await {
                    Err(StoreError::Crypto(CryptoError::KeyDestroyed)) => continue,
                    opened => opened?,
                };
                found.push(patient);
                if found.len() == limit {
                    return Ok((found, after));
                }
            }
            if exhausted {
                return Ok((found, None));
            }
        }
    }

    /// The SQL condition of a search and its parameters (from `$5`). `None`: nothing can match.
    /// A condition on blind indexes also checks the key versions they were computed under.
    async fn condition(&self, search: &Search) -> Result<(Option<String>, Vec<Bind>), StoreError> {
        if matches!(search, Search::Mine | Search::Mrn(_)) {
            return self.index_condition(search, &[]).await;
        }
        let mut versions = self.keyring.blind_index_versions_seen().await?;
        let (condition, mut binds) = match self.index_condition(search, &versions).await {
            Ok(found) => found,
            // A version the hint names may be gone (its key destroyed), which the statement's
            // check would report only after the indexes are computed: read them again.
            Err(_) => {
                versions = self.keyring.blind_index_versions().await?;
                self.index_condition(search, &versions).await?
            }
        };
        let Some(condition) = condition else {
            return Ok((None, binds));
        };
        let check = versions_check(binds.len() + 5);
        binds.push(Bind::Versions(versions_param(&versions)));
        Ok((Some(format!("{check} AND {condition}")), binds))
    }

    /// [`Self::condition`] before the version check, with blind indexes under `versions`.
    async fn index_condition(
        &self,
        search: &Search,
        versions: &[u32],
    ) -> Result<(Option<String>, Vec<Bind>), StoreError> {
        let candidates = |spec: BlindIndexSpec, value: String| async move {
            let found = self
                .keyring
                .blind_index_candidates_at(&spec, &value, versions)
                .await?;
            Ok::<_, StoreError>(found.into_iter().map(|i| i.value).collect::<Vec<_>>())
        };
        Ok(match search {
            Search::Mine => (Some("true".into()), vec![]),
            Search::Mrn(mrn) => (Some("p.mrn = $5".into()), vec![Bind::Text(mrn.clone())]),
            Search::Ssn(ssn) => {
                let values = candidates(SSN_INDEX, ssn.as_str().to_owned()).await?;
                let (clause, bind) = index_match("p.ssn_bidx", 5, values);
                (Some(clause), vec![bind])
            }
            Search::FamilyNameAndBirth(name, dob) => {
                let names = candidates(FAMILY_NAME_INDEX, name.as_str().to_owned()).await?;
                let dobs = candidates(DOB_INDEX, dob.iso()).await?;
                let (name_clause, name_bind) = index_match("p.family_name_bidx", 5, names);
                let (dob_clause, dob_bind) = index_match("p.date_of_birth_bidx", 6, dobs);
                (
                    Some(format!("{name_clause} AND {dob_clause}")),
                    vec![name_bind, dob_bind],
                )
            }
            Search::NameTokens(tokens) => {
                let mut clauses = Vec::new();
                let mut binds = Vec::new();
                for (i, token) in tokens.iter().enumerate() {
                    let values = candidates(NAME_TOKEN_INDEX, token.clone()).await?;
                    if values.is_empty() {
                        return Ok((None, vec![]));
                    }
                    let (clause, bind) = index_match("t.token", i + 5, values);
                    clauses.push(format!(
                        "EXISTS (SELECT 1 FROM patient_name_tokens t WHERE t.patient_id = p.id AND {clause})"
                    ));
                    binds.push(bind);
                }
                if clauses.is_empty() {
                    return Ok((None, vec![]));
                }
                (Some(clauses.join(" AND ")), binds)
            }
        })
    }

    async fn seal(&self, id: Uuid, data: &PatientData) -> Result<Sealed, StoreError> {
        let k = &*self.keyring;
        let index = |spec: BlindIndexSpec, value: String| async move {
            let index = k
                .blind_index(&spec, &value)
                .await?
                .ok_or(StoreError::Corrupt)?;
            Ok::<_, StoreError>((
                index.value,
                i32::try_from(index.key_version).unwrap_or(i32::MAX),
            ))
        };
        let tokens =
            token_indexes(k, data.given_name.as_str(), data.family_name.as_str(), None).await?;
        Ok(Sealed {
            given_name: seal(k, id, "given_name", data.given_name.as_str()).await?,
            family_name: seal(k, id, "family_name", data.family_name.as_str()).await?,
            date_of_birth: seal(k, id, "date_of_birth", &data.date_of_birth.iso()).await?,
            ssn: match &data.ssn {
                Some(ssn) => Some(seal(k, id, "ssn", ssn.as_str()).await?),
                None => None,
            },
            address: seal_json(k, id, "address", &data.address).await?,
            phone: match &data.phone {
                Some(phone) => Some(seal(k, id, "phone", phone.as_str()).await?),
                None => None,
            },
            email: match &data.email {
                Some(email) => Some(seal(k, id, "email", email.as_str()).await?),
                None => None,
            },
            insurance_primary: seal_json(k, id, "insurance_primary", &data.insurance_primary)
                .await?,
            insurance_secondary: seal_json(k, id, "insurance_secondary", &data.insurance_secondary)
                .await?,
            emergency_contact: seal_json(k, id, "emergency_contact", &data.emergency_contact)
                .await?,
            ssn_index: match &data.ssn {
                Some(ssn) => Some(index(SSN_INDEX, ssn.as_str().to_owned()).await?),
                None => None,
            },
            dob_index: index(DOB_INDEX, data.date_of_birth.iso()).await?,
            family_index: index(FAMILY_NAME_INDEX, data.family_name.as_str().to_owned()).await?,
            tokens,
        })
    }

    /// Whether a candidate really matches `search` (the indexes are truncated, so most
    /// candidates of a large clinic's common buckets do not). Decrypts only the fields the
    /// search compares, the family name before the birth date: a candidate that does not match
    /// costs one or two decryptions instead of the record's ten, and only a match is opened.
    async fn matches(&self, search: &Search, row: &Row) -> Result<bool, StoreError> {
        if row.given_name.is_empty() {
            // An erased patient's tombstone (see `open`).
            return Err(StoreError::Crypto(CryptoError::KeyDestroyed));
        }
        let k = &*self.keyring;
        let fold = |s: &str| {
            clinicd_crypto::blind_index::normalize(clinicd_crypto::Normalizer::NameToken, s)
        };
        Ok(match search {
            Search::Mine => true,
            Search::Mrn(mrn) => row.mrn == *mrn,
            Search::Ssn(ssn) => match &row.ssn {
                Some(bytes) => {
                    let text = open(k, row.id, "ssn", bytes).await?;
                    Ssn::parse("ssn", &text).map_err(|_| StoreError::Corrupt)? == *ssn
                }
                None => false,
            },
            Search::FamilyNameAndBirth(wanted, dob) => {
                let family = open_name(k, row.id, "family_name", &row.family_name).await?;
                if fold(wanted.as_str()) != fold(family.as_str()) {
                    return Ok(false);
                }
                let text = open(k, row.id, "date_of_birth", &row.date_of_birth).await?;
                DateOfBirth::from_stored(&text).ok_or(StoreError::Corrupt)? == *dob
            }
            Search::NameTokens(tokens) => {
                let mut own = name_tokens(
                    open_name(k, row.id, "given_name", &row.given_name)
                        .await?
                        .as_str(),
                );
                own.extend(name_tokens(
                    open_name(k, row.id, "family_name", &row.family_name)
                        .await?
                        .as_str(),
                ));
                tokens
                    .iter()
                    .all(|t| fold(t).is_some_and(|t| own.contains(&t)))
            }
        })
    }

    async fn open(&self, row: Row) -> Result<Patient, StoreError> {
        // An erased patient's tombstone holds empty ciphertexts (only `tombstone` writes them):
        // the record is gone for good, exactly as when its key was destroyed.
        if row.given_name.is_empty() {
            return Err(StoreError::Crypto(CryptoError::KeyDestroyed));
        }
        let k = &*self.keyring;
        let id = row.id;
        let text =
            |column: &'static str, bytes: Vec<u8>| async move { open(k, id, column, &bytes).await };
        let optional = |column: &'static str, bytes: Option<Vec<u8>>| async move {
            match bytes {
                Some(bytes) => open(k, id, column, &bytes).await.map(Some),
                None => Ok(None),
            }
        };
        let corrupt = |_| StoreError::Corrupt;
        // Stored values were valid when written; parse them again so a type holds its promise.
        let data = PatientData {
            given_name: open_name(k, id, "given_name", &row.given_name).await?,
            family_name: open_name(k, id, "family_name", &row.family_name).await?,
            date_of_birth: DateOfBirth::from_stored(
                &text("date_of_birth", row.date_of_birth).await?,
            )
            .ok_or(StoreError::Corrupt)?,
            sex: Sex::parse("sex", &row.sex).map_err(corrupt)?,
            ssn: optional("ssn", row.ssn)
                .await?
                .map(|s| Ssn::parse("ssn", &s))
                .transpose()
                .map_err(corrupt)?,
            address: open_json(k, id, "address", row.address.as_deref()).await?,
            phone: optional("phone", row.phone)
                .await?
                .map(|s| Phone::parse("phone", &s))
                .transpose()
                .map_err(corrupt)?,
            email: optional("email", row.email)
                .await?
                .map(|s| EmailAddress::parse("email", &s))
                .transpose()
                .map_err(corrupt)?,
            insurance_primary: open_json(
                k,
                id,
                "insurance_primary",
                row.insurance_primary.as_deref(),
            )
            .await?,
            insurance_secondary: open_json(
                k,
                id,
                "insurance_secondary",
                row.insurance_secondary.as_deref(),
            )
            .await?,
            emergency_contact: open_json(
                k,
                id,
                "emergency_contact",
                row.emergency_contact.as_deref(),
            )
            .await?,
            status: PatientStatus::parse("status", &row.status).map_err(corrupt)?,
        };
        Ok(Patient {
            id,
            mrn: row.mrn,
            data,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A stored name, decrypted and parsed again as at registration.
async fn open_name(
    k: &Keyring,
    id: Uuid,
    column: &'static str,
    bytes: &[u8],
) -> Result<PersonName, StoreError> {
    let text = open(k, id, column, bytes).await?;
    PersonName::parse(column, &text).map_err(|_| StoreError::Corrupt)
}

/// `column` against the blind indexes of one searched value, bound at `$n`: `=` for the usual
/// single index (one live key version), `= ANY` for several (during a rotation) or none.
/// PostgreSQL plans a statement with `= ANY($n)` of unknown length afresh on every execution
/// (its generic plan always looks dearer than a custom one): about 0.1 ms of CPU, a third of a
/// search's. An equality gets the cached generic plan, and the same index scan.
fn index_match(column: &str, n: usize, mut values: Vec<Vec<u8>>) -> (String, Bind) {
    match (values.pop(), values.is_empty()) {
        (Some(value), true) => (format!("{column} = ${n}"), Bind::Value(value)),
        (last, _) => {
            values.extend(last);
            (format!("{column} = ANY(${n})"), Bind::Values(values))
        }
    }
}

enum Bind {
    Text(String),
    Value(Vec<u8>),
    Values(Vec<Vec<u8>>),
    /// Blind-index key versions, for `versions_check`.
    Versions(Vec<i32>),
}

/// The name-token index of a patient's names: every word of both, folded, once each, under
/// blind-index key `version` (the active one if `None`).
async fn token_indexes(
    k: &Keyring,
    given_name: &str,
    family_name: &str,
    version: Option<u32>,
) -> Result<Vec<(Vec<u8>, i32)>, CryptoError> {
    let mut words = name_tokens(given_name);
    words.extend(name_tokens(family_name));
    words.sort_unstable();
    words.dedup();
    let mut tokens = Vec::with_capacity(words.len());
    for word in words {
        let index = match version {
            Some(version) => k.blind_index_at(&NAME_TOKEN_INDEX, &word, version).await?,
            None => k.blind_index(&NAME_TOKEN_INDEX, &word).await?,
        };
        // A token is a folded word, which always normalises.
        let index = index.ok_or(CryptoError::InvalidPlaintext)?;
        tokens.push((
            index.value,
            i32::try_from(index.key_version).unwrap_or(i32::MAX),
        ));
    }
    Ok(tokens)
}

/// The name-token index (a row per word of a patient's names, in `patient_name_tokens`), for
/// `clinicd keys reindex`: after a blind-index key rotation, the tokens of every patient that
/// has any under an older key are made again from the decrypted names.
#[derive(Debug, Clone, Copy)]
pub struct NameTokenIndex;

#[async_trait::async_trait]
impl DerivedIndex for NameTokenIndex {
    fn progress_key(&self) -> (&'static str, &'static str) {
        (NAME_TOKEN_INDEX.table, NAME_TOKEN_INDEX.column)
    }

    async fn rebuild_batch(
        &self,
        keyring: &Keyring,
        tx: &mut PgConnection,
        after: Option<Uuid>,
        limit: i64,
        active: u32,
    ) -> Result<Batch, CryptoError> {
        let rows = sqlx::query!(
            "SELECT p.id, p.given_name, p.family_name, EXISTS (SELECT 1 FROM patient_name_tokens t \
             WHERE t.patient_id = p.id AND t.key_version <> $3) AS \"stale!\" \
             FROM patients p WHERE ($1::uuid IS NULL OR p.id > $1) ORDER BY p.id LIMIT $2",
            after,
            limit,
            i32::try_from(active).unwrap_or(i32::MAX)
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut batch = Batch::over(rows.last().map(|row| row.id), rows.len(), limit);
        for row in rows {
            let (id, given_name, family_name, stale) =
                (row.id, row.given_name, row.family_name, row.stale);
            batch.seen += 1;
            if !stale {
                continue;
            }
            let names = async {
                Ok::<_, CryptoError>((
                    open(keyring, id, "given_name", &given_name).await?,
                    open(keyring, id, "family_name", &family_name).await?,
                ))
            };
            let (given, family) = match names.await {
                Ok(names) => names,
                Err(CryptoError::KeyDestroyed) => {
                    batch.destroyed += 1;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let tokens = token_indexes(keyring, &given, &family, Some(active)).await?;
            sqlx::query!("DELETE FROM patient_name_tokens WHERE patient_id = $1", id)
                .execute(&mut *tx)
                .await?;
            write_tokens(&mut *tx, id, &tokens).await?;
            batch.moved += 1;
        }
        Ok(batch)
    }
}

async fn write_tokens(
    tx: &mut PgConnection,
    patient: Uuid,
    tokens: &[(Vec<u8>, i32)],
) -> Result<(), sqlx::Error> {
    let values: Vec<Vec<u8>> = tokens.iter().map(|t| t.0.clone()).collect();
    let versions: Vec<i32> = tokens.iter().map(|t| t.1).collect();
    sqlx::query!(
        "INSERT INTO patient_name_tokens (patient_id, token, key_version) \
         SELECT $1, t.token, t.version FROM unnest($2::bytea[], $3::int[]) AS t(token, version) \
         ON CONFLICT DO NOTHING",
        patient,
        &values,
        &versions
    )
    .execute(tx)
    .await?;
    Ok(())
}
