//! The time, read in one place. Production reads the system clock ([`SystemClock`]); tests
//! drive a simulated one ([`ManualClock`]) through hours of throttling, token lifetimes and
//! expiries in an instant. Everything else asks a [`Clock`]: `clippy.toml` forbids reading the
//! time or sleeping on a thread anywhere but here.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// The time Herald goes by.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
    /// Waits until `t` (a simulated clock jumps to it).
    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real clock.
pub struct SystemClock;

// The one place allowed to read the system time (`clippy.toml`).
#[allow(clippy::disallowed_methods)]
impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (t - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        Box::pin(tokio::time::sleep(
            std::time::Duration::try_from(wait).unwrap_or_default(),
        ))
    }
}

/// A simulated clock: it stands still until someone waits, then jumps to the end of the wait.
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn starting_at(t: OffsetDateTime) -> Self {
        Self(Mutex::new(t))
    }

    pub fn advance(&self, by: time::Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        {
            let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if t > *now {
                *now = t;
            }
        }
        Box::pin(tokio::task::yield_now())
    }
}

/// The clock shared by everything one application builds.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The system clock's time, for what runs outside an application and so has no clock of its
/// own to ask: test fixtures and one-off look-ups.
pub fn system_now() -> OffsetDateTime {
    SystemClock.now()
}
