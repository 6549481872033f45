//! What a handler may take from a request, each checked once here so every endpoint answers a
//! failure the same way: the body, query and path ([`body`]), the caller ([`caller`]), and the
//! rows the caller may reach ([`reachable`]).

pub mod body;
pub mod caller;
pub mod reachable;

pub use body::{Json, json_config, path_config, query_config};
pub(crate) use caller::principal;
pub use caller::{Authenticated, Caller, Granted, client_info};
pub use reachable::{
    ExportablePatient, PatientId, Reachable, ReachableAppointment, ReachableFile, ReachableNote,
    ReachablePatient, ReachablePatientId,
};
