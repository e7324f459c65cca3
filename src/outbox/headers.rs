//! The header section of raw MIME as a receiver reads it: every field in order, folded lines
//! joined, duplicates seen.
//!
//! mail-parser answers one value per field name (the last), while Exchange and most
//! receivers act on the first. A message with two `From:` fields would pass a check of the
//! last one and be sent as the first, so raw mail is read here field by field, and a field
//! RFC 5322 §3.6 allows once is refused when it comes twice.

/// Fields RFC 5322 §3.6 allows at most once, as they are usually written.
pub const SINGLE: [&str; 11] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

/// Fields whose addresses say who sends: each must be the mailbox that sends it.
pub const ORIGINATOR: [&str; 4] = ["From", "Sender", "Resent-From", "Resent-Sender"];

/// One field: its name as written (without trailing blanks) and its unfolded value.
#[derive(Debug, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: Vec<u8>,
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A line of the header section that is neither a field nor the continuation of one.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAField {
    /// 1-based.
    pub line: usize,
}

/// The fields of a header section (everything before the blank line, CRLF or LF line ends).
pub fn fields(header: &[u8]) -> Result<Vec<Field<'_>>, NotAField> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let lines: Vec<&[u8]> = header.split(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // Only the end of the last line: an empty line before it (a message that starts
            // with one) would make the receiver read all this as the body.
            if i + 1 < lines.len() {
                return Err(NotAField { line: i + 1 });
            }
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match out.last_mut() {
                Some(field) => field.value.extend_from_slice(line),
                None => return Err(NotAField { line: i + 1 }),
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(NotAField { line: i + 1 });
        };
        let name = trim_end(&line[..colon]);
        // RFC 5322: printable US-ASCII except the colon. `From :` (obsolete syntax) is From.
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            return Err(NotAField { line: i + 1 });
        }
        out.push(Field {
            name,
            value: line[colon + 1..].to_vec(),
        });
    }
    Ok(out)
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// The first field of [`SINGLE`] that appears more than once, by its usual spelling.
pub fn duplicate(fields: &[Field<'_>]) -> Option<&'static str> {
    SINGLE
        .into_iter()
        .find(|name| fields.iter().filter(|f| f.is(name)).count() > 1)
}

/// The entries of one address field's value (`Name <a@b>, c@d`), as a receiver parses them: an
/// entry without an address (a bare name or quoted string) is an empty string, and a group adds
/// one, so such a field never reads as exactly one address.
pub fn addresses(value: &[u8]) -> Vec<String> {
    let mut one = b"From:".to_vec();
    one.extend_from_slice(value);
    one.extend_from_slice(b"\r\n\r\n");
    let Some(message) = mail_parser::MessageParser::default().parse(&one) else {
        return Vec::new();
    };
    let address = |a: &mail_parser::Addr<'_>| a.address().unwrap_or_default().to_owned();
    match message.from() {
        Some(mail_parser::Address::List(list)) => list.iter().map(address).collect(),
        Some(mail_parser::Address::Group(groups)) => std::iter::once(String::new())
            .chain(groups.iter().flat_map(|g| g.addresses.iter().map(address)))
            .collect(),
        None => Vec::new(),
    }
}

/// An entry as a person reads it in an error.
pub fn shown(entries: &[String]) -> String {
    entries
        .iter()
        .map(|e| {
            if e.is_empty() {
                "(a name without an address)"
            } else {
                e.as_str()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses of every `From` field of a whole message (more than one From field answers
/// them all, so a caller comparing with one address sees the second).
pub fn from_addresses(message: &[u8]) -> Vec<String> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len());
    match fields(&message[..end]) {
        Ok(fields) => fields
            .iter()
            .filter(|f| f.is("From"))
            .flat_map(|f| addresses(&f.value))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn folded_lines_join_their_field_and_obsolete_spacing_still_names_it() {
        let header = b"From : CEO <ceo@bigbank.example>\r\nSubject: a\r\n long one\r\nX-A:1\r\n";
        let fields = fields(header).unwrap();
        assert_eq!(fields.len(), 3);
        assert!(fields[0].is("from"));
        assert_eq!(fields[1].value, b" a long one");
        assert_eq!(addresses(&fields[0].value), ["ceo@bigbank.example"]);
    }

    #[test]
    fn a_second_from_is_a_duplicate_whatever_its_case() {
        let header =
            b"From: CEO <ceo@bigbank.example>\r\nTo: a@b.c\r\nfrom: support@contoso.com\r\n";
        assert_eq!(duplicate(&fields(header).unwrap()), Some("From"));
        assert_eq!(
            from_addresses(
                b"From: CEO <ceo@bigbank.example>\r\nFROM: support@contoso.com\r\n\r\nhi"
            ),
            ["ceo@bigbank.example", "support@contoso.com"]
        );
        let resent = b"From: a@b.c\r\nResent-From: x@y.z\r\nResent-From: v@w.x\r\n";
        assert_eq!(
            duplicate(&fields(resent).unwrap()),
            None,
            "resent blocks repeat"
        );
    }

    #[test]
    fn a_name_without_an_address_or_a_group_is_an_entry_of_its_own() {
        assert_eq!(
            addresses(b" support@contoso.com, \"ceo@bigbank.example\""),
            ["support@contoso.com", ""]
        );
        assert_eq!(
            addresses(b" support@contoso.com, ceo"),
            ["support@contoso.com", ""]
        );
        assert_eq!(
            addresses(b" Staff: support@contoso.com;"),
            ["", "support@contoso.com"]
        );
        assert_eq!(
            shown(&addresses(b" a@b.c, x")),
            "a@b.c, (a name without an address)"
        );
    }

    #[test]
    fn a_line_that_is_no_field_is_refused() {
        assert_eq!(
            fields(b"From: a@b.c\r\nnot a field\r\n"),
            Err(NotAField { line: 2 })
        );
        assert_eq!(fields(b" folded first\r\n"), Err(NotAField { line: 1 }));
        assert_eq!(fields(b"\r\nFrom: a@b.c\r\n"), Err(NotAField { line: 1 }));
        assert_eq!(fields(b"Bad Name: x\r\n"), Err(NotAField { line: 1 }));
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(SINGLE.to_vec()).prop_map(str::to_owned),
            prop::sample::select(vec!["X-Mailer", "Resent-From", "Comments", "Received"])
                .prop_map(str::to_owned),
        ]
        .prop_flat_map(|n| {
            // Any mix of case, and sometimes the obsolete space before the colon.
            (
                Just(n.clone()),
                prop::collection::vec(any::<bool>(), n.len()),
                any::<bool>(),
            )
        })
        .prop_map(|(n, upper, space)| {
            let mut s: String = n
                .chars()
                .zip(upper)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            if space {
                s.push(' ');
            }
            s
        })
    }

    proptest! {
        /// The duplicate rule: a header is refused exactly when a field of [`SINGLE`] appears
        /// twice, however its names are spelled, folded or ordered.
        #[test]
        fn the_duplicate_rule_matches_a_count_of_the_names(
            names in prop::collection::vec(name(), 1..12),
            fold in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut header = Vec::new();
            for (i, n) in names.iter().enumerate() {
                header.extend_from_slice(format!("{n}: value {i}\r\n").as_bytes());
                if fold[i] {
                    header.extend_from_slice(b"\t continued\r\n");
                }
            }
            let fields = fields(&header).unwrap();
            prop_assert_eq!(fields.len(), names.len());
            let expected = SINGLE.into_iter().find(|s| {
                names.iter().filter(|n| n.trim_end().eq_ignore_ascii_case(s)).count() > 1
            });
            prop_assert_eq!(duplicate(&fields), expected);
        }

        /// Whatever bytes come, reading a header never panics, and every From field found is one
        /// that a line of the input starts with.
        #[test]
        fn any_header_is_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(fields) = fields(&bytes) {
                for f in fields.iter().filter(|f| f.is("From")) {
                    let _ = addresses(&f.value);
                }
            }
            let _ = from_addresses(&bytes);
        }
    }
}
