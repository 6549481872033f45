//! The identity services as one handle for the API layer.

use std::sync::Arc;

use secrecy::SecretSlice;
use sqlx::PgPool;

use crate::clock::Clock;
use clinicd_crypto::Keyring;

use crate::devices::DeviceService;
use crate::login::LoginService;
use crate::mfa::MfaService;
use crate::password::{HashError, HashParams, PasswordHasherPool};
use crate::sessions::{SessionPolicy, SessionService};
use crate::tokens::TokenService;

pub const ISSUER: &str = "clinicd";
pub const AUDIENCE: &str = "clinicd-api";

#[derive(Debug)]
pub struct Identity {
    pub sessions: Arc<SessionService>,
    pub login: LoginService,
    pub mfa: Arc<MfaService>,
    pub devices: Arc<DeviceService>,
    pub db: PgPool,
    pub clock: Arc<dyn Clock>,
    /// The key hierarchy, shared with the layers above (audit values, RBAC).
    pub keyring: Arc<Keyring>,
}

#[derive(Debug, Clone, Copy)]
pub struct IdentitySettings {
    pub hash: HashParams,
    pub max_concurrent_hashes: usize,
    pub sessions: SessionPolicy,
    pub trusted_device_lifetime: std::time::Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            hash: HashParams::default(),
            // One core left for everything else: measured, two hashes at once on two cores
            // quadruple the p99 of other requests under a login flood; one hash keeps it within
            // 1.5x at the same logins/s (docs/identity.md, `./scripts/bench login`).
            max_concurrent_hashes: std::thread::available_parallelism()
                .map_or(1, |cores| cores.get().saturating_sub(1).max(1)),
            sessions: SessionPolicy::default(),
            trusted_device_lifetime: crate::devices::DEFAULT_LIFETIME,
        }
    }
}

impl Identity {
    /// Turns on the out-of-band fallback code (e-mail/SMS) with this sender.
    #[must_use]
    pub fn with_otp_sender(mut self, sender: Arc<dyn crate::otp::OtpSender>) -> Self {
        self.login.set_otp_sender(sender);
        self
    }

    /// Turns on the login challenge (CAPTCHA step after repeated failures) with this verifier.
    #[must_use]
    pub fn with_challenge_verifier(
        mut self,
        verifier: Arc<dyn crate::challenge::ChallengeVerifier>,
    ) -> Self {
        self.login.set_challenge_verifier(verifier);
        self
    }

    pub fn new(
        db: PgPool,
        signing_key: &SecretSlice<u8>,
        keyring: Arc<Keyring>,
        settings: IdentitySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HashError> {
        let tokens = Arc::new(TokenService::new(
            signing_key,
            ISSUER,
            AUDIENCE,
            clock.clone(),
        ));
        let sessions = Arc::new(SessionService::new(
            db.clone(),
            tokens.clone(),
            clock.clone(),
            settings.sessions,
        ));
        let hasher = PasswordHasherPool::new(settings.hash, settings.max_concurrent_hashes)?;
        let mfa = Arc::new(MfaService::new(db.clone(), keyring.clone(), clock.clone()));
        let devices = Arc::new(DeviceService::new(
            db.clone(),
            clock.clone(),
            settings.trusted_device_lifetime,
        ));
        let login = LoginService::new(
            db.clone(),
            hasher,
            sessions.clone(),
            tokens,
            mfa.clone(),
            devices.clone(),
            clock.clone(),
        );
        Ok(Self {
            sessions,
            login,
            mfa,
            devices,
            db,
            clock,
            keyring,
        })
    }
}
