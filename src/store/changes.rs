//! A process-wide count of changes to organizations, mailboxes and API keys, which tells the
//! store's directory (see `directory`) that what it remembers may be out of date.
//!
//! Process-wide, as the changes are: one process may open several stores (the tests do), and
//! a change in one then only costs the others a read.

use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Says that an organization, a mailbox or an API key changed: everything the directory
/// remembers is read again. Called as the change is written, and again after its commit
/// where a read in between would matter.
pub fn changed() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The count now; an entry read under an earlier count is out of date.
pub(super) fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}
