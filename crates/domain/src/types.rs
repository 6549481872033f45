//! Values that cannot be invalid ("parse, don't validate"): every constructor checks, and an
//! error names the field and says what is wrong, never echoing the value (it may be PHI).

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// Why a field was refused: the field's name (dotted for nested fields) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

pub(crate) fn refuse<T>(field: &'static str, reason: &'static str) -> Result<T, FieldError> {
    Err(FieldError { field, reason })
}

macro_rules! text_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        // Debug never shows the value: these hold PHI.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(..)"))
            }
        }
    };
}

/// A US Social Security number, kept as `AAA-GG-SSSS`. Area 000, 666 and 900-999, group 00
/// and serial 0000 are never issued and are refused.
#[derive(Clone, PartialEq, Eq)]
pub struct Ssn(String);
text_newtype!(Ssn);

impl Ssn {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        let Some(digits) = ssn_digits(value) else {
            return refuse(field, "must be 9 digits, as AAA-GG-SSSS");
        };
        // `ssn_digits` returns nine ASCII digits; `get` keeps a surprise from being a panic.
        let (Some(area), Some(group), Some(serial)) =
            (digits.get(0..3), digits.get(3..5), digits.get(5..9))
        else {
            return refuse(field, "must be 9 digits, as AAA-GG-SSSS");
        };
        if area == "000" || area == "666" || area.starts_with('9') {
            return refuse(field, "has an area number that is never issued");
        }
        if group == "00" || serial == "0000" {
            return refuse(field, "has an all-zero group or serial number");
        }
        Ok(Self(format!("{area}-{group}-{serial}")))
    }
}

/// The schema's `SSN_PATTERN`, `^[0-9]{3}-?[0-9]{2}-?[0-9]{4}$`, as code: the nine digits, or
/// `None` for any other shape (no spaces, no trimming: what the schema refuses, this refuses).
fn ssn_digits(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut digits = String::with_capacity(9);
    let mut at = 0;
    for (group, len) in [3usize, 2, 4].into_iter().enumerate() {
        if group > 0 && bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let part = bytes.get(at..at + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.push_str(std::str::from_utf8(part).ok()?);
        at += len;
    }
    (at == bytes.len()).then_some(digits)
}

/// A date exactly as `YYYY-MM-DD` (the schema's `format: date`): chrono alone would also take
/// `2000-1-1`, a sign or a five-digit year.
pub fn iso_date(value: &str) -> Option<NaiveDate> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
}

/// A date of birth: not in the future, not more than 150 years ago.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DateOfBirth(NaiveDate);

impl fmt::Debug for DateOfBirth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DateOfBirth(..)")
    }
}

impl DateOfBirth {
    pub fn parse(field: &'static str, value: &str, today: NaiveDate) -> Result<Self, FieldError> {
        let Some(date) = iso_date(value) else {
            return refuse(field, "must be a date as YYYY-MM-DD");
        };
        Self::new(field, date, today)
    }

    pub fn new(field: &'static str, date: NaiveDate, today: NaiveDate) -> Result<Self, FieldError> {
        if date > today {
            return refuse(field, "is in the future");
        }
        let oldest = today
            .with_year(today.year() - 150)
            .or_else(|| today.pred_opt()?.with_year(today.year() - 150));
        if oldest.is_some_and(|oldest| date < oldest) {
            return refuse(field, "is more than 150 years ago");
        }
        Ok(Self(date))
    }

    /// A date read back from storage: it was checked when written, and a patient keeps their
    /// record when they pass 150 or the clock moves.
    pub fn from_stored(value: &str) -> Option<Self> {
        NaiveDate::parse_from_str(value, "%Y-%m-%d").ok().map(Self)
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }

    pub fn iso(self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }
}

/// A name or name part: 1 to 100 characters of letters (any script), marks, spaces,
/// apostrophes, hyphens and periods, starting with a letter.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);
text_newtype!(PersonName);

impl PersonName {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        // The length is counted before trimming, as the schema's maxLength counts it.
        if value.chars().count() > 100 {
            return refuse(field, "must be 1 to 100 characters");
        }
        let value = value.trim();
        if value.is_empty() {
            return refuse(field, "must be 1 to 100 characters");
        }
        let allowed = |c: char| {
            c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | '.' | '\u{2019}') || unicode_mark(c)
        };
        if !value.chars().next().is_some_and(char::is_alphabetic) || !value.chars().all(allowed) {
            return refuse(
                field,
                "may hold only letters, spaces, apostrophes, hyphens and periods, starting with a letter",
            );
        }
        Ok(Self(value.to_owned()))
    }

    /// The words of the name, for name-token indexes ("Mary-Jane O'Neil" has three).
    pub fn tokens(&self) -> Vec<&str> {
        self.0
            .split(|c: char| c.is_whitespace() || c == '-')
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// Combining marks (as in decomposed "é"), which the general category test above misses.
fn unicode_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF)
}

/// A phone number in E.164: `+`, a country code not starting with 0, 7 to 15 digits in all.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone(String);
text_newtype!(Phone);

impl Phone {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        let digits = value.strip_prefix('+').unwrap_or("");
        let valid = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            refuse(field, "must be in E.164 form, e.g. +15551234567")
        }
    }
}

/// An e-mail address: one `@`, a local part and a domain with a dot, at most 254 characters,
/// no spaces or control characters. (Deliverability is the mail system's to prove.)
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(String);
text_newtype!(EmailAddress);

impl EmailAddress {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        let valid = value.chars().count() <= 254
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\u{FEFF}')
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.chars().count() <= 64
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            refuse(field, "must be an e-mail address such as name@example.org")
        }
    }
}

/// Free text with bounds: at most `max` characters as sent (the schema's maxLength counts them
/// so), not blank, no control characters but newlines and tabs; stored trimmed.
pub fn bounded_text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    let too_long = value.chars().count() > max;
    let value = value.trim();
    if value.is_empty() || too_long {
        return refuse(field, "is empty or too long");
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return refuse(field, "contains control characters");
    }
    Ok(value.to_owned())
}

/// An insurance member number: 1 to 30 letters, digits or hyphens.
pub fn member_number(field: &'static str, value: &str) -> Result<String, FieldError> {
    if (1..=30).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(value.to_owned())
    } else {
        refuse(field, "must be 1 to 30 letters, digits or hyphens")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    pub const ALL: [Sex; 4] = [Self::Female, Self::Male, Self::Other, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Female => "female",
            Self::Male => "male",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        match value {
            "female" => Ok(Self::Female),
            "male" => Ok(Self::Male),
            "other" => Ok(Self::Other),
            "unknown" => Ok(Self::Unknown),
            _ => refuse(field, "must be female, male, other or unknown"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientStatus {
    Active,
    Inactive,
    Deceased,
}

impl PatientStatus {
    pub const ALL: [PatientStatus; 3] = [Self::Active, Self::Inactive, Self::Deceased];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Deceased => "deceased",
        }
    }

    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        match value {
            "active" => Ok(Self::Active),
            "inactive" => Ok(Self::Inactive),
            "deceased" => Ok(Self::Deceased),
            _ => refuse(field, "must be active, inactive or deceased"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn ssns() {
        assert_eq!(
            Ssn::parse("ssn", "123-45-6789").unwrap().as_str(),
            "123-45-6789"
        );
        assert_eq!(
            Ssn::parse("ssn", "123456789").unwrap().as_str(),
            "123-45-6789"
        );
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "12-345-678",
            "123-45-678a",
            "",
            "1234567890",
        ] {
            assert!(Ssn::parse("ssn", bad).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", Ssn::parse("ssn", "123-45-6789").unwrap()),
            "Ssn(..)"
        );
    }

    #[test]
    fn dates_of_birth() {
        assert!(DateOfBirth::parse("dob", "1980-02-29", today()).is_ok());
        assert!(DateOfBirth::parse("dob", "2026-11-26", today()).is_ok());
        assert!(DateOfBirth::parse("dob", "2026-11-27", today()).is_err());
        assert!(DateOfBirth::parse("dob", "1876-11-26", today()).is_ok());
        assert!(DateOfBirth::parse("dob", "1876-11-25", today()).is_err());
        assert!(DateOfBirth::parse("dob", "1981-02-29", today()).is_err());
        assert!(DateOfBirth::parse("dob", "26/11/1980", today()).is_err());
    }

    #[test]
    fn names() {
        for ok in [
            "Zoë",
            "O'Neil",
            "Mary-Jane",
            "Nguyễn",
            "José María",
            "St. John",
            "山田",
        ] {
            assert!(PersonName::parse("n", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "-Ann",
            "R2D2",
            "Bob;DROP",
            "a\u{0}b",
            &"x".repeat(101),
        ] {
            assert!(PersonName::parse("n", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            PersonName::parse("n", "Mary-Jane  O'Neil")
                .unwrap()
                .tokens(),
            vec!["Mary", "Jane", "O'Neil"]
        );
    }

    #[test]
    fn phones_and_emails() {
        assert!(Phone::parse("p", "+15551234567").is_ok());
        for bad in [
            "5551234567",
            "+0551234567",
            "+1 555 123",
            "+1234567890123456",
            "+12ab567",
        ] {
            assert!(Phone::parse("p", bad).is_err(), "{bad}");
        }
        assert!(EmailAddress::parse("e", "a.b@clinic.example").is_ok());
        for bad in [
            "a@b",
            "@b.example",
            "a@@b.example",
            "a b@c.example",
            "a@.example",
        ] {
            assert!(EmailAddress::parse("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn member_numbers() {
        assert!(member_number("m", "XKQ-123456789").is_ok());
        assert!(member_number("m", "").is_err());
        assert!(member_number("m", "ABC 123").is_err());
    }
}
