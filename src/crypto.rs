//! Small cryptographic helpers shared by the rest of Herald: random tokens, digests of random
//! tokens, constant-time comparison, and argon2id password hashing in a bounded pool.
//!
//! Random tokens (API keys, session ids, setup links) carry 256 bits of entropy, so a plain
//! SHA-256 digest is enough to store them: a slow password hash is only for human passwords.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// `N` bytes from the thread's cryptographically secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::fill(&mut buf[..]);
    buf
}

/// A random 256-bit token, base64url without padding (43 characters).
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Hex SHA-256 of a token, as stored in place of the token itself.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Hashes a human password with argon2id (default parameters: 19 MiB, 2 passes).
/// CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &SecretString) -> Result<String, PasswordHashError> {
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| PasswordHashError)
}

/// Checks a password against a stored argon2 hash. A malformed hash never matches.
/// CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &SecretString, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// A hash that costs as much to check as a real one, used when the account does not exist so
/// that sign-in time does not reveal which emails have accounts.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&SecretString::from(random_token())).unwrap_or_else(|_| String::new())
    })
}

/// Hashing failed; argon2 with default parameters only fails when out of memory.
#[derive(Debug, thiserror::Error)]
#[error("could not hash the password")]
pub struct PasswordHashError;

/// The hashes computed at once by default: one per CPU.
pub fn default_hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// How long a caller may wait for the [`HashPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// However long it takes: a signed-in admin adding a user, the CLI.
    Always,
    /// Only while the queue ahead is short ([`HashPool::queue_limit`]): anyone on the network
    /// may ask for a sign-in, so past that they are told to come back instead of piling up.
    Briefly,
}

/// Why the pool did not hash.
#[derive(Debug, thiserror::Error)]
pub enum HashPoolError {
    #[error("password hashing is busy; try again in a few seconds")]
    Busy,
    #[error("the password hashing task failed: {0}")]
    Failed(String),
}

/// Runs password hashes (argon2id: 19 MiB and tens of milliseconds of CPU each) on `size`
/// threads of its own. Without a bound, a burst of sign-ins takes a blocking thread and 19 MiB
/// each, up to tokio's 512 threads: 10 GB, and every CPU busy. Its own threads rather than
/// tokio's blocking pool, because the allocator keeps a freed 19 MiB block in the arena of the
/// thread that used it: hashes spread over ever-new blocking threads would leave one block
/// per thread behind; here at most `size` blocks are ever held.
pub struct HashPool {
    jobs: std::sync::mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    size: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Counts a caller waiting for a permit until it has one, or gives up (its future dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashPool {
    /// Starts `size` threads; they end when the pool is dropped, after their current hash.
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..size {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("herald-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panicking job fails its caller, not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            jobs,
            permits: Arc::new(Semaphore::new(size)),
            waiting: AtomicUsize::new(0),
            size,
        }
    }

    /// Callers that [`Wait::Briefly`] are refused once this many wait: two hashes' time for
    /// each thread, well under a second.
    pub fn queue_limit(&self) -> usize {
        2 * self.size
    }

    /// Callers waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Runs `job` on one of the pool's threads once one is free.
    pub async fn run<R: Send + 'static>(
        &self,
        wait: Wait,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, HashPoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if wait == Wait::Briefly && self.waiting() >= self.queue_limit() {
                    return Err(HashPoolError::Busy);
                }
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let _waiting = Waiting(&self.waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| HashPoolError::Busy)?
            }
        };
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _permit = permit;
                let _ = done.send(job());
            }))
            .map_err(|_| HashPoolError::Failed("the hashing threads have stopped".into()))?;
        result
            .await
            .map_err(|_| HashPoolError::Failed("the hashing job panicked".into()))
    }
}

static HASH_POOL: RwLock<Option<Arc<HashPool>>> = RwLock::new(None);

/// The process's password hashing pool: [`default_hashing_threads`] unless
/// [`configure_hash_pool`] said otherwise.
pub fn hash_pool() -> Arc<HashPool> {
    if let Some(pool) = HASH_POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return pool.clone();
    }
    let mut slot = HASH_POOL.write().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| Arc::new(HashPool::new(default_hashing_threads())))
        .clone()
}

/// Sizes the process's pool (the configuration's `HERALD_PASSWORD_HASHING_THREADS`). Hashes
/// already running finish in the pool they started in.
pub fn configure_hash_pool(size: usize) {
    let mut slot = HASH_POOL.write().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_none_or(|pool| pool.size != size.max(1)) {
        *slot = Some(Arc::new(HashPool::new(size)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password(&SecretString::from("correct horse battery")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(
            &SecretString::from("correct horse battery"),
            &hash
        ));
        assert!(!verify_password(&SecretString::from("wrong"), &hash));
        assert!(!verify_password(
            &SecretString::from("x"),
            "not a phc string"
        ));
    }

    #[tokio::test]
    async fn a_full_pool_refuses_brief_waiters_and_queues_patient_ones() {
        let pool = Arc::new(HashPool::new(1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(Wait::Always, move || {
                    let _ = started.send(());
                    hold.recv().ok()
                })
                .await
            }
        });
        running.await.unwrap();
        let queued: Vec<_> = (0..pool.queue_limit())
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(Wait::Briefly, move || i).await })
            })
            .collect();
        while pool.waiting() < pool.queue_limit() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(Wait::Briefly, || ()).await,
            Err(HashPoolError::Busy)
        ));
        let patient = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(Wait::Always, || "done").await }
        });
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        for (i, job) in queued.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap(), i);
        }
        assert_eq!(patient.await.unwrap().unwrap(), "done");
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(token_digest("abc").len(), 64);
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
