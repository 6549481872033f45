//! `clinicd backup check`: what protects the root key, checked where KMS can say
//! (docs/backup.md). A root key that is not enabled (pending deletion above all) fails the
//! check; what is recommended and absent (a multi-Region key, rotation, escrow of a local key,
//! a copy of local-disk files) is reported as advice.

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
    Ok(vec![match &settings.storage {
        StorageSettings::Local { .. } => Finding::Advice(
            "files are on local disk: copy the storage directory off the machine with the \
             database backup (the objects are ciphertext already)"
                .into(),
        ),
        // Not checked yet: moto 5.2.5 answers GetBucketVersioning with a root element the SDK
        // refuses, so the check could not be tested here (docs/backup.md).
        StorageSettings::S3 { bucket, .. } => Finding::Advice(format!(
            "bucket {bucket}: versioning, Object Lock and replication are not checked yet; \
             see docs/backup.md for what the bucket needs"
        )),
    }])
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
