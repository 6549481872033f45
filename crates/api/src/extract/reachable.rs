//! Scope by construction. A handler that touches a patient, a note, a booking or a file takes
//! one of these extractors instead of an id: it gets the row only if the caller may reach the
//! row's patient (the care-team rule, [`clinicd_rbac::Reach`], which the SQL function
//! `patient_reach` decides), and otherwise the request ends here with 404 whether or not the
//! row exists. A handler cannot forget the check, because without the extractor it has no
//! row. Modelled on svix's `core/permissions.rs`, where an `Organization` or `Application`
//! extractor is the only way to an id.
//!
//! The row is named by the route's `{id}` segment; a malformed id is 400 `invalid_parameters`
//! as for any path. The caller is authenticated as by [`Authenticated`] (the principal is
//! shared with it, not looked up twice). The route's permission was checked before any
//! extractor runs (`crate::middleware`), so a caller without it gets 403, never a hint from
//! this 404.
//!
//! The one deliberate way around the care-team rule is [`ExportablePatient`]: the privacy
//! office's right-of-access export, which reaches any patient, under its own permission.

use std::future::Future;
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use clinicd_domain::{Appointment, Note, Patient, StoreError, Viewer};
use clinicd_files::StoredFile;
use clinicd_identity::sessions::{Principal, SessionCheck};
use clinicd_identity::users::UserId;
use clinicd_rbac::Reach;

use crate::extract::Authenticated;
use crate::extract::caller::{self, Provisional};
use crate::problem::ApiError;
use crate::state::ApiState;

/// A row the caller may reach, how they reach its patient, and who they are.
#[derive(Debug)]
pub struct Reachable<T> {
    row: T,
    reach: Reach,
    caller: Principal,
}

impl<T> Reachable<T> {
    pub fn into_row(self) -> T {
        self.row
    }

    /// Through the care team or a break-the-glass grant (never [`Reach::None`]).
    pub fn reach(&self) -> Reach {
        self.reach
    }

    pub fn caller(&self) -> &Principal {
        &self.caller
    }

    pub fn user(&self) -> UserId {
        self.caller.user_id
    }
}

impl<T> Deref for Reachable<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.row
    }
}

/// A patient's record, decrypted, if the caller may reach them: one query (the record and the
/// care-team rule together; this is the hot read path).
pub type ReachablePatient = Reachable<Patient>;
/// A patient the caller may reach, without reading the record: for what is done to the
/// patient's notes, bookings or files.
pub type ReachablePatientId = Reachable<PatientId>;
pub type ReachableNote = Reachable<Note>;
pub type ReachableAppointment = Reachable<Appointment>;
/// A stored file that is not deleted.
pub type ReachableFile = Reachable<StoredFile>;

/// A patient's id, once the care-team rule has let the caller reach them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientId(pub Uuid);

/// A row kind that the care-team rule scopes.
pub trait Scoped: Sized + 'static {
    /// The row named `id` and how `viewer` reaches its patient; `None` when it does not
    /// exist or the viewer cannot reach it (the two are not told apart).
    fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> impl Future<Output = Result<Option<(Self, Reach)>, ApiError>>;

    /// As [`Scoped::load`], in a statement that also confirms the caller's remembered session
    /// (`session_confirmed`). By default a kind cannot, and answers
    /// [`Confirming::Unconfirmed`]: the session is then checked in full first.
    fn load_confirming(
        _state: &ApiState,
        _id: Uuid,
        _viewer: Viewer,
        _session: &SessionCheck,
    ) -> impl Future<Output = Result<Option<(Self, Reach)>, Confirming>> {
        std::future::ready(Err(Confirming::Unconfirmed))
    }
}

/// Why a load that confirms the session gave no answer.
#[derive(Debug)]
pub enum Confirming {
    /// The statement did not confirm the session (or the kind cannot): check it in full.
    Unconfirmed,
    Failed(ApiError),
}

impl Confirming {
    /// For a caller checked in full, where there is nothing left to confirm.
    pub fn into_error(self) -> ApiError {
        match self {
            Self::Unconfirmed => ApiError::Unauthenticated,
            Self::Failed(error) => error,
        }
    }
}

impl From<StoreError> for Confirming {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::SessionNotConfirmed => Self::Unconfirmed,
            other => Self::Failed(other.into()),
        }
    }
}

/// The care-team rule for a row of a patient: `row` only if `viewer` reaches `patient`.
async fn through_patient<T>(
    state: &ApiState,
    row: Option<T>,
    patient: impl Fn(&T) -> Uuid,
    viewer: Viewer,
) -> Result<Option<(T, Reach)>, ApiError> {
    let Some(row) = row else { return Ok(None) };
    let reach = state.rbac.reach(UserId(viewer.user), patient(&row)).await?;
    Ok(reach.allowed().then_some((row, reach)))
}

impl Scoped for Patient {
    async fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> Result<Option<(Self, Reach)>, ApiError> {
        Ok(state.patients.get_reachable(id, viewer, None).await?)
    }

    async fn load_confirming(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
        session: &SessionCheck,
    ) -> Result<Option<(Self, Reach)>, Confirming> {
        Ok(state
            .patients
            .get_reachable(id, viewer, Some(session))
            .await?)
    }
}

impl Scoped for PatientId {
    async fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> Result<Option<(Self, Reach)>, ApiError> {
        through_patient(state, Some(PatientId(id)), |p| p.0, viewer).await
    }
}

impl Scoped for Note {
    async fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> Result<Option<(Self, Reach)>, ApiError> {
        let note = state.notes.get(id).await?;
        through_patient(state, note, |n| n.patient_id, viewer).await
    }
}

impl Scoped for Appointment {
    async fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> Result<Option<(Self, Reach)>, ApiError> {
        let appointment = state.appointments.get(id).await?;
        through_patient(state, appointment, |a| a.patient_id, viewer).await
    }
}

impl Scoped for StoredFile {
    async fn load(
        state: &ApiState,
        id: Uuid,
        viewer: Viewer,
    ) -> Result<Option<(Self, Reach)>, ApiError> {
        let file = state.files.find(id).await?;
        through_patient(state, file, |f| f.patient_id, viewer).await
    }
}

impl<T: Scoped> FromRequest for Reachable<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let id = path_id(req);
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let provisional = req.extensions().get::<Provisional>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::unexpected("no ApiState"))?;
            if let Some(provisional) = provisional {
                let parsed = *id.as_ref().map_err(|_| ApiError::InvalidParameters)?;
                // `None`: checked in full, and loaded below as for any caller.
                if let Some(reachable) = confirming::<T>(&req, &state, parsed, provisional).await? {
                    return Ok(reachable);
                }
            }
            let Authenticated(caller) =
                Authenticated::from_request(&req, &mut Payload::None).await?;
            let id = id?;
            let viewer = Viewer {
                user: caller.user_id.0,
                now: state.rbac.now(),
            };
            let (row, reach) = T::load(&state, id, viewer)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Self { row, reach, caller })
        })
    }
}

/// The row for a caller admitted on a remembered session, read by a statement that confirms
/// the session. If it does not confirm it, the caller is checked in full (`None`: load as for
/// any caller); if that refuses, the error leaves the provisional caller in place and the
/// authorisation layer answers with its own full check.
async fn confirming<T: Scoped>(
    req: &HttpRequest,
    state: &ApiState,
    id: Uuid,
    provisional: Provisional,
) -> Result<Option<Reachable<T>>, ApiError> {
    let caller = &provisional.0.principal;
    let viewer = Viewer {
        user: caller.user_id.0,
        now: state.rbac.now(),
    };
    match T::load_confirming(state, id, viewer, &provisional.0.check).await {
        Ok(found) => {
            caller::confirmed(req, state, &provisional);
            let (row, reach) = found.ok_or(ApiError::NotFound)?;
            Ok(Some(Reachable {
                row,
                reach,
                caller: provisional.0.principal,
            }))
        }
        Err(Confirming::Failed(error)) => Err(error),
        Err(Confirming::Unconfirmed) => {
            caller::check_in_full(req, state, &provisional).await?;
            Ok(None)
        }
    }
}

/// Any patient's record, for the privacy office's right-of-access export (permission
/// `export`, checked by the authorisation layer): the one extractor that is not held to the
/// care-team rule, so that a patient's request for their records never depends on who treats
/// them. Every use is audited as an external disclosure.
#[derive(Debug)]
pub struct ExportablePatient(pub Patient);

impl FromRequest for ExportablePatient {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Authenticated::from_request(req, payload);
        let id = path_id(req);
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        Box::pin(async move {
            caller.await?;
            let id = id?;
            let state = state.ok_or_else(|| ApiError::unexpected("no ApiState"))?;
            let patient = state.patients.get(id).await?.ok_or(ApiError::NotFound)?;
            Ok(Self(patient))
        })
    }
}

/// The route's `{id}`, as `web::Path<Uuid>` would read it (a malformed one is 400).
fn path_id(req: &HttpRequest) -> Result<Uuid, ApiError> {
    req.match_info()
        .get("id")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ApiError::InvalidParameters)
}
