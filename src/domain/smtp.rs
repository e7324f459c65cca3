//! SMTP replies as Herald keeps and judges them: the reply code, the enhanced status code
//! (RFC 3463, e.g. `5.7.139`) and the text, and what a reply means for the mail.

/// A reply of an SMTP server, or what went wrong when none answered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SmtpReply {
    /// The reply code, e.g. 250 or 432; absent when no server answered (a network error).
    pub code: Option<u16>,
    /// The enhanced status code, e.g. `4.3.2`.
    pub enhanced: Option<String>,
    /// The reply text, or what went wrong.
    pub text: String,
}

/// The enhanced status code that starts `text`, if it starts with one: three dot-separated
/// runs of digits (`5.7.139`), as servers that announce ENHANCEDSTATUSCODES put it before
/// their text. The one place Herald reads an enhanced code.
pub fn enhanced_code(text: &str) -> Option<&str> {
    text.split_whitespace().next().filter(|token| {
        let parts: Vec<_> = token.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    })
}

impl SmtpReply {
    /// A reply with this code and text; the enhanced code is read from the text.
    pub fn new(code: Option<u16>, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            code,
            enhanced: enhanced_code(&text).map(str::to_owned),
            text,
        }
    }

    /// What went wrong when no server answered (a timeout, a network error, a refusal of
    /// Herald's own): no code, no enhanced code.
    pub fn no_reply(text: impl Into<String>) -> Self {
        Self {
            code: None,
            enhanced: None,
            text: text.into(),
        }
    }

    /// Reads a reply written as one line, `250 2.0.0 OK <id>`: the code, then the text
    /// (which keeps its enhanced code).
    pub fn parse(line: &str) -> Self {
        let (code, text) = line.split_once(' ').unwrap_or((line, ""));
        Self::new(code.parse().ok(), text)
    }

    /// The reply as one line, e.g. `432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded`.
    pub fn line(&self) -> String {
        match self.code {
            Some(code) => format!("{code} {}", self.text),
            None => self.text.clone(),
        }
    }

    /// Whether trying again later may succeed: a 4xx, or no reply at all (a timeout, a
    /// network error).
    pub fn is_transient(&self) -> bool {
        self.code.is_none_or(|c| (400..500).contains(&c))
    }

    /// Whether the server refused the credentials (530, 534, 535, 538).
    pub fn is_auth_refusal(&self) -> bool {
        matches!(self.code, Some(530 | 534 | 535 | 538))
    }

    /// Whether the server said to slow down: Exchange's `432 4.3.2` (too many connections or
    /// messages), or another 4xx that names a rate. The mailbox backs off.
    pub fn is_rate_limit(&self) -> bool {
        let text = self.text.to_ascii_lowercase();
        self.code == Some(432)
            || (self.code.is_some_and(|c| (400..500).contains(&c))
                && (text.contains("rate limit")
                    || text.contains("submission rate")
                    || text.contains("unusual rate")
                    || text.contains("throttl")))
    }

    /// Whether the mailbox's daily quota is spent: Exchange's `550 5.1.90` and
    /// `SubmissionQuotaExceeded`, Gmail's `550 5.4.5`. The mail waits, it does not fail.
    pub fn is_quota(&self) -> bool {
        matches!(self.enhanced.as_deref(), Some("5.1.90") | Some("5.4.5"))
            || self.text.contains("SubmissionQuotaExceeded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: &str, text: &str) -> SmtpReply {
        SmtpReply {
            code: Some(code),
            enhanced: Some(enhanced.into()),
            text: format!("{enhanced} {text}"),
        }
    }

    #[test]
    fn only_replies_about_rates_back_the_mailbox_off() {
        assert!(
            reply(
                432,
                "4.3.2",
                "STOREDRV.ClientSubmit; sender thread limit exceeded"
            )
            .is_rate_limit()
        );
        assert!(
            reply(
                421,
                "4.7.28",
                "Our system has detected an unusual rate of mail"
            )
            .is_rate_limit()
        );
        assert!(!reply(452, "4.5.3", "Too many recipients").is_rate_limit());
        assert!(!reply(451, "4.3.2", "Temporary server error").is_rate_limit());
        assert!(
            reply(
                554,
                "5.2.0",
                "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
            )
            .is_quota()
        );
        assert!(reply(550, "5.4.5", "Daily user sending limit exceeded").is_quota());
        assert!(!reply(550, "5.1.10", "RESOLVER.ADR.RecipientNotFound").is_quota());
    }

    #[test]
    fn the_enhanced_code_is_read_only_from_the_start_of_the_text() {
        assert_eq!(
            enhanced_code("5.7.139 Authentication unsuccessful"),
            Some("5.7.139")
        );
        assert_eq!(enhanced_code("2.0.0"), Some("2.0.0"));
        assert_eq!(enhanced_code("OK 2.0.0 queued"), None);
        assert_eq!(enhanced_code("5.7 Authentication unsuccessful"), None);
        assert_eq!(enhanced_code("5..1 x"), None);
        assert_eq!(enhanced_code("5.7.x x"), None);
        assert_eq!(enhanced_code(""), None);
    }

    #[test]
    fn a_reply_line_is_split_into_code_enhanced_code_and_text() {
        let reply = SmtpReply::parse("250 2.0.0 OK <id@x> [Hostname=y]");
        assert_eq!(reply.code, Some(250));
        assert_eq!(reply.enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(reply.text, "2.0.0 OK <id@x> [Hostname=y]");
        assert_eq!(reply.line(), "250 2.0.0 OK <id@x> [Hostname=y]");
        let bare = SmtpReply::parse("250 OK");
        assert_eq!((bare.code, bare.enhanced), (Some(250), None));
    }

    #[test]
    fn no_reply_and_4xx_are_transient_and_auth_codes_are_refusals() {
        assert!(SmtpReply::no_reply("connection reset").is_transient());
        assert!(SmtpReply::parse("451 4.7.500 Server busy").is_transient());
        assert!(!SmtpReply::parse("550 5.1.10 Unknown").is_transient());
        assert!(SmtpReply::parse("535 5.7.3 Authentication unsuccessful").is_auth_refusal());
        assert!(!SmtpReply::parse("550 5.7.30 Basic auth retired").is_auth_refusal());
    }
}
