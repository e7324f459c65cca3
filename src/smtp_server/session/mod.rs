//! One SMTP session as an explicit state machine over any byte stream.
//!
//! [`State`] says what the client's next bytes are: a command (within the mail transaction
//! so far), a line of an AUTH exchange, message text after DATA, or the octets of a BDAT
//! chunk. [`Session::step`] reads that input and moves to the next state; for a command it
//! hands over to [`Session::command`], which maps each command, in each phase of the mail
//! transaction, to its reply and next state. Nothing else changes the state.

mod auth;
mod commands;
#[cfg(test)]
mod tests;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::data::DataReader;
use super::{Envelope, Reply, SessionInfo, SmtpConfig, SmtpHandler};
use auth::AuthStep;
use transport::Transport;

/// What the client's next bytes mean.
enum State {
    /// A command line.
    Command(Transaction),
    /// A line of an AUTH exchange, answering a `334`. AUTH starts only outside a mail
    /// transaction, so the session returns to [`Transaction::Idle`].
    Auth(AuthStep),
    /// Message text after DATA's `354`, up to `<CRLF>.<CRLF>`.
    Data {
        envelope: Envelope,
        reader: DataReader,
    },
    /// The `left` octets still to come of a BDAT chunk.
    Bdat { left: usize, chunk: Chunk },
}

/// The mail transaction, as far as it has gone.
enum Transaction {
    /// No MAIL yet, or the last transaction ended.
    Idle,
    /// MAIL accepted, no recipient yet.
    Mail { from: String },
    /// MAIL and at least one RCPT accepted.
    Rcpt(Envelope),
    /// Some BDAT chunks received, not yet the last one. DATA may no longer follow; RCPT
    /// still may.
    Chunking { envelope: Envelope, chunks: Chunks },
}

impl Transaction {
    /// The transaction with one more recipient. RCPT is refused before MAIL, so `Idle`
    /// never gets one.
    fn with_recipient(self, to: String) -> Self {
        match self {
            Self::Idle => Self::Idle,
            Self::Mail { from } => Self::Rcpt(Envelope {
                mail_from: from,
                rcpt_to: vec![to],
            }),
            Self::Rcpt(mut envelope) => {
                envelope.rcpt_to.push(to);
                Self::Rcpt(envelope)
            }
            Self::Chunking {
                mut envelope,
                chunks,
            } => {
                envelope.rcpt_to.push(to);
                Self::Chunking { envelope, chunks }
            }
        }
    }
}

/// A message assembled from BDAT chunks.
#[derive(Default)]
struct Chunks {
    /// The octets so far; empty once the message overflowed.
    message: Vec<u8>,
    too_big: bool,
}

impl Chunks {
    fn extend(&mut self, octets: &[u8], max_size: usize) {
        if !self.too_big && self.message.len() + octets.len() <= max_size {
            self.message.extend_from_slice(octets);
        } else {
            self.too_big = true;
            self.message = Vec::new();
        }
    }
}

/// Where the octets of a BDAT chunk go.
enum Chunk {
    /// Into the message, `size` octets in all; `last` ends it.
    Kept {
        envelope: Envelope,
        chunks: Chunks,
        size: usize,
        last: bool,
    },
    /// Nowhere: BDAT came out of sequence, but its octets follow regardless and must not be
    /// read as commands. Once they are skipped, `reply` refuses the BDAT.
    Refused {
        transaction: Transaction,
        reply: Reply,
    },
}

/// Why the session loop stopped.
enum Stop {
    /// The client said QUIT or went away; nothing more to say.
    Done,
    /// Close with this reply.
    Close(Reply),
}

type Step<T> = Result<T, Stop>;

/// A line read from the client.
enum Line {
    Complete(Vec<u8>),
    TooLong,
}

struct Session<S, H> {
    io: Transport<S>,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
    info: SessionInfo,
    bad_commands: u32,
    auth_failures: u32,
}

/// Runs one session to its end on `stream`, which is plain TCP (or any byte stream in tests).
pub async fn run_session<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    run(Transport::Plain(stream), false, peer, config, handler).await
}

/// Runs one session on a connection that speaks TLS from its first byte (implicit TLS, as on
/// port 465): the handshake first, then the session as if STARTTLS had been done.
pub async fn run_tls_session<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    let Some(tls) = config.tls.clone() else {
        return Err(std::io::Error::other(
            "implicit TLS without a TLS configuration",
        ));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = tokio::time::timeout(config.command_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    run(
        Transport::Tls(Box::new(stream)),
        true,
        peer,
        config,
        handler,
    )
    .await
}

async fn run<S, H>(
    io: Transport<S>,
    tls: bool,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    let mut session = Session {
        io,
        inbox: Vec::with_capacity(4096),
        outbox: Vec::with_capacity(1024),
        config,
        handler,
        info: SessionInfo {
            peer,
            tls,
            helo: None,
            auth: None,
        },
        bad_commands: 0,
        auth_failures: 0,
    };
    let result = session.run().await;
    let _ = session.io.shutdown().await;
    session.handler.on_disconnect(&session.info);
    result
}

fn ok(text: impl Into<String>) -> Reply {
    Reply::new(250, "2.0.0", text)
}

fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, "5.5.1", text)
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    async fn run(&mut self) -> std::io::Result<()> {
        if let Err(reply) = self.handler.on_connect(self.info.peer).await {
            self.reply(&reply);
            return self.flush().await;
        }
        let banner = Reply::new(
            220,
            "",
            format!("{} {}", self.config.hostname, self.config.banner),
        );
        self.reply(&banner);
        let stop = self.serve().await;
        if let Stop::Close(reply) = stop {
            self.reply(&reply);
        }
        self.flush().await
    }

    async fn serve(&mut self) -> Stop {
        let mut state = State::Command(Transaction::Idle);
        loop {
            state = match self.step(state).await {
                Ok(next) => next,
                Err(stop) => return stop,
            };
        }
    }

    /// Reads what `state` expects, answers it and yields the next state.
    async fn step(&mut self, state: State) -> Step<State> {
        match state {
            State::Command(transaction) => match self.next_line().await? {
                Line::TooLong => {
                    self.refuse(transaction, Reply::new(500, "5.5.6", "Line too long"))
                }
                Line::Complete(line) => self.command(transaction, &line).await,
            },
            State::Auth(step) => match self.next_line().await? {
                Line::TooLong => Err(Stop::Close(Reply::new(
                    500,
                    "5.5.6",
                    "Authentication exchange line too long",
                ))),
                Line::Complete(line) => {
                    let response = String::from_utf8_lossy(&line).trim_end().to_owned();
                    self.auth_response(step, response).await
                }
            },
            State::Data { envelope, reader } => self.data(envelope, reader).await,
            State::Bdat { left, chunk } => self.chunk(left, chunk).await,
        }
    }

    /// Answers one command line within `transaction`.
    async fn command(&mut self, transaction: Transaction, line: &[u8]) -> Step<State> {
        let request = match commands::parse(line) {
            Ok(request) => request,
            Err(reply) => return self.refuse(transaction, reply),
        };
        match request {
            Request::Ehlo { host } => {
                self.greet(host, true);
                Ok(State::Command(Transaction::Idle))
            }
            Request::Helo { host } => {
                self.greet(host, false);
                Ok(State::Command(Transaction::Idle))
            }
            Request::StartTls => self.starttls(transaction).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(transaction, mechanism, initial_response).await,
            Request::Mail { from } => self.mail(transaction, from.address, from.size).await,
            Request::Rcpt { to } => self.rcpt(transaction, to.address).await,
            Request::Data => self.data_command(transaction),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat_command(transaction, chunk_size, is_last),
            Request::Rset => {
                self.reply(&ok("Resetting"));
                Ok(State::Command(Transaction::Idle))
            }
            Request::Noop { .. } => {
                self.reply(&ok("OK"));
                Ok(State::Command(transaction))
            }
            Request::Quit => {
                self.reply(&Reply::new(
                    221,
                    "2.0.0",
                    "Service closing transmission channel",
                ));
                Err(Stop::Done)
            }
            Request::Vrfy { .. } => {
                self.reply(&Reply::new(
                    252,
                    "2.5.2",
                    "Cannot VRFY user, but will accept message",
                ));
                Ok(State::Command(transaction))
            }
            Request::Help { .. } => {
                self.reply(&Reply::new(214, "2.0.0", "See RFC 5321"));
                Ok(State::Command(transaction))
            }
            _ => self.refuse(
                transaction,
                Reply::new(502, "5.5.1", "Command not implemented"),
            ),
        }
    }

    fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.outbox);
    }

    /// Answers a bad or out-of-sequence command, which leaves the transaction as it was,
    /// and closes the session once there were too many.
    fn refuse(&mut self, transaction: Transaction, reply: Reply) -> Step<State> {
        self.bad_commands += 1;
        self.reply(&reply);
        if self.bad_commands >= self.config.max_bad_commands {
            return Err(Stop::Close(Reply::new(
                421,
                "4.7.0",
                "Too many errors; closing connection",
            )));
        }
        Ok(State::Command(transaction))
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbox.is_empty() {
            let out = std::mem::take(&mut self.outbox);
            self.io.write_all(&out).await?;
            self.io.flush().await?;
        }
        Ok(())
    }

    /// Reads more bytes into the inbox, flushing pending replies first (so pipelined commands
    /// are answered in one batch). `Ok(false)` at end of stream.
    async fn fill(&mut self, timeout: Duration) -> Step<bool> {
        self.flush().await.map_err(|_| Stop::Done)?;
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(timeout, self.io.read(&mut chunk)).await {
            Err(_) => Err(Stop::Close(Reply::new(
                421,
                "4.4.2",
                format!(
                    "{} Timeout waiting for client input; closing connection",
                    self.config.hostname
                ),
            ))),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.inbox.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// The next line; the session is done at end of stream. Over-long lines are skipped whole.
    async fn next_line(&mut self) -> Step<Line> {
        let max = self.config.max_line_length;
        let mut discarding = false;
        loop {
            if let Some(pos) = self.inbox.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbox.drain(..=pos).collect();
                if discarding || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if self.inbox.len() > max {
                discarding = true;
                self.inbox.clear();
            }
            if !self.fill(self.config.command_timeout).await? {
                return Err(Stop::Done);
            }
        }
    }
}
