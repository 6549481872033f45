//! Password hashing with argon2id.
//!
//! Hashing is deliberately slow (19 MiB and 2 passes by default, the OWASP parameters), so it
//! runs off the async executor on `max_concurrent` threads of its own (default: one core fewer
//! than the machine has): a login flood queues here instead of stalling the executor and every
//! other request. Parameters
//! live in each PHC string, so changing them in configuration takes effect for each user at
//! their next successful login ([`Verification::needs_rehash`]). Unknown users are verified
//! against a dummy hash with the same parameters, so they take the same time and get the same
//! answer as a wrong password.

use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task was cancelled")]
    Cancelled,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones: store a new hash.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct PasswordHasherPool {
    params: Params,
    workers: Arc<HashWorkers>,
    dummy: Arc<str>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads of their own for argon2; their number caps concurrent hashes and further requests
/// wait in the queue, not on a thread.
///
/// Why not tokio's blocking pool behind a semaphore: measured with `./scripts/bench login` on
/// two cores, that design let the p99 of other requests grow about 4x under a login flood, at
/// about 37 logins/s; these threads keep it near 1.4x at about 52 logins/s (docs/identity.md).
/// A permit there is handed on only when the async task that held it is polled again, on an
/// executor the flood keeps busy; here a thread takes the next hash the moment it is free.
struct HashWorkers {
    jobs: mpsc::Sender<Job>,
}

impl HashWorkers {
    fn start(threads: usize) -> Result<Self, HashError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    // Ends when the pool (the sender) is dropped.
                    while let Some(job) = next_job(&queue) {
                        job();
                    }
                })
                .map_err(|e| HashError::Hash(e.to_string()))?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        self.jobs.send(job).map_err(|_| HashError::Cancelled)
    }
}

fn next_job(queue: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    queue.lock().ok()?.recv().ok()
}

impl std::fmt::Debug for PasswordHasherPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasherPool")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("p_cost", &self.params.p_cost())
            .finish_non_exhaustive()
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

impl PasswordHasherPool {
    pub fn new(params: HashParams, max_concurrent: usize) -> Result<Self, HashError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Params(e.to_string()))?;
        // Made once, for unknown usernames: what it hashes does not matter, since a user who
        // does not exist never matches (see `verify`); it only has to cost the same.
        let dummy = argon2(&params)
            .hash_password(b"clinicd: no such user")
            .map_err(|e| HashError::Hash(e.to_string()))?
            .to_string();
        Ok(Self {
            params,
            workers: Arc::new(HashWorkers::start(max_concurrent)?),
            dummy: dummy.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) for a normalised password.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = SecretString::from(policy::normalize(password.expose_secret()));
        let params = self.params.clone();
        self.blocking(move || {
            argon2(&params)
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| HashError::Hash(e.to_string()))
        })
        .await
    }

    /// Checks `password` against a stored hash, or against the dummy hash when the user does
    /// not exist (`stored = None`), which then never matches.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verification, HashError> {
        let password = SecretString::from(policy::normalize(password.expose_secret()));
        let user_exists = stored.is_some();
        let phc: String = stored.unwrap_or(&self.dummy).to_owned();
        let params = self.params.clone();
        self.blocking(move || {
            let Ok(hash) = PasswordHash::new(&phc) else {
                return Ok(Verification {
                    matches: false,
                    needs_rehash: user_exists,
                });
            };
            let matches = argon2(&params)
                .verify_password(password.expose_secret().as_bytes(), &hash)
                .is_ok();
            let needs_rehash = Params::try_from(&hash).map_or(true, |stored| {
                (stored.m_cost(), stored.t_cost(), stored.p_cost())
                    != (params.m_cost(), params.t_cost(), params.p_cost())
            }) || hash.algorithm.as_str() != "argon2id";
            Ok(Verification {
                matches: matches && user_exists,
                needs_rehash: matches && user_exists && needs_rehash,
            })
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.workers.submit(Box::new(move || {
            // The caller may have gone away (a dropped request); nothing to do then.
            let _ = done.send(work());
        }))?;
        result.await.map_err(|_| HashError::Cancelled)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The real parameters: dependencies are optimised in debug builds, so a hash takes tens of
    // milliseconds here too.
    fn owasp() -> HashParams {
        HashParams::default()
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let pool = PasswordHasherPool::new(owasp(), 2).expect("pool");
        let a = pool
            .hash(&secret("correct horse battery staple"))
            .await
            .expect("hash");
        let b = pool
            .hash(&secret("correct horse battery staple"))
            .await
            .expect("hash");
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        let ok = pool
            .verify(&secret("correct horse battery staple"), Some(&a))
            .await
            .expect("verify");
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = pool
            .verify(&secret("correct horse battery stapler"), Some(&a))
            .await
            .expect("verify");
        assert_eq!(
            wrong,
            Verification {
                matches: false,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn unknown_users_never_match() {
        let pool = PasswordHasherPool::new(owasp(), 2).expect("pool");
        let result = pool
            .verify(&secret("anything at all here"), None)
            .await
            .expect("verify");
        assert_eq!(
            result,
            Verification {
                matches: false,
                needs_rehash: false
            }
        );
        let garbage = pool
            .verify(&secret("anything at all here"), Some("not a phc string"))
            .await
            .expect("verify");
        assert!(!garbage.matches);
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash_on_a_successful_login() {
        let old = PasswordHasherPool::new(
            HashParams {
                iterations: 1,
                ..owasp()
            },
            1,
        )
        .expect("pool");
        let stored = old
            .hash(&secret("correct horse battery staple"))
            .await
            .expect("hash");
        let new = PasswordHasherPool::new(owasp(), 1).expect("pool");
        let result = new
            .verify(&secret("correct horse battery staple"), Some(&stored))
            .await
            .expect("verify");
        assert_eq!(
            result,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let wrong = new
            .verify(&secret("wrong horse battery staple"), Some(&stored))
            .await
            .expect("verify");
        assert_eq!(
            wrong,
            Verification {
                matches: false,
                needs_rehash: false
            },
            "no rehash on a failed login"
        );
    }

    #[tokio::test]
    async fn compatibility_forms_of_a_password_are_the_same_password() {
        let pool = PasswordHasherPool::new(owasp(), 1).expect("pool");
        let stored = pool
            .hash(&secret("ｃｏｒｒｅｃｔ horse battery"))
            .await
            .expect("hash");
        assert!(
            pool.verify(&secret("correct horse battery"), Some(&stored))
                .await
                .expect("verify")
                .matches
        );
    }

    #[tokio::test]
    async fn defaults_are_the_owasp_parameters() {
        let pool = PasswordHasherPool::new(HashParams::default(), 1).expect("pool");
        let stored = pool
            .hash(&secret("correct horse battery staple"))
            .await
            .expect("hash");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
    }
}
