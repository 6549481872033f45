//! `clinicd backup check`: what protects the stored files and the root key, checked where S3
//! and KMS can say (docs/backup.md). A bucket without versioning and a root key that is not
//! enabled (pending deletion above all) fail the check; what is recommended and absent (Object
//! Lock, replication, a multi-Region key, rotation, escrow of a local key) is advice.

use clinicd_crypto::KmsKeyProvider;

use crate::config::{KeyProviderSettings, Settings, StorageSettings};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Advice(String),
    Fail(String),
}

impl Finding {
    fn line(&self) -> String {
        match self {
            Self::Ok(text) => format!("ok      {text}"),
            Self::Advice(text) => format!("advice  {text}"),
            Self::Fail(text) => format!("FAIL    {text}"),
        }
    }
}

/// Runs every check; prints one line each. `Ok(false)` when any failed.
pub async fn check(settings: &Settings) -> anyhow::Result<bool> {
    let mut findings = storage(settings).await?;
    findings.extend(root_key(&settings.keys).await?);
    let mut out = String::new();
    for finding in &findings {
        out.push_str(&finding.line());
        out.push('\n');
    }
    crate::keys::write_stdout(&out)?;
    Ok(!findings.iter().any(|f| matches!(f, Finding::Fail(_))))
}

async fn storage(settings: &Settings) -> anyhow::Result<Vec<Finding>> {
    let StorageSettings::S3 { bucket, prefix, .. } = &settings.storage else {
        return Ok(vec![Finding::Advice(
            "files are on local disk: `clinicd backup now` copies them into the backup set \
             (the objects are ciphertext already); keep the repository off this machine"
                .into(),
        )]);
    };
    let store = clinicd_files::s3::S3Store::new(
        clinicd_audit::checkpoint::s3_client_from_env().await,
        bucket,
        prefix,
    );
    let found = store.protection().await?;
    Ok(bucket_findings(bucket, &found))
}

/// The bucket is the files' only copy: without versioning (or Object Lock, which implies it)
/// a deleted or overwritten object is gone, so that fails; Object Lock in compliance mode and
/// replication are recommended.
pub fn bucket_findings(bucket: &str, found: &clinicd_files::s3::BucketProtection) -> Vec<Finding> {
    let mut findings = vec![match (found.versioning, &found.object_lock) {
        (Some(true), Some(_)) => {
            Finding::Ok(format!("bucket {bucket}: versioning on (Object Lock)"))
        }
        (Some(true), None) => Finding::Ok(format!("bucket {bucket}: versioning on")),
        (Some(false), _) => Finding::Fail(format!(
            "bucket {bucket}: versioning off (a deleted or overwritten file is gone for good; \
             turn versioning on)"
        )),
        (None, _) => Finding::Fail(format!(
            "bucket {bucket}: versioning could not be confirmed (the store did not answer in a \
             form we read); turn on versioning or Object Lock and check by hand"
        )),
    }];
    findings.push(match &found.object_lock {
        Some((mode, Some(days))) if mode == "COMPLIANCE" => Finding::Ok(format!(
            "bucket {bucket}: Object Lock, compliance mode, {days} days by default"
        )),
        Some((mode, days)) => Finding::Advice(format!(
            "bucket {bucket}: Object Lock in {} mode{} (recommended: compliance mode with a \
             default retention; governance mode can be bypassed)",
            mode.to_ascii_lowercase(),
            days.map(|d| format!(", {d} days")).unwrap_or_default()
        )),
        None => Finding::Advice(format!(
            "bucket {bucket}: no Object Lock (recommended: compliance mode with a default \
             retention, so no credentials can delete a file early)"
        )),
    });
    findings.push(if found.replication {
        Finding::Ok(format!("bucket {bucket}: replicated"))
    } else {
        Finding::Advice(format!(
            "bucket {bucket}: no replication (recommended: to another Region)"
        ))
    });
    findings
}

async fn root_key(keys: &KeyProviderSettings) -> anyhow::Result<Vec<Finding>> {
    let KeyProviderSettings::AwsKms { key_id } = keys else {
        return Ok(vec![Finding::Advice(
            "the root key is a local master key: keep it in escrow as shares for separate \
             custodians (clinicd keys escrow-split), never beside the backups"
                .into(),
        )]);
    };
    let found = KmsKeyProvider::from_env(key_id.clone())
        .await
        .protection()
        .await?;
    let mut findings = vec![match found.state.as_str() {
        "Enabled" => Finding::Ok(format!("KMS key {key_id}: enabled")),
        "PendingDeletion" => Finding::Fail(format!(
            "KMS key {key_id}: pending deletion{} (every backup becomes unreadable when it is \
             deleted; cancel the deletion)",
            found
                .deletion_date
                .as_deref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default()
        )),
        state => Finding::Fail(format!("KMS key {key_id}: {state}")),
    }];
    findings.push(if found.multi_region {
        Finding::Ok(format!("KMS key {key_id}: multi-Region"))
    } else {
        Finding::Advice(format!(
            "KMS key {key_id}: single-Region (recommended: a multi-Region replica in the \
             recovery Region)"
        ))
    });
    if !found.rotation {
        findings.push(Finding::Advice(format!(
            "KMS key {key_id}: automatic rotation off"
        )));
    }
    Ok(findings)
}
