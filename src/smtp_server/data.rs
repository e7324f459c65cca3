//! The DATA phase: dot-unstuffing and the end-of-data marker, strictly by RFC 5321.
//!
//! Written here rather than taken from smtp-proto because the end of data must be exactly
//! `<CRLF>.<CRLF>` and nothing else: smtp-proto's receiver also ends at `<CRLF>.<CR><CR><LF>`,
//! the kind of disagreement between two SMTP servers that SMTP smuggling exploits. Bare CR and
//! bare LF never start or end a line here; they are recorded so the session can refuse the
//! message, as Exchange Online does (`550 5.6.11 … BareLinefeedsAreIllegal`).

/// Where the reader is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very beginning).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// Inside a line.
    Body,
    /// Inside a line, just after a CR.
    Cr,
}

/// Accumulates one message from DATA, chunk by chunk.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    message: Vec<u8>,
    max_size: usize,
    too_big: bool,
    bare_line_ending: bool,
}

/// What a finished DATA phase produced.
#[derive(Debug, PartialEq, Eq)]
pub struct DataOutcome {
    /// The unstuffed message (empty when it was too big).
    pub message: Vec<u8>,
    /// The message was larger than the limit; its bytes were discarded.
    pub too_big: bool,
    /// The message contained a CR or LF that was not part of a CRLF pair.
    pub bare_line_ending: bool,
}

impl DataReader {
    pub fn new(max_size: usize) -> Self {
        Self {
            state: State::LineStart,
            message: Vec::new(),
            max_size,
            too_big: false,
            bare_line_ending: false,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.too_big {
            return;
        }
        if self.message.len() >= self.max_size {
            self.too_big = true;
            self.message = Vec::new();
            return;
        }
        self.message.push(byte);
    }

    /// Handles a byte inside a line.
    fn body(&mut self, byte: u8) {
        match byte {
            b'\r' => {
                self.push(byte);
                self.state = State::Cr;
            }
            b'\n' => {
                self.bare_line_ending = true;
                self.push(byte);
                self.state = State::Body;
            }
            _ => {
                self.push(byte);
                self.state = State::Body;
            }
        }
    }

    /// Consumes bytes; answers how many it used once the end-of-data marker was seen (the rest
    /// belongs to the next command), or `None` when it needs more.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &byte) in bytes.iter().enumerate() {
            match self.state {
                State::LineStart => match byte {
                    b'.' => self.state = State::Dot,
                    _ => self.body(byte),
                },
                // A leading dot is removed (RFC 5321 4.5.2); what follows is ordinary text.
                State::Dot => match byte {
                    b'\r' => self.state = State::DotCr,
                    _ => self.body(byte),
                },
                State::DotCr => match byte {
                    b'\n' => return Some(i + 1),
                    _ => {
                        // "." CR X: the dot was stuffing, the CR is bare.
                        self.bare_line_ending = true;
                        self.push(b'\r');
                        self.state = State::Cr;
                        self.after_cr(byte);
                    }
                },
                State::Body => self.body(byte),
                State::Cr => self.after_cr(byte),
            }
        }
        None
    }

    fn after_cr(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                self.push(byte);
                self.state = State::LineStart;
            }
            _ => {
                self.bare_line_ending = true;
                self.body(byte);
            }
        }
    }

    pub fn finish(self) -> DataOutcome {
        DataOutcome {
            message: self.message,
            too_big: self.too_big,
            bare_line_ending: self.bare_line_ending,
        }
    }
}

/// Dot-stuffs a message for sending with DATA and appends the end-of-data marker: the inverse
/// of [`DataReader`], for tests and for clients of our own.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut line_start = true;
    for (i, &byte) in message.iter().enumerate() {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n' && i > 0 && message[i - 1] == b'\r';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (Option<usize>, DataOutcome) {
        let mut reader = DataReader::new(1 << 20);
        let used = reader.feed(input);
        (used, reader.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs_dots() {
        let (used, out) = read(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n");
        assert_eq!(used, Some(32));
        assert_eq!(out.message, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert!(!out.bare_line_ending);
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let (used, out) = read(b".\r\n");
        assert_eq!(used, Some(3));
        assert!(out.message.is_empty());
    }

    #[test]
    fn smuggling_sequences_do_not_end_data() {
        for seq in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\r\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
        ] {
            let mut input = b"a".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let (used, out) = read(&input);
            assert_eq!(used, None, "{seq:?} ended DATA");
            assert!(out.bare_line_ending, "{seq:?} not flagged");
        }
    }

    #[test]
    fn the_marker_may_arrive_split_across_reads() {
        let mut reader = DataReader::new(100);
        assert_eq!(reader.feed(b"hello\r"), None);
        assert_eq!(reader.feed(b"\n."), None);
        assert_eq!(reader.feed(b"\r"), None);
        assert_eq!(reader.feed(b"\nNOOP\r\n"), Some(1));
        assert_eq!(reader.finish().message, b"hello\r\n");
    }

    #[test]
    fn an_oversized_message_is_dropped_but_read_to_its_end() {
        let mut reader = DataReader::new(4);
        assert_eq!(reader.feed(b"0123456789\r\n.\r\n"), Some(15));
        let out = reader.finish();
        assert!(out.too_big);
        assert!(out.message.is_empty());
    }

    #[test]
    fn dot_stuffing_round_trips() {
        let message = b"line\r\n.dot\r\n..two\r\nend";
        let stuffed = dot_stuff(message);
        let (used, out) = read(&stuffed);
        assert_eq!(used, Some(stuffed.len()));
        assert_eq!(out.message, b"line\r\n.dot\r\n..two\r\nend\r\n");
    }
}
