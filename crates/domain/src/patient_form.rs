//! The patient record as a client or an import file states it, and the rules that turn it
//! into a valid [`PatientData`]: field parsing, patches (fields left out stay, `null` clears an
//! optional one, a required one cannot be cleared) and the choice of search. The API's request
//! bodies are these types (their OpenAPI schemas derive here, behind the `openapi` feature), and
//! the CSV import builds the same [`PatientBody`], so both validate alike.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::patient::mrn_is_well_formed;
use crate::patient::{Address, EmergencyContact, Insurance, PatientData};
use crate::patient_store::Search;
use crate::types::{
    DateOfBirth, EmailAddress, FieldError, PatientStatus, PersonName, Phone, Sex, Ssn,
    bounded_text, member_number,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `US`.
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InsuranceBody {
    pub payer: String,
    /// 1 to 30 letters, digits or hyphens. In responses to callers without
    /// `patient:read_identifiers` it is masked: `****` and the last four characters.
    pub member_number: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmergencyContactBody {
    pub name: String,
    pub relationship: String,
    /// E.164, e.g. `+15551234567`.
    pub phone: String,
}

/// A patient as registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD`, not in the future, not more than 150 years ago.
    pub date_of_birth: String,
    /// `female`, `male`, `other` or `unknown`.
    pub sex: String,
    /// `AAA-GG-SSSS`; areas 000, 666 and 9xx and all-zero groups are refused.
    pub ssn: Option<String>,
    pub address: Option<AddressBody>,
    /// E.164, e.g. `+15551234567`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub insurance_primary: Option<InsuranceBody>,
    pub insurance_secondary: Option<InsuranceBody>,
    pub emergency_contact: Option<EmergencyContactBody>,
    /// `active` (default), `inactive` or `deceased`.
    pub status: Option<String>,
}

fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change: fields left out stay as they are; `null` clears an optional field.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatientPatch {
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub family_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub date_of_birth: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub sex: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ssn: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<AddressBody>))]
    pub address: Option<Option<AddressBody>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<InsuranceBody>))]
    pub insurance_primary: Option<Option<InsuranceBody>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<InsuranceBody>))]
    pub insurance_secondary: Option<Option<InsuranceBody>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<EmergencyContactBody>))]
    pub emergency_contact: Option<Option<EmergencyContactBody>>,
    #[serde(default, deserialize_with = "some")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub status: Option<Option<String>>,
}

fn address(field: &'static [&'static str; 6], a: &AddressBody) -> Result<Address, FieldError> {
    let country = a.country.to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FieldError {
            field: field[5],
            reason: "must be an ISO 3166-1 alpha-2 code such as US",
        });
    }
    Ok(Address {
        line1: bounded_text(field[0], &a.line1, 200)?,
        line2: a
            .line2
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .map(|l| bounded_text(field[1], l, 200))
            .transpose()?,
        city: bounded_text(field[2], &a.city, 100)?,
        region: bounded_text(field[3], &a.region, 100)?,
        postal_code: bounded_text(field[4], &a.postal_code, 20)?,
        country,
    })
}

const ADDRESS: [&str; 6] = [
    "address.line1",
    "address.line2",
    "address.city",
    "address.region",
    "address.postal_code",
    "address.country",
];

fn insurance(fields: [&'static str; 2], i: &InsuranceBody) -> Result<Insurance, FieldError> {
    Ok(Insurance {
        payer: bounded_text(fields[0], &i.payer, 100)?,
        member_number: member_number(fields[1], &i.member_number)?,
    })
}

fn emergency(c: &EmergencyContactBody) -> Result<EmergencyContact, FieldError> {
    Ok(EmergencyContact {
        name: PersonName::parse("emergency_contact.name", &c.name)?
            .as_str()
            .to_owned(),
        relationship: bounded_text("emergency_contact.relationship", &c.relationship, 50)?,
        phone: Phone::parse("emergency_contact.phone", &c.phone)?,
    })
}

/// Validates a whole record; the first failure names its field.
pub fn parse(body: &PatientBody, today: NaiveDate) -> Result<PatientData, FieldError> {
    Ok(PatientData {
        given_name: PersonName::parse("given_name", &body.given_name)?,
        family_name: PersonName::parse("family_name", &body.family_name)?,
        date_of_birth: DateOfBirth::parse("date_of_birth", &body.date_of_birth, today)?,
        sex: Sex::parse("sex", &body.sex)?,
        ssn: body
            .ssn
            .as_deref()
            .map(|s| Ssn::parse("ssn", s))
            .transpose()?,
        address: body
            .address
            .as_ref()
            .map(|a| address(&ADDRESS, a))
            .transpose()?,
        phone: body
            .phone
            .as_deref()
            .map(|p| Phone::parse("phone", p))
            .transpose()?,
        email: body
            .email
            .as_deref()
            .map(|e| EmailAddress::parse("email", e))
            .transpose()?,
        insurance_primary: body
            .insurance_primary
            .as_ref()
            .map(|i| {
                insurance(
                    ["insurance_primary.payer", "insurance_primary.member_number"],
                    i,
                )
            })
            .transpose()?,
        insurance_secondary: body
            .insurance_secondary
            .as_ref()
            .map(|i| {
                insurance(
                    [
                        "insurance_secondary.payer",
                        "insurance_secondary.member_number",
                    ],
                    i,
                )
            })
            .transpose()?,
        emergency_contact: body.emergency_contact.as_ref().map(emergency).transpose()?,
        status: body
            .status
            .as_deref()
            .map_or(Ok(PatientStatus::Active), |s| {
                PatientStatus::parse("status", s)
            })?,
    })
}

/// The stored record as a form (unmasked), so a patch is validated like a new record and a
/// view starts from it.
pub fn body_of(data: &PatientData) -> PatientBody {
    let insurance = |i: &Insurance| InsuranceBody {
        payer: i.payer.clone(),
        member_number: i.member_number.clone(),
    };
    PatientBody {
        given_name: data.given_name.as_str().to_owned(),
        family_name: data.family_name.as_str().to_owned(),
        date_of_birth: data.date_of_birth.iso(),
        sex: data.sex.as_str().to_owned(),
        ssn: data.ssn.as_ref().map(|s| s.as_str().to_owned()),
        address: data.address.as_ref().map(|a| AddressBody {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }),
        phone: data.phone.as_ref().map(|p| p.as_str().to_owned()),
        email: data.email.as_ref().map(|e| e.as_str().to_owned()),
        insurance_primary: data.insurance_primary.as_ref().map(insurance),
        insurance_secondary: data.insurance_secondary.as_ref().map(insurance),
        emergency_contact: data
            .emergency_contact
            .as_ref()
            .map(|c| EmergencyContactBody {
                name: c.name.clone(),
                relationship: c.relationship.clone(),
                phone: c.phone.as_str().to_owned(),
            }),
        status: Some(data.status.as_str().to_owned()),
    }
}

/// A valid record for judging a patch's own fields.
fn placeholder() -> PatientBody {
    PatientBody {
        given_name: "A".into(),
        family_name: "A".into(),
        date_of_birth: "2000-01-01".into(),
        sex: "unknown".into(),
        ssn: None,
        address: None,
        phone: None,
        email: None,
        insurance_primary: None,
        insurance_secondary: None,
        emergency_contact: None,
        status: Some("active".into()),
    }
}

/// Overlays a patch. Required fields cannot be cleared: `null` for one is refused by name.
fn apply(mut body: PatientBody, patch: PatientPatch) -> Result<PatientBody, FieldError> {
    fn required(
        field: &'static str,
        value: Option<Option<String>>,
        into: &mut String,
    ) -> Result<(), FieldError> {
        match value {
            Some(Some(value)) => *into = value,
            Some(None) => {
                return Err(FieldError {
                    field,
                    reason: "is required and cannot be null",
                });
            }
            None => {}
        }
        Ok(())
    }
    macro_rules! optional {
        ($($field:ident),*) => { $(if let Some(value) = patch.$field { body.$field = value; })* };
    }
    required("given_name", patch.given_name, &mut body.given_name)?;
    required("family_name", patch.family_name, &mut body.family_name)?;
    required(
        "date_of_birth",
        patch.date_of_birth,
        &mut body.date_of_birth,
    )?;
    required("sex", patch.sex, &mut body.sex)?;
    let mut status = body.status.take().unwrap_or_default();
    required("status", patch.status, &mut status)?;
    body.status = Some(status);
    optional!(
        ssn,
        address,
        phone,
        email,
        insurance_primary,
        insurance_secondary,
        emergency_contact
    );
    Ok(body)
}

/// Judges a patch on its own, over a valid placeholder record: a malformed change is refused
/// as such (422) before any version is compared.
pub fn check_patch(patch: &PatientPatch, today: NaiveDate) -> Result<(), FieldError> {
    parse(&apply(placeholder(), patch.clone())?, today).map(drop)
}

/// The record after `patch`, validated whole.
pub fn patched(
    current: &PatientData,
    patch: PatientPatch,
    today: NaiveDate,
) -> Result<PatientData, FieldError> {
    parse(&apply(body_of(current), patch)?, today)
}

/// What a search asks for: at most one of MRN, SSN, family name with date of birth, or name
/// words; none means the caller's own patients.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchCriteria<'a> {
    pub mrn: Option<&'a str>,
    pub ssn: Option<&'a str>,
    pub family_name: Option<&'a str>,
    pub date_of_birth: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The search `body` asks for, checked.
pub fn search(body: &SearchCriteria<'_>, today: NaiveDate) -> Result<Search, FieldError> {
    let chosen = [
        body.mrn.is_some(),
        body.ssn.is_some(),
        body.family_name.is_some() || body.date_of_birth.is_some(),
        body.name.is_some(),
    ]
    .iter()
    .filter(|c| **c)
    .count();
    if chosen > 1 {
        return Err(FieldError {
            field: "query",
            reason: "use one of mrn, ssn, family_name with date_of_birth, or name",
        });
    }
    if let Some(mrn) = &body.mrn {
        if !mrn_is_well_formed(mrn) {
            return Err(FieldError {
                field: "mrn",
                reason: "must be 9 digits with a valid check digit",
            });
        }
        return Ok(Search::Mrn((*mrn).to_owned()));
    }
    if let Some(ssn) = &body.ssn {
        return Ok(Search::Ssn(Ssn::parse("ssn", ssn)?));
    }
    match (&body.family_name, &body.date_of_birth) {
        (Some(name), Some(dob)) => {
            return Ok(Search::FamilyNameAndBirth(
                PersonName::parse("family_name", name)?,
                DateOfBirth::parse("date_of_birth", dob, today)?,
            ));
        }
        (Some(_), None) => {
            return Err(FieldError {
                field: "date_of_birth",
                reason: "is needed with family_name",
            });
        }
        (None, Some(_)) => {
            return Err(FieldError {
                field: "family_name",
                reason: "is needed with date_of_birth",
            });
        }
        (None, None) => {}
    }
    if let Some(name) = &body.name {
        let tokens = clinicd_crypto::blind_index::name_tokens(name);
        if tokens.is_empty() || tokens.len() > 3 || name.chars().count() > 200 {
            return Err(FieldError {
                field: "name",
                reason: "must hold 1 to 3 words",
            });
        }
        return Ok(Search::NameTokens(tokens));
    }
    Ok(Search::Mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    fn patch(json: &str) -> PatientPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn one_kind_of_search_at_a_time() {
        let both = SearchCriteria {
            mrn: Some("000000018"),
            name: Some("ada"),
            ..SearchCriteria::default()
        };
        assert_eq!(search(&both, today()).err().map(|e| e.field), Some("query"));
        let half = SearchCriteria {
            family_name: Some("Lovelace"),
            ..SearchCriteria::default()
        };
        assert_eq!(
            search(&half, today()).err().map(|e| e.field),
            Some("date_of_birth")
        );
        let none = SearchCriteria::default();
        assert!(matches!(search(&none, today()), Ok(Search::Mine)));
        let words = SearchCriteria {
            name: Some("a b c d"),
            ..SearchCriteria::default()
        };
        assert_eq!(search(&words, today()).err().map(|e| e.field), Some("name"));
    }

    #[test]
    fn a_patch_keeps_what_it_leaves_out_and_cannot_clear_a_required_field() {
        let current = parse(&placeholder(), today()).unwrap();
        let changed = patched(&current, patch(r#"{"phone": "+15551234567"}"#), today()).unwrap();
        assert_eq!(changed.given_name.as_str(), "A");
        assert_eq!(
            changed.phone.as_ref().map(|p| p.as_str()),
            Some("+15551234567")
        );
        let cleared = patched(&changed, patch(r#"{"phone": null}"#), today()).unwrap();
        assert!(cleared.phone.is_none());
        assert_eq!(
            check_patch(&patch(r#"{"family_name": null}"#), today())
                .err()
                .map(|e| e.field),
            Some("family_name")
        );
        assert_eq!(
            check_patch(&patch(r#"{"date_of_birth": "2999-01-01"}"#), today())
                .err()
                .map(|e| e.field),
            Some("date_of_birth")
        );
    }
}
