//! One-time codes sent out of band (e-mail or SMS): a fallback second factor for a user
//! without their authenticator app. Off unless a sender is configured.
//!
//! The code is six random digits bound to one MFA challenge, stored only as a hash, valid for
//! five minutes, sent at most three times per challenge; a wrong code uses the challenge up like
//! any other MFA failure. Senders never log the code.
//!
//! No SMS or e-mail provider is reachable from here, so there are two senders: [`LogOtpSender`]
//! for development (it logs that a code was sent, never the code) and [`WebhookOtpSender`], which
//! posts the message to a gateway the clinic runs (their SMS or mail relay), signed with HMAC so
//! the gateway can tell it came from us.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use uuid::Uuid;

pub const CODE_TTL_SECS: i64 = 300;
pub const MAX_SENDS_PER_CHALLENGE: i32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a delivered secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpPurpose {
    /// A second-factor code for one login.
    MfaCode,
    /// The one-time password of a new or reset account: in production it reaches only its
    /// owner this way, never the administrator who made it.
    OneTimePassword,
}

impl OtpPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MfaCode => "mfa_code",
            Self::OneTimePassword => "one_time_password",
        }
    }
}

/// One secret to deliver.
#[derive(Debug)]
pub struct OtpMessage<'a> {
    pub user_id: Uuid,
    /// The user's e-mail address (the only address we hold today).
    pub to: &'a str,
    pub purpose: OtpPurpose,
    pub code: &'a SecretString,
    /// When the secret stops working (`None` for a one-time password, which lasts until its
    /// owner replaces it at first login).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error("the code could not be delivered: {0}")]
    Delivery(String),
}

#[async_trait]
pub trait OtpSender: Send + Sync + fmt::Debug {
    /// The channel named to the user ("email", "sms").
    fn channel(&self) -> &'static str;
    async fn send(&self, message: &OtpMessage<'_>) -> Result<(), OtpError>;
}

/// Development: records that a code was sent, to whom (by user id), never the code.
#[derive(Debug, Default)]
pub struct LogOtpSender;

#[async_trait]
impl OtpSender for LogOtpSender {
    fn channel(&self) -> &'static str {
        "email"
    }

    async fn send(&self, message: &OtpMessage<'_>) -> Result<(), OtpError> {
        tracing::info!(user_id = %message.user_id, channel = "email", purpose = message.purpose.as_str(), "one-time code sent (development sender: not delivered)");
        Ok(())
    }
}

/// Posts `{"user_id", "channel", "purpose", "to", "code", "expires_at"}` to the clinic's gateway with
/// `X-Clinicd-Timestamp` and `X-Clinicd-Signature: sha256=HEX(HMAC-SHA256(key, timestamp "." body))`.
pub struct WebhookOtpSender {
    url: reqwest::Url,
    client: reqwest::Client,
    key: hmac::Key,
}

impl fmt::Debug for WebhookOtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookOtpSender")
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

impl WebhookOtpSender {
    pub fn new(url: reqwest::Url, signing_key: &SecretSlice<u8>) -> Result<Self, OtpError> {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OtpError::Delivery(e.to_string()))?;
        Ok(Self {
            url,
            client,
            key: hmac::Key::new(hmac::HMAC_SHA256, signing_key.expose_secret()),
        })
    }

    /// The signature a gateway recomputes to check a delivery request.
    pub fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
        sign(&hmac::Key::new(hmac::HMAC_SHA256, key), timestamp, body)
    }
}

fn sign(key: &hmac::Key, timestamp: &str, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    hex::encode(context.sign().as_ref())
}

#[async_trait]
impl OtpSender for WebhookOtpSender {
    fn channel(&self) -> &'static str {
        "email"
    }

    async fn send(&self, message: &OtpMessage<'_>) -> Result<(), OtpError> {
        let body = serde_json::json!({
            "user_id": message.user_id,
            "channel": self.channel(),
            "purpose": message.purpose.as_str(),
            "to": message.to,
            "code": message.code.expose_secret(),
            "expires_at": message.expires_at,
        })
        .to_string();
        let timestamp = Utc::now().timestamp().to_string();
        let signature = sign(&self.key, &timestamp, body.as_bytes());
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("x-clinicd-timestamp", &timestamp)
            .header("x-clinicd-signature", format!("sha256={signature}"))
            .body(body)
            .send()
            .await
            // reqwest's error names the URL, never the body.
            .map_err(|e| OtpError::Delivery(e.without_url().to_string()))?;
        if response.status().is_success() {
            tracing::info!(user_id = %message.user_id, "one-time code handed to the gateway");
            Ok(())
        } else {
            Err(OtpError::Delivery(format!(
                "the gateway answered {}",
                response.status()
            )))
        }
    }
}
