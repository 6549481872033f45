//! `clinicd import patients FILE.csv`: bringing an existing clinic's patients over.
//!
//! The file is read one row at a time (memory stays flat whatever its length) and each row is
//! validated exactly as the API validates a registration (both build the domain's
//! `PatientBody` and call its `parse`). Rows are written with a few in flight
//! at once, each in its own transaction. Every row gets a line in the report: imported with its new
//! MRN, already imported, or invalid with the field and the rule it broke (never the value).
//!
//! Idempotent: `source_id` (the old system's record id) is stored only as a keyed hash, and a
//! row whose hash is already present is skipped, so a re-run after an interruption or with a
//! corrected file adds only what is missing. `--dry-run` validates and reports without writing.

use std::io::Write;
use std::path::Path;

use chrono::NaiveDate;
use clinicd_audit::Action;
use clinicd_domain::PatientStore;
use clinicd_domain::patient_form::{
    AddressBody, EmergencyContactBody, InsuranceBody, PatientBody, parse,
};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::cli_audit::CliAudit;

/// One CSV row. Empty cells are absent values.
#[derive(Debug, Deserialize)]
pub struct Row {
    pub source_id: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: String,
    pub sex: String,
    pub ssn: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub address_city: Option<String>,
    pub address_region: Option<String>,
    pub address_postal_code: Option<String>,
    pub address_country: Option<String>,
    pub insurance_primary_payer: Option<String>,
    pub insurance_primary_member_number: Option<String>,
    pub insurance_secondary_payer: Option<String>,
    pub insurance_secondary_member_number: Option<String>,
    pub emergency_contact_name: Option<String>,
    pub emergency_contact_relationship: Option<String>,
    pub emergency_contact_phone: Option<String>,
    pub status: Option<String>,
}

fn present(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Row {
    fn body(&self) -> PatientBody {
        let insurance = |payer: &Option<String>, number: &Option<String>| match (
            present(payer),
            present(number),
        ) {
            (None, None) => None,
            (payer, number) => Some(InsuranceBody {
                payer: payer.unwrap_or_default(),
                member_number: number.unwrap_or_default(),
            }),
        };
        let address = [
            &self.address_line1,
            &self.address_city,
            &self.address_region,
            &self.address_postal_code,
            &self.address_country,
        ]
        .iter()
        .any(|v| present(v).is_some())
        .then(|| AddressBody {
            line1: present(&self.address_line1).unwrap_or_default(),
            line2: present(&self.address_line2),
            city: present(&self.address_city).unwrap_or_default(),
            region: present(&self.address_region).unwrap_or_default(),
            postal_code: present(&self.address_postal_code).unwrap_or_default(),
            country: present(&self.address_country).unwrap_or_default(),
        });
        let emergency = [
            &self.emergency_contact_name,
            &self.emergency_contact_relationship,
            &self.emergency_contact_phone,
        ]
        .iter()
        .any(|v| present(v).is_some())
        .then(|| EmergencyContactBody {
            name: present(&self.emergency_contact_name).unwrap_or_default(),
            relationship: present(&self.emergency_contact_relationship).unwrap_or_default(),
            phone: present(&self.emergency_contact_phone).unwrap_or_default(),
        });
        PatientBody {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            date_of_birth: self.date_of_birth.clone(),
            sex: self.sex.trim().to_ascii_lowercase(),
            ssn: present(&self.ssn),
            address,
            phone: present(&self.phone),
            email: present(&self.email),
            insurance_primary: insurance(
                &self.insurance_primary_payer,
                &self.insurance_primary_member_number,
            ),
            insurance_secondary: insurance(
                &self.insurance_secondary_payer,
                &self.insurance_secondary_member_number,
            ),
            emergency_contact: emergency,
            status: present(&self.status),
        }
    }
}

/// What happened to the rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub rows: u64,
    pub imported: u64,
    pub already_imported: u64,
    pub invalid: u64,
    pub dry_run: bool,
}

/// What became of one row.
enum Outcome {
    Imported(String),
    AlreadyImported,
    Valid,
    Invalid(String),
}

/// Imports `file`, writing one report line per row (in file order) to `report` and returning
/// the totals. Rows are read lazily and [`IN_FLIGHT`] are processed at once (encryption and
/// database round trips overlap), each in its own transaction.
pub async fn import_patients(
    store: &PatientStore,
    audit: &CliAudit,
    file: &Path,
    dry_run: bool,
    today: NaiveDate,
    report: &mut impl Write,
) -> anyhow::Result<Summary> {
    let reader = csv_reader(std::fs::File::open(file)?);
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let rows = futures_util::stream::iter(reader.into_deserialize::<Row>().enumerate())
        .map(|(index, record)| async move {
            let outcome = match record {
                Ok(row) => one(store, audit, &row, dry_run, today).await,
                Err(error) => Ok(Outcome::Invalid(csv_problem(&error))),
            };
            // Row numbers as a spreadsheet shows them: the header is row 1.
            (index + 2, outcome)
        })
        .buffered(IN_FLIGHT);
    futures_util::pin_mut!(rows);
    while let Some((line, outcome)) = rows.next().await {
        summary.rows += 1;
        match outcome? {
            Outcome::Imported(mrn) => {
                summary.imported += 1;
                writeln!(report, "row {line}: imported as MRN {mrn}")?;
            }
            Outcome::Valid => {
                summary.imported += 1;
                writeln!(report, "row {line}: valid")?;
            }
            Outcome::AlreadyImported => {
                summary.already_imported += 1;
                writeln!(report, "row {line}: already imported")?;
            }
            Outcome::Invalid(problem) => {
                summary.invalid += 1;
                writeln!(report, "row {line}: invalid: {problem}")?;
            }
        }
    }
    Ok(summary)
}

/// The CSV reader every import uses (and the property test feeds arbitrary bytes).
fn csv_reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(input)
}

/// Rows processed at once.
pub const IN_FLIGHT: usize = 8;

async fn one(
    store: &PatientStore,
    audit: &CliAudit,
    row: &Row,
    dry_run: bool,
    today: NaiveDate,
) -> anyhow::Result<Outcome> {
    let data = match parse(&row.body(), today) {
        Ok(data) => data,
        Err(error) => return Ok(Outcome::Invalid(error.to_string())),
    };
    let Some(key) = store.import_key(&row.source_id).await? else {
        return Ok(Outcome::Invalid("`source_id`: is empty".to_owned()));
    };
    // Checked first, so a re-run costs a lookup per row, not a row's encryption.
    if store.imported(&row.source_id).await? {
        return Ok(Outcome::AlreadyImported);
    }
    if dry_run {
        return Ok(Outcome::Valid);
    }
    let prepared = store.prepare(&data).await?;
    let mut tx = store.db().begin().await?;
    let imported = store.import(&mut tx, &prepared, &key).await?;
    tx.commit().await?;
    if let Some(patient) = &imported {
        let via = serde_json::json!({ "via": "import" });
        audit
            .created(Action::Create, "patient", patient.id, patient.id, via)
            .await?;
    }
    Ok(match imported {
        Some(patient) => Outcome::Imported(patient.mrn),
        // Another importer took this source id between the check and the insert.
        None => Outcome::AlreadyImported,
    })
}

/// A CSV error without the record's content (it is PHI).
fn csv_problem(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(field) => format!("column {}: {}", field + 1, deserialize_kind(err.kind())),
            None => deserialize_kind(err.kind()).to_owned(),
        },
        csv::ErrorKind::UnequalLengths { .. } => {
            "the row has a different number of cells than the header".to_owned()
        }
        csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".to_owned(),
        _ => "the row cannot be read".to_owned(),
    }
}

fn deserialize_kind(kind: &csv::DeserializeErrorKind) -> &'static str {
    match kind {
        csv::DeserializeErrorKind::Message(_) => "a required column is missing or malformed",
        csv::DeserializeErrorKind::Unsupported(_) => "unsupported value",
        csv::DeserializeErrorKind::UnexpectedEndOfRow => "the row ends early",
        csv::DeserializeErrorKind::InvalidUtf8(_) => "not valid UTF-8",
        _ => "a value does not parse",
    }
}

/// Each row of a CSV file as the import judges it before the database: the same reader, row
/// type, problem text and validation as [`import_patients`]. The CSV fuzz target (fuzz/) and its
/// property-test twin (below) drive it.
#[doc(hidden)]
pub fn judge_rows(bytes: &[u8], today: NaiveDate) -> Vec<Result<(), String>> {
    csv_reader(bytes)
        .into_deserialize::<Row>()
        .map(|record| validate(record, today))
        .collect()
}

fn validate(record: Result<Row, csv::Error>, today: NaiveDate) -> Result<(), String> {
    let row = record.map_err(|error| csv_problem(&error))?;
    parse(&row.body(), today)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEADER: &str = "source_id,given_name,family_name,date_of_birth,sex,ssn,phone,email,\
address_line1,address_line2,address_city,address_region,address_postal_code,address_country,\
insurance_primary_payer,insurance_primary_member_number,insurance_secondary_payer,\
insurance_secondary_member_number,emergency_contact_name,emergency_contact_relationship,\
emergency_contact_phone,status";

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 4).unwrap_or_default()
    }

    fn outcomes(bytes: &[u8]) -> Vec<Result<(), String>> {
        judge_rows(bytes, today())
    }

    #[test]
    fn a_good_row_validates_and_a_bad_one_is_named_without_its_content() {
        let file = format!(
            "{HEADER}\nA1,Ada,Lovelace,1985-12-10,female{}\nA2,Ada,Secretname,tomorrow,female{}\n",
            ",".repeat(17),
            ",".repeat(17)
        );
        let results = outcomes(file.as_bytes());
        assert_eq!(results.len(), 2);
        assert_eq!(results.first(), Some(&Ok(())));
        let problem = results
            .get(1)
            .and_then(|r| r.clone().err())
            .unwrap_or_default();
        assert!(problem.contains("date_of_birth"), "{problem}");
        assert!(!problem.contains("Secretname") && !problem.contains("tomorrow"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The twin of fuzz/fuzz_targets/csv_import.rs: any bytes give an answer per row, and a
        /// problem never repeats a cell (the cells are PHI).
        #[test]
        fn any_bytes_give_an_answer_per_row_and_no_cell_in_a_problem(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            marker in "[A-Z][a-z]{7,12}q",
        ) {
            let _ = outcomes(&body);
            let mut file = format!("{HEADER}\n").into_bytes();
            file.extend_from_slice(&body);
            file.extend_from_slice(format!("\n{marker},{marker},{marker},{marker},{marker}\n").as_bytes());
            for problem in outcomes(&file).into_iter().filter_map(Result::err) {
                prop_assert!(!problem.contains(&marker), "{}", problem);
            }
        }
    }
}
