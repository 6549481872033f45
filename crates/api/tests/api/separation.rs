//! Separation of duties: an administrator's session alone never yields a session that can read
//! a patient. In production mode, walking every sequence of up to two administrative calls
//! (and the one that matters most, three) against a provider on a patient's care team: create an
//! account, assign a role, widen a role, reset the password or the second factor, change the
//! e-mail address, each sequence ending with the administrator approving their own proposals;
//! then log in as every account involved with every credential the administrator could have
//! seen (answers, and mail to addresses they control).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use clinicd_audit::{AuditWriter, WriterSettings};
use clinicd_identity::otp::{OtpError, OtpMessage, OtpSender};
use clinicd_identity::users::{self, UserId};
use clinicd_test_support::{TestApp, member, roomy_settings, send};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
/// Addresses at this domain are the administrator's own.
const ATTACKER: &str = "@attacker.example";

/// The out-of-band channel: every message, and who it went to.
#[derive(Debug, Default, Clone)]
struct Mailbox(Arc<Mutex<Vec<(String, String)>>>);

#[async_trait]
impl OtpSender for Mailbox {
    fn channel(&self) -> &'static str {
        "email"
    }

    async fn send(&self, message: &OtpMessage<'_>) -> Result<(), OtpError> {
        self.0.lock().unwrap().push((
            message.to.to_owned(),
            message.code.expose_secret().to_owned(),
        ));
        Ok(())
    }
}

impl Mailbox {
    /// What reached the administrator: mail to their own addresses.
    fn read_by_attacker(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(to, _)| to.ends_with(ATTACKER))
            .map(|(_, code)| code.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Create,
    AssignRole,
    WidenRole,
    ResetPassword,
    ResetMfa,
    ChangeEmail,
    ApproveOwn,
}

const CALLS: [Call; 6] = [
    Call::Create,
    Call::AssignRole,
    Call::WidenRole,
    Call::ResetPassword,
    Call::ResetMfa,
    Call::ChangeEmail,
];

struct Clinic {
    app: TestApp,
    admin: String,
    patient: Uuid,
    mailbox: Mailbox,
}

/// Every string in an answer that could be a credential.
fn secrets(body: &Value, found: &mut Vec<String>) {
    match body {
        Value::Object(fields) => {
            for (name, value) in fields {
                let credential = matches!(
                    name.as_str(),
                    "one_time_password"
                        | "password"
                        | "access_token"
                        | "refresh_token"
                        | "device_token"
                );
                if let (true, Some(text)) = (credential, value.as_str()) {
                    found.push(text.to_owned());
                }
                secrets(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secrets(v, found)),
        _ => {}
    }
}

impl Clinic {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        seen: &mut Vec<String>,
    ) -> (u16, Value) {
        let response = self.app.call(send(method, path, &self.admin, body)).await;
        let body = response.json_or_null();
        secrets(&body, seen);
        (response.status.as_u16(), body)
    }

    /// A provider on the patient's care team, with a second factor.
    async fn provider(&self, name: &str) -> UserId {
        let pool = &self.app.state.db;
        let user = clinicd_test_support::create_user(pool, name, PASSWORD, false).await;
        users::assign_role(pool, user, "Provider", None)
            .await
            .unwrap();
        clinicd_test_support::enrol_totp(&self.app, user).await;
        sqlx::query("INSERT INTO patient_assignments (patient_id, user_id) VALUES ($1, $2)")
            .bind(self.patient)
            .bind(user.0)
            .execute(pool)
            .await
            .unwrap();
        user
    }

    /// One administrative call against `target`; its index keeps names unique.
    async fn run(
        &self,
        call: Call,
        target: UserId,
        n: usize,
        seen: &mut Vec<String>,
        created: &mut Vec<String>,
    ) {
        let user = target.0;
        let (status, body) = match call {
            Call::Create => {
                let username = format!("made.{n}");
                created.push(username.clone());
                self.call(
                    "POST",
                    "/api/admin/users",
                    Some(
                        json!({"username": username, "email": format!("{username}{ATTACKER}"),
                        "display_name": "Made Up", "roles": ["Provider"]}),
                    ),
                    seen,
                )
                .await
            }
            Call::AssignRole => {
                self.call(
                    "PUT",
                    &format!("/api/admin/users/{user}/roles"),
                    Some(json!({"roles": ["Provider", "PrivacyOfficer"]})),
                    seen,
                )
                .await
            }
            Call::WidenRole => {
                let role = format!("Helper{n}");
                let made = self
                    .call(
                        "POST",
                        "/api/admin/roles",
                        Some(json!({"name": role, "permissions": ["audit:read"]})),
                        seen,
                    )
                    .await;
                assert_eq!(made.0, 201, "{:?}", made.1);
                self.call(
                    "PUT",
                    &format!("/api/admin/roles/{role}"),
                    Some(json!({"permissions": ["audit:read", "patient:read", "note:read"]})),
                    seen,
                )
                .await
            }
            Call::ResetPassword => {
                self.call(
                    "POST",
                    &format!("/api/admin/users/{user}/reset-password"),
                    None,
                    seen,
                )
                .await
            }
            Call::ResetMfa => {
                self.call(
                    "POST",
                    &format!("/api/admin/users/{user}/reset-mfa"),
                    None,
                    seen,
                )
                .await
            }
            Call::ChangeEmail => {
                self.call(
                    "PATCH",
                    &format!("/api/admin/users/{user}"),
                    Some(json!({"email": format!("changed.{n}{ATTACKER}")})),
                    seen,
                )
                .await
            }
            Call::ApproveOwn => {
                // This sequence's proposals: those made since its target was.
                let pending: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM access_proposals WHERE decision IS NULL \
                     AND proposed_at >= (SELECT created_at FROM users WHERE id = $1) ORDER BY proposed_at",
                )
                .bind(user)
                .fetch_all(&self.app.state.db)
                .await
                .unwrap();
                for id in pending {
                    let (status, body) = self
                        .call(
                            "POST",
                            &format!("/api/admin/proposals/{id}/approve"),
                            None,
                            seen,
                        )
                        .await;
                    assert_eq!(status, 403, "an own proposal: {body}");
                    assert_eq!(body["code"], "own_proposal");
                }
                (200, Value::Null)
            }
        };
        assert!(
            status < 500 && status != 401,
            "{call:?} answered {status}: {body}"
        );
        // Anything that hands out clinical access waits for a second administrator.
        if matches!(call, Call::AssignRole | Call::WidenRole | Call::ChangeEmail) {
            assert_eq!(status, 202, "{call:?}: {body}");
        }
    }

    /// Tries every credential the administrator holds on every account they know of; any
    /// session that results must not read the patient.
    async fn no_session_reads_the_patient(&self, usernames: &[String], seen: &[String]) {
        let mut passwords: Vec<String> = seen.to_vec();
        passwords.extend(self.mailbox.read_by_attacker());
        for username in usernames {
            for password in &passwords {
                let login = self
                    .app
                    .call(clinicd_test_support::post(
                        "/api/auth/login",
                        &json!({"username": username, "password": password}),
                    ))
                    .await;
                if login.status != 200 {
                    continue;
                }
                let token = login.json()["access_token"].as_str().unwrap().to_owned();
                let read = self
                    .app
                    .call(send(
                        "GET",
                        &format!("/api/patients/{}", self.patient),
                        &token,
                        None,
                    ))
                    .await;
                assert!(
                    read.status == 403 || read.status == 404,
                    "{username} with a credential the administrator saw reads the patient: {}",
                    read.status
                );
            }
        }
        let own = self
            .app
            .call(send(
                "GET",
                &format!("/api/patients/{}", self.patient),
                &self.admin,
                None,
            ))
            .await;
        assert_eq!(own.status, 403, "the administrator's own session");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_administrators_session_alone_never_reads_a_patient(pool: PgPool) {
    let mailbox = Mailbox::default();
    let sender = mailbox.clone();
    let identity = clinicd_test_support::identity_with(pool.clone(), |identity| {
        identity.with_otp_sender(Arc::new(sender))
    });
    let mut settings = roomy_settings();
    settings.production = true;
    settings.rate_limits.login = settings.rate_limits.api;
    let audit = AuditWriter::start(
        pool.clone(),
        clinicd_test_support::keyring(pool.clone()),
        WriterSettings::default(),
    );
    let app = TestApp {
        state: clinicd_test_support::compose(
            pool.clone(),
            settings,
            identity,
            audit,
            clinicd_test_support::file_store(),
        ),
    };
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let patient =
        clinicd_test_support::unassigned_patient(&app, ("Byron", "Ada"), "1980-12-10", None).await;
    let clinic = Clinic {
        app,
        admin,
        patient,
        mailbox,
    };

    let mut sequences: Vec<Vec<Call>> = CALLS.iter().map(|c| vec![*c]).collect();
    for first in CALLS {
        for second in CALLS {
            sequences.push(vec![first, second]);
        }
    }
    sequences.push(vec![Call::ChangeEmail, Call::ResetPassword, Call::ResetMfa]);
    for (n, sequence) in sequences.iter().enumerate() {
        let name = format!("dr.target{n}");
        let target = clinic.provider(&name).await;
        let (mut seen, mut created) = (Vec::new(), Vec::new());
        // Each sequence ends with the administrator approving whatever they proposed.
        let calls = sequence
            .iter()
            .copied()
            .chain(std::iter::once(Call::ApproveOwn));
        for (i, call) in calls.enumerate() {
            clinic
                .run(call, target, n * 10 + i, &mut seen, &mut created)
                .await;
        }
        assert!(
            seen.is_empty(),
            "{sequence:?}: a credential in an answer: {seen:?}"
        );
        let mut usernames = created;
        usernames.push(name);
        clinic.no_session_reads_the_patient(&usernames, &seen).await;
    }
    // The provider's one-time passwords went to the provider's own address only.
    let mail = clinic.mailbox.0.lock().unwrap().clone();
    assert!(mail.iter().any(|(to, _)| to.starts_with("dr.target")));
    assert!(
        mail.iter()
            .all(|(to, _)| to.starts_with("dr.target") || to.starts_with("made.")),
        "{mail:?}"
    );
}
