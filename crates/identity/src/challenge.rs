//! The login challenge (our plan's CAPTCHA step): after repeated failures on an account, a
//! login must also carry a challenge response that a verifier accepts. Off unless configured.
//!
//! [`SiteVerifyChallenge`] speaks the "siteverify" protocol that reCAPTCHA, hCaptcha and
//! Cloudflare Turnstile share: POST `secret`, `response` and `remoteip` as a form, read
//! `{"success": bool}`. A verifier that cannot be reached fails closed: the login is refused.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::sessions::ClientInfo;

const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("the challenge verifier is unavailable: {0}")]
pub struct ChallengeError(pub String);

#[async_trait]
pub trait ChallengeVerifier: Send + Sync + fmt::Debug {
    /// Whether `response` (from the client's widget) is a solved challenge.
    async fn verify(&self, response: &str, client: &ClientInfo) -> Result<bool, ChallengeError>;
}

pub struct SiteVerifyChallenge {
    url: reqwest::Url,
    secret: SecretString,
    client: reqwest::Client,
}

impl fmt::Debug for SiteVerifyChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteVerifyChallenge")
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

impl SiteVerifyChallenge {
    pub fn new(url: reqwest::Url, secret: SecretString) -> Result<Self, ChallengeError> {
        let client = reqwest::Client::builder()
            .timeout(VERIFY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChallengeError(e.to_string()))?;
        Ok(Self {
            url,
            secret,
            client,
        })
    }
}

#[derive(serde::Deserialize)]
struct SiteVerifyAnswer {
    success: bool,
}

#[async_trait]
impl ChallengeVerifier for SiteVerifyChallenge {
    async fn verify(&self, response: &str, client: &ClientInfo) -> Result<bool, ChallengeError> {
        let mut form = vec![
            ("secret", self.secret.expose_secret().to_owned()),
            ("response", response.to_owned()),
        ];
        if let Some(ip) = client.ip {
            form.push(("remoteip", ip.to_string()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let answer = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| ChallengeError(e.without_url().to_string()))?;
        if !answer.status().is_success() {
            return Err(ChallengeError(format!("answered {}", answer.status())));
        }
        let answer: SiteVerifyAnswer = answer
            .json()
            .await
            .map_err(|e| ChallengeError(e.without_url().to_string()))?;
        Ok(answer.success)
    }
}

/// `application/x-www-form-urlencoded` for one value (reqwest's `form` feature is not enabled,
/// and this is all it would do for us).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
