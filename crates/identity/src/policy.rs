//! Password policy, after NIST SP 800-63B §3.1.1.2: length is what counts (12 to 128
//! characters, any characters, no composition rules), and passwords known from breach corpora
//! or containing the username are refused.

use std::collections::HashSet;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

/// Shipped with the binary; see `data/README.md` for its source and licence.
const COMMON: &str = include_str!("../data/common-passwords.txt");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("the password must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("the password must be at most {MAX_CHARS} characters")]
    TooLong,
    #[error("the password is too common: it appears in lists of breached passwords")]
    Common,
    #[error("the password must not contain the username")]
    ContainsUsername,
}

impl PolicyViolation {
    /// A stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort => "password_too_short",
            Self::TooLong => "password_too_long",
            Self::Common => "password_too_common",
            Self::ContainsUsername => "password_contains_username",
        }
    }
}

fn common() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_lowercase)
            .collect()
    })
}

/// The form a password is compared and hashed in: Unicode NFKC, so the same password typed on
/// different keyboards is the same password (SP 800-63B recommends normalising).
pub fn normalize(password: &str) -> String {
    password.nfkc().collect()
}

/// Checks a new password (already normalised) for `username`.
pub fn check(password: &str, username: &str) -> Result<(), PolicyViolation> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PolicyViolation::TooShort);
    }
    if chars > MAX_CHARS {
        return Err(PolicyViolation::TooLong);
    }
    let lowered = password.to_lowercase();
    let username = username.trim().to_lowercase();
    if username.chars().count() >= 3 && lowered.contains(&username) {
        return Err(PolicyViolation::ContainsUsername);
    }
    if common().contains(&lowered) {
        return Err(PolicyViolation::Common);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_a_large_breach_list() {
        assert!(common().len() >= 50_000, "{}", common().len());
        for known in ["password", "123456", "qwerty123456", "1qaz2wsx3edc"] {
            assert!(common().contains(known), "{known}");
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert_eq!(
            check("short pass1", "alice"),
            Err(PolicyViolation::TooShort)
        );
        assert_eq!(
            check("ééééééééééé", "alice"),
            Err(PolicyViolation::TooShort),
            "11 characters, 22 bytes"
        );
        assert_eq!(check("éééééééééééé", "alice"), Ok(()));
        assert_eq!(check(&"x7".repeat(64), "alice"), Ok(()));
        assert_eq!(
            check(&"x7".repeat(65), "alice"),
            Err(PolicyViolation::TooLong)
        );
    }

    #[test]
    fn refuses_breached_passwords_whatever_their_case() {
        assert_eq!(check("1qaz2wsx3edc", "alice"), Err(PolicyViolation::Common));
        assert_eq!(check("QWERTY123456", "alice"), Err(PolicyViolation::Common));
        assert_eq!(check("correct horse battery staple", "alice"), Ok(()));
    }

    #[test]
    fn refuses_passwords_containing_the_username() {
        assert_eq!(
            check("my name is Alice.Smith!", "alice.smith"),
            Err(PolicyViolation::ContainsUsername)
        );
        assert_eq!(check("no composition rules here", "bob"), Ok(()));
    }

    #[test]
    fn normalises_compatibility_forms() {
        assert_eq!(normalize("ｐａｓｓｗｏｒｄ"), "password");
        assert_eq!(normalize("e\u{301}"), "é");
    }
}
