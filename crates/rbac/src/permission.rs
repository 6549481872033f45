//! The closed set of permissions. Names are stable strings: they are stored in `roles`, shown
//! in the API and the OpenAPI document, and checked by a database constraint, so a name never
//! changes meaning; a new permission is a new variant, a migration and a docs row.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! permissions {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// One thing a caller may be allowed to do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $(#[doc = $doc] $variant,)*
        }

        impl Permission {
            /// Every permission, in declaration order (which is also the bit order).
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            pub fn describe(self) -> &'static str {
                match self {
                    $(Permission::$variant => $doc,)*
                }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    PatientRead => "patient:read", "Read the demographics of patients in one's care (identifiers masked).";
    PatientWrite => "patient:write", "Register patients and change their demographics.";
    PatientReadIdentifiers => "patient:read_identifiers", "See SSNs and insurance numbers unmasked, and search by SSN.";
    CareTeamManage => "care_team:manage", "Assign users to patients' care teams and remove them.";
    AppointmentRead => "appointment:read", "Read appointments of patients in one's care.";
    AppointmentWrite => "appointment:write", "Book, move and cancel appointments.";
    NoteRead => "note:read", "Read clinical notes of patients in one's care.";
    NoteWrite => "note:write", "Write, sign and amend clinical notes.";
    FileUpload => "file:upload", "Upload documents to patients' records.";
    FileRead => "file:read", "List and download patients' documents.";
    AuditRead => "audit:read", "Read, verify and export the audit trail (values stay sealed).";
    AuditReadValues => "audit:read_values", "Open the sealed before/after values of audit events.";
    UserManage => "user:manage", "Create, change, disable and unlock users; assign roles.";
    RoleManage => "role:manage", "Create, change and delete custom roles.";
    SecurityRead => "security:read", "Review security events and break-the-glass accesses.";
    KeysManage => "keys:manage", "Rotate and inspect encryption keys.";
    BreakGlass => "break_glass", "Gain time-limited emergency access to a patient outside one's care team.";
    Export => "export", "Export a patient's whole record (right of access).";
    LegalHold => "lifecycle:hold", "Place and release legal holds on patients' records.";
    Erasure => "lifecycle:erase", "Ask for and approve the erasure of a patient's records (never one's own request).";
    RestrictedPsychotherapy => "restricted:psychotherapy", "Read notes labelled psychiatric or psychotherapy (PSY, PSYTHPN) of patients in one's care.";
    RestrictedSubstanceUse => "restricted:substance_use", "Read notes labelled substance-use treatment (ETH, 42 CFR Part 2) of patients in one's care.";
    RestrictedHiv => "restricted:hiv", "Read notes labelled HIV or sexually transmitted disease (HIV, STD) of patients in one's care.";
    RestrictedReproductive => "restricted:reproductive", "Read notes labelled sexuality and reproductive health (SEX) of patients in one's care.";
    RestrictedOther => "restricted:other", "Read notes labelled genetic disease or sexual and domestic violence (GDIS, SDV) of patients in one's care.";
}

impl Permission {
    /// Handing this out takes two administrators (docs/rbac.md, "Dual control"): it opens
    /// clinical data, exports, emergency access or sealed audit values, puts others on care
    /// teams, or administers users, roles or keys. Only reading the (sealed) trail and the
    /// security reviews may be granted by one person.
    pub fn needs_dual_control(self) -> bool {
        !matches!(self, Permission::AuditRead | Permission::SecurityRead)
    }

    /// Permissions that administer the system itself: an account holding one is an
    /// administrator, and actions against it (disable, resets) take two people.
    pub fn administers(self) -> bool {
        matches!(
            self,
            Permission::UserManage | Permission::RoleManage | Permission::KeysManage
        )
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Permission::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown permission `{name}`")))
    }
}

/// A set of permissions as a bit set: checking one is a mask, not a lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u32);

const _: () = assert!(Permission::ALL.len() <= 32, "Permissions is a u32 bit set");

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn all() -> Self {
        Permission::ALL.iter().copied().collect()
    }

    fn bit(permission: Permission) -> u32 {
        1 << (permission as u32)
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & Self::bit(permission) != 0
    }

    pub fn insert(&mut self, permission: Permission) {
        self.0 |= Self::bit(permission);
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every permission of `other` is in `self`.
    pub fn covers(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }

    /// The permissions of `self` missing from `held`.
    #[must_use]
    pub fn missing_from(self, held: Self) -> Self {
        Self(self.0 & !held.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The part of this set that only two administrators may hand out.
    #[must_use]
    pub fn dual_control(self) -> Self {
        self.iter().filter(|p| p.needs_dual_control()).collect()
    }

    /// Whether the set administers the system (see [`Permission::administers`]).
    pub fn administers(self) -> bool {
        self.iter().any(Permission::administers)
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// The stable names, in declaration order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }

    /// Parses stored or submitted names; `Err` carries the first unknown one.
    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        names
            .iter()
            .map(|n| Permission::parse(n.as_ref()).ok_or_else(|| n.as_ref().to_owned()))
            .collect()
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = Permissions::NONE;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl<'a> FromIterator<&'a Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = &'a Permission>>(iter: I) -> Self {
        iter.into_iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
            assert!(seen.insert(p.as_str()), "duplicate name {p}");
        }
        assert_eq!(Permission::parse("patient:*"), None);
        assert_eq!(Permission::parse("Patient:Read"), None);
    }

    #[test]
    fn sets_cover_and_report_what_is_missing() {
        let held: Permissions = [Permission::PatientRead, Permission::NoteRead]
            .iter()
            .collect();
        let asked: Permissions = [Permission::PatientRead, Permission::Export]
            .iter()
            .collect();
        assert!(!held.covers(asked));
        assert_eq!(asked.missing_from(held).names(), vec!["export"]);
        assert!(held.union(asked).covers(asked));
        assert!(Permissions::all().covers(held));
        assert_eq!(
            Permissions::parse_names(&["note:read", "nope"]),
            Err("nope".to_owned())
        );
    }
}
