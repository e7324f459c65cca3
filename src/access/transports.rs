//! Which [`Transport`] a mailbox sends through: SMTP submission or Microsoft Graph.

use super::graph::GraphSendMail;
use super::transport::{SmtpSubmission, Transport};
use crate::domain::mailbox::{Mailbox, TransportKind};

/// The transport the mailbox sends through.
pub fn transport_for(mailbox: &Mailbox) -> &'static dyn Transport {
    match mailbox.transport {
        TransportKind::Smtp => &SmtpSubmission,
        TransportKind::Graph => &GraphSendMail,
    }
}
