//! The S3 object store (aws-sdk-s3): objects under a bucket and prefix, written as multipart
//! uploads a part at a time (memory holds one part), completed only when the whole object is
//! written, and aborted on failure or when a writer is dropped, so a failed upload leaves no
//! object and no orphaned parts. Works with S3-compatible stores through the SDK's endpoint
//! override and path-style addressing; optional SSE-KMS on top of our own encryption.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};

use crate::store::{
    ObjectReader, ObjectStore, ObjectStoreError, ObjectWriter, READ_CHUNK, check_key,
};

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    sse_kms_key: Option<String>,
}

fn remote(error: impl std::fmt::Display) -> ObjectStoreError {
    ObjectStoreError::Remote(error.to_string())
}

impl S3Store {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            part_size: DEFAULT_PART_SIZE,
            sse_kms_key: None,
        }
    }

    /// Parts of this size (at least S3's 5 MiB).
    #[must_use]
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// Asks S3 to encrypt at rest too, under this KMS key (defence in depth; the objects are
    /// already ciphertext).
    #[must_use]
    pub fn with_sse_kms(mut self, key_id: impl Into<String>) -> Self {
        self.sse_kms_key = Some(key_id.into());
        self
    }

    fn full_key(&self, key: &str) -> Result<String, ObjectStoreError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ObjectStoreError> {
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: self.full_key(key)?,
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
        }))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>, ObjectStoreError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key)?)
            .send()
            .await;
        match result {
            Ok(object) => Ok(Box::new(S3Reader {
                body: object.body,
                pending: Vec::new(),
            })),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                Err(ObjectStoreError::NotFound)
            }
            Err(error) => Err(remote(aws_sdk_s3::error::DisplayErrorContext(error))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let key = self.full_key(key)?;
        // S3 deletes are idempotent; look first so a missing object is reported as such.
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await;
        if let Err(error) = head {
            return Err(
                if error.as_service_error().is_some_and(|e| e.is_not_found()) {
                    ObjectStoreError::NotFound
                } else {
                    remote(aws_sdk_s3::error::DisplayErrorContext(error))
                },
            );
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

struct S3Writer {
    store: S3Store,
    key: String,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl S3Writer {
    async fn upload_id(&mut self) -> Result<String, ObjectStoreError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let mut request = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key);
        if let Some(kms) = &self.store.sse_kms_key {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        let created = request
            .send()
            .await
            .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let id = created
            .upload_id()
            .ok_or_else(|| remote("no upload id"))?
            .to_owned();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn upload_part(&mut self, bytes: Vec<u8>) -> Result<(), ObjectStoreError> {
        let upload_id = self.upload_id().await?;
        let number = i32::try_from(self.parts.len() + 1).map_err(|_| remote("too many parts"))?;
        let uploaded = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ObjectStoreError> {
        let rest = std::mem::take(&mut self.buffer);
        if self.upload_id.is_none() {
            // Small enough for one request.
            let mut request = self
                .store
                .client
                .put_object()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .body(ByteStream::from(rest));
            if let Some(kms) = &self.store.sse_kms_key {
                request = request
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .ssekms_key_id(kms);
            }
            request
                .send()
                .await
                .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            return Ok(());
        }
        if !rest.is_empty() {
            self.upload_part(rest).await?;
        }
        let upload_id = self.upload_id().await?;
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        self.upload_id = None;
        Ok(())
    }

    async fn abort_upload(&mut self) -> Result<(), ObjectStoreError> {
        if let Some(upload_id) = self.upload_id.take() {
            self.store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| remote(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), ObjectStoreError> {
        while !bytes.is_empty() {
            let room = self.store.part_size.saturating_sub(self.buffer.len());
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == self.store.part_size {
                let part = std::mem::take(&mut self.buffer);
                if let Err(error) = self.upload_part(part).await {
                    let _ = self.abort_upload().await;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<(), ObjectStoreError> {
        let finished = self.finish().await;
        if finished.is_err() {
            let _ = self.abort_upload().await;
        }
        finished
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ObjectStoreError> {
        self.buffer.clear();
        self.abort_upload().await
    }
}

impl Drop for S3Writer {
    /// A dropped writer (a client that went away mid-upload) aborts its multipart upload in the
    /// background, so no parts are left behind to be billed or read.
    fn drop(&mut self) {
        if let (Some(upload_id), Ok(runtime)) =
            (self.upload_id.take(), tokio::runtime::Handle::try_current())
        {
            let client = self.store.client.clone();
            let (bucket, key) = (self.store.bucket.clone(), self.key.clone());
            runtime.spawn(async move {
                let aborted = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await;
                if let Err(error) = aborted {
                    tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(error), "abandoned upload not aborted");
                }
            });
        }
    }
}

struct S3Reader {
    body: ByteStream,
    pending: Vec<u8>,
}

#[async_trait]
impl ObjectReader for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ObjectStoreError> {
        while self.pending.len() < READ_CHUNK {
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(remote(error)),
                None => break,
            }
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let take = self.pending.len().min(READ_CHUNK);
        let rest = self.pending.split_off(take);
        Ok(Some(std::mem::replace(&mut self.pending, rest)))
    }
}

/// What protects a bucket's objects from deletion and loss (docs/backup.md): for
/// `clinicd backup check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketProtection {
    /// `Some(true)` when versioning is enabled; `None` when it could not be read.
    pub versioning: Option<bool>,
    /// The default retention under Object Lock: mode and days (or years as days), if any.
    pub object_lock: Option<(String, Option<i32>)>,
    /// Whether the bucket has replication rules (to another Region or account).
    pub replication: bool,
}

impl S3Store {
    /// Asks S3 what protects the bucket. Object Lock is read first: a locked bucket is
    /// versioned by S3's rules, so its versioning need not be asked (and some S3-compatible
    /// stores answer that request in a form the SDK cannot read).
    pub async fn protection(&self) -> Result<BucketProtection, ObjectStoreError> {
        let lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(answer) => answer.object_lock_configuration().and_then(|config| {
                let enabled = config.object_lock_enabled()
                    == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled);
                enabled.then(|| {
                    let retention = config.rule().and_then(|rule| rule.default_retention());
                    let mode = retention
                        .and_then(|r| r.mode())
                        .map_or_else(|| "none".to_owned(), |m| m.as_str().to_owned());
                    let days = retention.and_then(|r| {
                        r.days()
                            .or_else(|| r.years().map(|y| y.saturating_mul(365)))
                    });
                    (mode, days)
                })
            }),
            Err(error) if service_code(&error) == Some("ObjectLockConfigurationNotFoundError") => {
                None
            }
            Err(error) => return Err(remote(aws_sdk_s3::error::DisplayErrorContext(error))),
        };
        let versioning = if lock.is_some() {
            Some(true)
        } else {
            match self
                .client
                .get_bucket_versioning()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(answer) => Some(
                    answer.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled),
                ),
                Err(_) => None,
            }
        };
        let replication = match self
            .client
            .get_bucket_replication()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(answer) => answer
                .replication_configuration()
                .is_some_and(|config| !config.rules().is_empty()),
            Err(error) if service_code(&error) == Some("ReplicationConfigurationNotFoundError") => {
                false
            }
            Err(error) => return Err(remote(aws_sdk_s3::error::DisplayErrorContext(error))),
        };
        Ok(BucketProtection {
            versioning,
            object_lock: lock,
            replication,
        })
    }
}

fn service_code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> Option<&str>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    error.as_service_error().and_then(|e| e.code())
}
