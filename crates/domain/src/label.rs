//! Sensitivity labels (docs/lifecycle.md): HL7's confidentiality codes (N, R, V) and its
//! information sensitivity codes, so that a label maps onto FHIR `meta.security` as it is.
//! A restricted item is read only by someone on the patient's care team who holds the
//! permission of every one of its codes; break-the-glass never opens a very restricted item,
//! nor a psychiatric one unless the clinic configures it to.

use clinicd_rbac::{Grants, Permission, Reach};
use serde::{Deserialize, Serialize};

use crate::types::FieldError;

/// HL7 v3 Confidentiality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub enum Confidentiality {
    /// Normal.
    #[default]
    N,
    /// Restricted.
    R,
    /// Very restricted.
    V,
}

impl Confidentiality {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "N" => Some(Self::N),
            "R" => Some(Self::R),
            "V" => Some(Self::V),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::N => "N",
            Self::R => "R",
            Self::V => "V",
        }
    }
}

/// HL7 v3 ActInformationSensitivityPolicy codes clinicd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Sensitivity {
    /// Psychiatric disorder information.
    PSY,
    /// Psychotherapy note (excluded from the right of access, 45 CFR 164.524(a)(1)(i)).
    PSYTHPN,
    /// Substance abuse information (42 CFR Part 2).
    ETH,
    HIV,
    /// Sexually transmitted disease.
    STD,
    /// Sexuality and reproductive health.
    SEX,
    /// Genetic disease.
    GDIS,
    /// Sexual assault, abuse or domestic violence.
    SDV,
}

impl Sensitivity {
    pub const ALL: [Sensitivity; 8] = [
        Self::PSY,
        Self::PSYTHPN,
        Self::ETH,
        Self::HIV,
        Self::STD,
        Self::SEX,
        Self::GDIS,
        Self::SDV,
    ];

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PSY => "PSY",
            Self::PSYTHPN => "PSYTHPN",
            Self::ETH => "ETH",
            Self::HIV => "HIV",
            Self::STD => "STD",
            Self::SEX => "SEX",
            Self::GDIS => "GDIS",
            Self::SDV => "SDV",
        }
    }

    /// The permission that reads an item with this code.
    pub fn permission(self) -> Permission {
        match self {
            Self::PSY | Self::PSYTHPN => Permission::RestrictedPsychotherapy,
            Self::ETH => Permission::RestrictedSubstanceUse,
            Self::HIV | Self::STD => Permission::RestrictedHiv,
            Self::SEX => Permission::RestrictedReproductive,
            Self::GDIS | Self::SDV => Permission::RestrictedOther,
        }
    }

    fn psychiatric(self) -> bool {
        matches!(self, Self::PSY | Self::PSYTHPN)
    }
}

/// A confidentiality code and the sensitivity codes (sorted, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Label {
    pub confidentiality: Confidentiality,
    pub sensitivity: Vec<Sensitivity>,
}

impl Label {
    /// From a request: a confidentiality code (default N) and sensitivity codes; a coded item
    /// is at least restricted, so N with codes is refused rather than guessed.
    pub fn parse(
        confidentiality: Option<&str>,
        sensitivity: &[String],
    ) -> Result<Self, FieldError> {
        let confidentiality = match confidentiality {
            None => Confidentiality::N,
            Some(code) => Confidentiality::parse(code).ok_or(FieldError {
                field: "confidentiality",
                reason: "must be N, R or V",
            })?,
        };
        let mut codes = Vec::with_capacity(sensitivity.len());
        for code in sensitivity {
            codes.push(Sensitivity::parse(code).ok_or(FieldError {
                field: "sensitivity",
                reason: "holds a code other than PSY, PSYTHPN, ETH, HIV, STD, SEX, GDIS or SDV",
            })?);
        }
        codes.sort_unstable();
        codes.dedup();
        if !codes.is_empty() && confidentiality == Confidentiality::N {
            return Err(FieldError {
                field: "confidentiality",
                reason: "must be R or V for an item with sensitivity codes",
            });
        }
        Ok(Self {
            confidentiality,
            sensitivity: codes,
        })
    }

    /// From the database's columns (checked there: unknown codes cannot be stored).
    pub fn from_stored(confidentiality: &str, sensitivity: &[String]) -> Self {
        Self {
            confidentiality: Confidentiality::parse(confidentiality).unwrap_or(Confidentiality::V),
            sensitivity: sensitivity
                .iter()
                .filter_map(|c| Sensitivity::parse(c))
                .collect(),
        }
    }

    /// At least `floor`: the higher confidentiality and every code of both (a patient's label
    /// is the floor of their notes' and files').
    pub fn at_least(&self, floor: &Label) -> Label {
        let mut sensitivity = self.sensitivity.clone();
        sensitivity.extend(floor.sensitivity.iter().copied());
        sensitivity.sort_unstable();
        sensitivity.dedup();
        Label {
            confidentiality: self.confidentiality.max(floor.confidentiality),
            sensitivity,
        }
    }

    pub fn codes(&self) -> Vec<String> {
        self.sensitivity
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect()
    }

    pub fn restricted(&self) -> bool {
        self.confidentiality != Confidentiality::N
    }

    /// `R` or `R/PSYTHPN,HIV`: how a refusal names the label.
    pub fn describe(&self) -> String {
        if self.sensitivity.is_empty() {
            self.confidentiality.as_str().to_owned()
        } else {
            format!(
                "{}/{}",
                self.confidentiality.as_str(),
                self.codes().join(",")
            )
        }
    }

    /// Whether a caller with `grants`, reaching the patient by `reach`, may read the content.
    pub fn readable(
        &self,
        grants: &Grants,
        reach: Reach,
        break_glass_opens_psychiatric: bool,
    ) -> bool {
        if !self.restricted() {
            return true;
        }
        if !self.sensitivity.iter().all(|c| grants.has(c.permission())) {
            return false;
        }
        match reach {
            Reach::CareTeam => true,
            Reach::BreakGlass => {
                self.confidentiality == Confidentiality::R
                    && (break_glass_opens_psychiatric
                        || !self.sensitivity.iter().any(|c| c.psychiatric()))
            }
            Reach::None => false,
        }
    }

    /// Whether an export leaves the item out: psychotherapy notes always (they are outside the
    /// right of access), and substance-use records (Part 2) unless `part2_allowed` (the
    /// patient's own access, or a recipient and purpose the patient's consent names).
    pub fn withheld_from_export(&self, part2_allowed: bool) -> bool {
        self.sensitivity.iter().any(|c| match c {
            Sensitivity::PSYTHPN => true,
            Sensitivity::ETH => !part2_allowed,
            _ => false,
        })
    }

    /// Whether the item is a substance-use treatment record under 42 CFR Part 2.
    pub fn part2(&self) -> bool {
        self.sensitivity.contains(&Sensitivity::ETH)
    }
}

#[cfg(test)]
mod floor_tests {
    use super::*;

    #[test]
    fn a_floor_raises_the_level_and_adds_its_codes() {
        let note = Label::parse(Some("R"), &["HIV".to_owned()]).unwrap();
        let floor = Label::parse(Some("V"), &["ETH".to_owned(), "HIV".to_owned()]).unwrap();
        let raised = note.at_least(&floor);
        assert_eq!(raised.confidentiality, Confidentiality::V);
        assert_eq!(raised.sensitivity, vec![Sensitivity::ETH, Sensitivity::HIV]);
        // A lower floor changes nothing.
        assert_eq!(floor.at_least(&Label::default()), floor);
        assert_eq!(
            Label::default()
                .at_least(&Label::parse(Some("R"), &[]).unwrap())
                .describe(),
            "R"
        );
    }
}

#[cfg(test)]
mod tests {
    use clinicd_identity::users::UserId;
    use clinicd_rbac::{Grants, Permission, Reach};
    use uuid::Uuid;

    use super::*;

    fn holding(permissions: &[Permission]) -> Grants {
        let mut grants = Grants::none(UserId(Uuid::nil()));
        for permission in permissions {
            grants.permissions.insert(*permission);
        }
        grants
    }

    fn label(confidentiality: &str, codes: &[&str]) -> Label {
        let codes: Vec<String> = codes.iter().map(|c| (*c).to_owned()).collect();
        Label::parse(Some(confidentiality), &codes).unwrap()
    }

    #[test]
    fn every_code_needs_its_permission_and_the_care_team() {
        let both = label("R", &["HIV", "ETH"]);
        let hiv_only = holding(&[Permission::RestrictedHiv]);
        let hiv_and_sud = holding(&[
            Permission::RestrictedHiv,
            Permission::RestrictedSubstanceUse,
        ]);
        assert!(!both.readable(&hiv_only, Reach::CareTeam, false));
        assert!(both.readable(&hiv_and_sud, Reach::CareTeam, false));
        assert!(!both.readable(&hiv_and_sud, Reach::None, false));
        assert!(label("N", &[]).readable(&holding(&[]), Reach::BreakGlass, false));
    }

    #[test]
    fn break_the_glass_opens_restricted_but_never_very_restricted_nor_psychiatric_by_default() {
        let psych = holding(&[
            Permission::RestrictedPsychotherapy,
            Permission::RestrictedHiv,
        ]);
        assert!(label("R", &["HIV"]).readable(&psych, Reach::BreakGlass, false));
        assert!(!label("V", &["HIV"]).readable(&psych, Reach::BreakGlass, true));
        assert!(!label("V", &[]).readable(&psych, Reach::BreakGlass, true));
        assert!(label("V", &[]).readable(&psych, Reach::CareTeam, false));
        let therapy = label("R", &["PSYTHPN"]);
        assert!(!therapy.readable(&psych, Reach::BreakGlass, false));
        assert!(therapy.readable(&psych, Reach::BreakGlass, true));
    }

    #[test]
    fn a_coded_normal_label_and_unknown_codes_are_refused() {
        assert!(Label::parse(None, &["HIV".to_owned()]).is_err());
        assert!(Label::parse(Some("R"), &["FLU".to_owned()]).is_err());
        assert!(Label::parse(Some("Q"), &[]).is_err());
        let folded = Label::parse(
            Some("R"),
            &["STD".to_owned(), "HIV".to_owned(), "STD".to_owned()],
        )
        .unwrap();
        assert_eq!(folded.describe(), "R/HIV,STD");
    }
}
