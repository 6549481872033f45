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
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use clinicd_domain::{Appointment, Note, Patient, Viewer};
use clinicd_files::StoredFile;
use clinicd_identity::sessions::Principal;
use clinicd_identity::users::UserId;
use clinicd_rbac::Reach;

use crate::extract::Authenticated;
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
        Ok(state.patients.get_reachable(id, viewer).await?)
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

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Authenticated::from_request(req, payload);
        let id = path_id(req);
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        Box::pin(async move {
            let Authenticated(caller) = caller.await?;
            let id = id?;
            let state = state.ok_or_else(|| ApiError::unexpected("no ApiState"))?;
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
