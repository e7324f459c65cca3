use super::auth::parse_xoauth2;
use super::commands::has_bare_line_ending;

#[test]
fn xoauth2_responses_are_split() {
    assert_eq!(
        parse_xoauth2(b"user=ann@contoso.com\x01auth=Bearer abc.def\x01\x01"),
        Some(("ann@contoso.com".into(), "abc.def".into()))
    );
    assert_eq!(parse_xoauth2(b"user=x\x01auth=Basic abc\x01\x01"), None);
    assert_eq!(parse_xoauth2(b"auth=Bearer abc\x01\x01"), None);
}

#[test]
fn bare_line_endings_are_found() {
    assert!(!has_bare_line_ending(b"a\r\nb\r\n"));
    assert!(has_bare_line_ending(b"a\nb"));
    assert!(has_bare_line_ending(b"a\rb"));
    assert!(has_bare_line_ending(b"\n"));
}
