//! The commands of the mail transaction (EHLO, STARTTLS, MAIL, RCPT, DATA, BDAT) and the
//! message phases that follow DATA and BDAT.

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    Chunk, Chunks, DataReader, Envelope, Reply, Session, SmtpHandler, State, Step, Stop,
    Transaction, Transport, bad_sequence,
};
use crate::smtp_server::data::DataOutcome;

/// Parses a command line, or says why it is refused.
pub(super) fn parse(line: &[u8]) -> Result<Request<String>, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(500, "5.5.2", "Syntax error: NUL in command"));
    }
    match Request::parse(&mut line.iter()) {
        Ok(request) => Ok(request.into_owned()),
        Err(smtp_proto::Error::UnknownCommand) | Err(smtp_proto::Error::NeedsMoreData { .. }) => {
            Err(Reply::new(500, "5.5.2", "Unrecognized command"))
        }
        Err(smtp_proto::Error::InvalidSenderAddress) => {
            Err(Reply::new(501, "5.1.7", "Invalid sender address"))
        }
        Err(smtp_proto::Error::InvalidRecipientAddress) => {
            Err(Reply::new(501, "5.1.3", "Invalid recipient address"))
        }
        Err(smtp_proto::Error::UnsupportedParameter { .. })
        | Err(smtp_proto::Error::InvalidParameter { .. }) => {
            Err(Reply::new(555, "5.5.4", "Unsupported or invalid parameter"))
        }
        Err(_) => Err(Reply::new(
            501,
            "5.5.4",
            "Syntax error in parameters or arguments",
        )),
    }
}

fn size_exceeded() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    /// EHLO or HELO; the caller starts a new transaction.
    pub(super) fn greet(&mut self, host: String, extended: bool) {
        self.info.helo = Some(host);
        let hello = format!("{} Hello [{}]", self.config.hostname, self.info.peer.ip());
        if !extended {
            self.reply(&Reply::new(250, "", hello));
            return;
        }
        let mut lines = vec![
            hello,
            format!("SIZE {}", self.config.max_message_size),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "8BITMIME".into(),
            "CHUNKING".into(),
        ];
        if self.config.tls.is_some() && !self.info.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed_now() {
            let names: Vec<_> = self.config.mechanisms.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        }
        self.reply(&Reply::new(250, "", lines.join("\n")));
    }

    pub(super) async fn starttls(&mut self, transaction: Transaction) -> Step<State> {
        let Some(tls) = self.config.tls.clone() else {
            return self.refuse(
                transaction,
                Reply::new(502, "5.5.1", "STARTTLS not available"),
            );
        };
        if self.info.tls {
            return self.refuse(transaction, bad_sequence("TLS already active"));
        }
        // Anything pipelined after STARTTLS was sent in the clear and must not be trusted as if
        // it came over TLS (CVE-2011-0411).
        if !self.inbox.is_empty() {
            return Err(Stop::Close(Reply::new(
                554,
                "5.5.1",
                "Commands pipelined after STARTTLS; closing connection",
            )));
        }
        self.reply(&Reply::new(220, "2.0.0", "SMTP server ready"));
        self.flush().await.map_err(|_| Stop::Done)?;
        let Transport::Plain(plain) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return Err(Stop::Done);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        match tokio::time::timeout(self.config.command_timeout, acceptor.accept(plain)).await {
            Ok(Ok(stream)) => {
                self.io = Transport::Tls(Box::new(stream));
                self.info.tls = true;
                // RFC 3207: forget everything learnt before the handshake.
                self.info.helo = None;
                self.info.auth = None;
                Ok(State::Command(Transaction::Idle))
            }
            _ => Err(Stop::Done),
        }
    }

    pub(super) async fn mail(
        &mut self,
        transaction: Transaction,
        from: String,
        declared_size: usize,
    ) -> Step<State> {
        if self.info.helo.is_none() {
            return self.refuse(transaction, bad_sequence("Send EHLO first"));
        }
        if !matches!(transaction, Transaction::Idle) {
            return self.refuse(transaction, bad_sequence("Sender already specified"));
        }
        if self.config.require_auth && self.info.auth.is_none() {
            match self.handler.identify(&self.info).await {
                Some(identity) => self.info.auth = Some(identity),
                None => {
                    let reply = self.config.auth_required_reply.clone();
                    return self.refuse(transaction, reply);
                }
            }
        }
        if declared_size > self.config.max_message_size {
            self.reply(&size_exceeded());
            return Ok(State::Command(transaction));
        }
        if from.chars().any(char::is_control) {
            return self.refuse(
                transaction,
                Reply::new(501, "5.1.7", "Invalid sender address"),
            );
        }
        match self.handler.mail_from(&self.info, &from).await {
            Ok(()) => {
                self.reply(&Reply::new(250, "2.1.0", "Sender OK"));
                Ok(State::Command(Transaction::Mail { from }))
            }
            Err(reply) => {
                self.reply(&reply);
                Ok(State::Command(transaction))
            }
        }
    }

    pub(super) async fn rcpt(&mut self, transaction: Transaction, to: String) -> Step<State> {
        let (from, recipients) = match &transaction {
            Transaction::Idle => {
                return self.refuse(transaction, bad_sequence("Need MAIL command first"));
            }
            Transaction::Mail { from } => (from, 0),
            Transaction::Rcpt(envelope) | Transaction::Chunking { envelope, .. } => {
                (&envelope.mail_from, envelope.rcpt_to.len())
            }
        };
        if recipients >= self.config.max_recipients {
            self.reply(&Reply::new(452, "4.5.3", "Too many recipients"));
            return Ok(State::Command(transaction));
        }
        if to.is_empty() || to.chars().any(char::is_control) {
            return self.refuse(
                transaction,
                Reply::new(501, "5.1.3", "Invalid recipient address"),
            );
        }
        match self.handler.rcpt_to(&self.info, from, &to).await {
            Ok(()) => {
                self.reply(&Reply::new(250, "2.1.5", "Recipient OK"));
                Ok(State::Command(transaction.with_recipient(to)))
            }
            Err(reply) => {
                self.reply(&reply);
                Ok(State::Command(transaction))
            }
        }
    }

    pub(super) fn data_command(&mut self, transaction: Transaction) -> Step<State> {
        let reply = match transaction {
            Transaction::Rcpt(envelope) => {
                self.reply(&Reply::new(
                    354,
                    "",
                    "Start mail input; end with <CRLF>.<CRLF>",
                ));
                let reader = DataReader::new(self.config.max_message_size);
                return Ok(State::Data { envelope, reader });
            }
            Transaction::Chunking { .. } => bad_sequence("DATA not allowed after BDAT"),
            Transaction::Idle => bad_sequence("Need MAIL command first"),
            Transaction::Mail { .. } => Reply::new(554, "5.5.1", "No valid recipients"),
        };
        self.refuse(transaction, reply)
    }

    /// Message text after DATA, as far as it has come.
    pub(super) async fn data(&mut self, envelope: Envelope, mut reader: DataReader) -> Step<State> {
        if let Some(used) = reader.feed(&self.inbox) {
            self.inbox.drain(..used);
            let DataOutcome {
                message,
                too_big,
                bare_line_ending,
            } = reader.finish();
            if too_big {
                self.reply(&size_exceeded());
            } else {
                self.finish_message(envelope, message, bare_line_ending)
                    .await;
            }
            return Ok(State::Command(Transaction::Idle));
        }
        self.inbox.clear();
        if !self.fill(self.config.data_timeout).await? {
            return Err(Stop::Done);
        }
        Ok(State::Data { envelope, reader })
    }

    pub(super) fn bdat_command(
        &mut self,
        transaction: Transaction,
        size: usize,
        last: bool,
    ) -> Step<State> {
        let chunk = match transaction {
            Transaction::Idle => Chunk::Refused {
                transaction,
                reply: bad_sequence("Need MAIL command first"),
            },
            Transaction::Mail { .. } => Chunk::Refused {
                transaction,
                reply: Reply::new(554, "5.5.1", "No valid recipients"),
            },
            Transaction::Rcpt(envelope) => Chunk::Kept {
                envelope,
                chunks: Chunks::default(),
                size,
                last,
            },
            Transaction::Chunking { envelope, chunks } => Chunk::Kept {
                envelope,
                chunks,
                size,
                last,
            },
        };
        Ok(State::Bdat { left: size, chunk })
    }

    /// The octets of a BDAT chunk, as far as they have come.
    pub(super) async fn chunk(&mut self, left: usize, mut chunk: Chunk) -> Step<State> {
        let take = left.min(self.inbox.len());
        if let Chunk::Kept { chunks, .. } = &mut chunk {
            chunks.extend(&self.inbox[..take], self.config.max_message_size);
        }
        self.inbox.drain(..take);
        let left = left - take;
        if left > 0 {
            if !self.fill(self.config.data_timeout).await? {
                return Err(Stop::Done);
            }
            return Ok(State::Bdat { left, chunk });
        }
        match chunk {
            Chunk::Refused { transaction, reply } => self.refuse(transaction, reply),
            Chunk::Kept {
                envelope,
                chunks,
                size,
                last: false,
            } => {
                self.reply(&Reply::new(250, "2.0.0", format!("{size} octets received")));
                Ok(State::Command(Transaction::Chunking { envelope, chunks }))
            }
            Chunk::Kept {
                chunks: Chunks { too_big: true, .. },
                ..
            } => {
                self.reply(&size_exceeded());
                Ok(State::Command(Transaction::Idle))
            }
            Chunk::Kept {
                envelope, chunks, ..
            } => {
                let bare = has_bare_line_ending(&chunks.message);
                self.finish_message(envelope, chunks.message, bare).await;
                Ok(State::Command(Transaction::Idle))
            }
        }
    }

    /// Hands a complete message to the handler, unless it has bare line endings; the
    /// transaction ends either way.
    async fn finish_message(
        &mut self,
        envelope: Envelope,
        message: Vec<u8>,
        bare_line_ending: bool,
    ) {
        if bare_line_ending {
            self.reply(&Reply::new(
                550,
                "5.6.11",
                "SMTPSEND.BareLinefeedsAreIllegal; message contains bare CR or LF characters, which cannot be sent",
            ));
            return;
        }
        let reply = self.handler.deliver(&self.info, envelope, message).await;
        self.reply(&reply);
    }
}

pub(super) fn has_bare_line_ending(message: &[u8]) -> bool {
    message.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || message[i - 1] != b'\r',
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}
