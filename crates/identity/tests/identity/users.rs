//! User records.

use clinicd_identity::users::{self, DisplayName, Email, NewUser, UserError, UserStatus, Username};
use sqlx::PgPool;

fn new_user(username: &str, email: &str) -> NewUser {
    NewUser {
        username: Username::parse(username).unwrap(),
        email: Email::parse(email).unwrap(),
        display_name: DisplayName::parse("Front Desk").unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        must_change_password: false,
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn usernames_and_emails_are_unique_whatever_their_case(db: PgPool) {
    let id = users::create(&db, new_user("Front.Desk", "desk@clinic.example"))
        .await
        .unwrap();
    let found = users::find_by_username(&db, "FRONT.DESK")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id, found.username.as_str(), found.status),
        (id, "Front.Desk", UserStatus::Active)
    );
    assert!(!found.mfa_enabled && !found.must_change_password);
    assert!(
        !format!("{found:?}").contains("argon2"),
        "Debug output leaves the hash out"
    );

    assert_eq!(
        users::create(&db, new_user("front.desk", "other@clinic.example")).await,
        Err(UserError::UsernameTaken)
    );
    assert_eq!(
        users::create(&db, new_user("someone", "DESK@clinic.example")).await,
        Err(UserError::EmailTaken)
    );
    assert!(
        users::find_by_username(&db, "nobody")
            .await
            .unwrap()
            .is_none()
    );
}
