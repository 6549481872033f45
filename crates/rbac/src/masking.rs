//! Masking of direct identifiers for callers without `patient:read_identifiers`. The masked
//! forms are what the OpenAPI schema documents: `***-**-1234` for an SSN, `****` plus the last
//! four characters for an insurance member number.

use crate::grants::Grants;
use crate::permission::Permission;

/// Whether identifiers are shown as stored or masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifiers {
    Clear,
    Masked,
}

impl Identifiers {
    pub fn for_caller(grants: &Grants) -> Self {
        if grants.has(Permission::PatientReadIdentifiers) {
            Self::Clear
        } else {
            Self::Masked
        }
    }

    pub fn ssn(self, ssn: &str) -> String {
        match self {
            Self::Clear => ssn.to_owned(),
            Self::Masked => mask_ssn(ssn),
        }
    }

    pub fn member_number(self, number: &str) -> String {
        match self {
            Self::Clear => number.to_owned(),
            Self::Masked => mask_member_number(number),
        }
    }
}

/// `***-**-` and the last four digits. Anything without four digits is masked whole.
pub fn mask_ssn(ssn: &str) -> String {
    let digits: Vec<char> = ssn.chars().filter(char::is_ascii_digit).collect();
    match digits.last_chunk::<4>() {
        Some(last) if digits.len() == 9 => format!("***-**-{}", String::from_iter(last)),
        _ => "***-**-****".to_owned(),
    }
}

/// `****` and the last four characters; shorter numbers are masked whole. The prefix has a
/// fixed length, so the mask does not reveal how long the number is.
pub fn mask_member_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    match chars.last_chunk::<4>() {
        Some(last) if chars.len() > 4 => format!("****{}", String::from_iter(last)),
        _ => "****".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssns_keep_only_their_last_four_digits() {
        assert_eq!(mask_ssn("123-45-6789"), "***-**-6789");
        assert_eq!(mask_ssn("123456789"), "***-**-6789");
        assert_eq!(mask_ssn("12-34"), "***-**-****");
    }

    #[test]
    fn member_numbers_keep_only_their_last_four_characters() {
        assert_eq!(mask_member_number("XKQ123456789"), "****6789");
        assert_eq!(mask_member_number("AB12C"), "****B12C");
        assert_eq!(mask_member_number("1234"), "****");
        assert_eq!(mask_member_number("ÄÖÜ12345"), "****2345");
    }
}
