//! Device codes (RFC 8628) as the sandbox's authorization server keeps them: the code a client
//! polls with, the short code a person enters at `/devicelogin`, what the person decided, and
//! when each poll came, so that tests can see a client keep its interval without a clock of
//! their own.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::SandboxState;
use crate::crypto;

/// What a person did with a device code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nobody has signed in and answered yet.
    Pending,
    /// Signed in as the user and accepted.
    Approved(String),
    Declined,
    /// The tokens were issued: the code is spent.
    Redeemed,
}

/// A device code and its session.
#[derive(Clone, Debug)]
pub(crate) struct DeviceGrant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user_code: String,
    pub expires_at: OffsetDateTime,
    pub interval_secs: u64,
    pub decision: Decision,
}

/// What a poll with a device code is answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PollAnswer {
    Unknown,
    Expired,
    Pending,
    SlowDown,
    Declined,
    Spent,
    /// Tokens for the user, with the scopes consented to.
    Approved {
        user: String,
        scopes: Vec<String>,
    },
}

/// Device codes by the digest of the code the client holds; user codes point at them.
#[derive(Default)]
pub(crate) struct Devices {
    grants: HashMap<String, DeviceGrant>,
    by_user_code: HashMap<String, String>,
    /// When each poll arrived, in order, by the sandbox's clock.
    polls: Vec<OffsetDateTime>,
}

/// A user code shaped like Entra's: nine characters, capitals and digits, none that look alike.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    crypto::random_bytes::<9>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A user code as a person may type it: any case, with spaces or dashes.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl SandboxState {
    /// Issues a device code for the client and scopes; answers it and its user code.
    pub(crate) fn issue_device_code(
        &self,
        client_id: &str,
        scopes: Vec<String>,
        lifetime: time::Duration,
        interval_secs: u64,
    ) -> (String, DeviceGrant) {
        let device_code = format!("DAQABAAEAAA{}", crypto::random_token());
        let grant = DeviceGrant {
            client_id: client_id.to_owned(),
            scopes,
            user_code: user_code(),
            expires_at: self.now() + lifetime,
            interval_secs,
            decision: Decision::Pending,
        };
        let digest = crypto::token_digest(&device_code);
        let mut inner = self.inner();
        inner
            .devices
            .by_user_code
            .insert(grant.user_code.clone(), digest.clone());
        inner.devices.grants.insert(digest, grant.clone());
        (device_code, grant)
    }

    /// The live, undecided device code a person typed, by its digest.
    pub(crate) fn device_by_user_code(&self, typed: &str) -> Option<(String, DeviceGrant)> {
        let now = self.now();
        let inner = self.inner();
        let digest = inner.devices.by_user_code.get(&normalize(typed))?;
        inner
            .devices
            .grants
            .get(digest)
            .filter(|g| g.expires_at > now && g.decision == Decision::Pending)
            .map(|g| (digest.clone(), g.clone()))
    }

    /// Records the person's answer for a device code (by digest).
    pub(crate) fn decide_device(&self, digest: &str, decision: Decision) {
        if let Some(grant) = self.inner().devices.grants.get_mut(digest)
            && grant.decision == Decision::Pending
        {
            grant.decision = decision;
        }
    }

    /// Answers one poll with a device code, for `client_id`. `slow_down` answers it so once.
    pub(crate) fn poll_device(
        &self,
        device_code: &str,
        client_id: &str,
        slow_down: bool,
    ) -> PollAnswer {
        let now = self.now();
        let answer = {
            let mut inner = self.inner();
            inner.devices.polls.push(now);
            match inner
                .devices
                .grants
                .get_mut(&crypto::token_digest(device_code))
                .filter(|g| g.client_id == client_id)
            {
                None => PollAnswer::Unknown,
                Some(g) if g.expires_at <= now => PollAnswer::Expired,
                Some(g) => match std::mem::replace(&mut g.decision, Decision::Redeemed) {
                    Decision::Approved(user) => PollAnswer::Approved {
                        user,
                        scopes: g.scopes.clone(),
                    },
                    Decision::Redeemed => PollAnswer::Spent,
                    other => {
                        g.decision = other.clone();
                        match other {
                            Decision::Declined => PollAnswer::Declined,
                            _ if slow_down => PollAnswer::SlowDown,
                            _ => PollAnswer::Pending,
                        }
                    }
                },
            }
        };
        self.changed();
        answer
    }

    /// When each poll with a device code arrived, oldest first, by the sandbox's clock.
    pub fn device_polls(&self) -> Vec<OffsetDateTime> {
        self.inner().devices.polls.clone()
    }
}

impl SandboxState {
    /// Uses up one `slow_down` answer the switches ask for, if any is left.
    pub(crate) fn take_device_slow_down(&self) -> bool {
        let mut switches = self.switches.lock().unwrap_or_else(|e| e.into_inner());
        if switches.device_slow_down > 0 {
            switches.device_slow_down -= 1;
            return true;
        }
        false
    }
}
