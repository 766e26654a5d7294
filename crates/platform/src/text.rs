//! Texts strangers give the platform that other people will be shown:
//! names, subjects, greetings, reasons. Control characters (NUL, ESC and
//! the rest) and the invisible characters that reorder or hide text
//! (bidirectional overrides and isolates, zero-width joiners) are refused,
//! so that a name cannot corrupt a terminal, a log line or a CSV, nor show
//! one thing while being another (a right-to-left override turns
//! "cod.exe" backwards on screen).

/// Characters that change how surrounding text is ordered or shown while
/// showing nothing themselves.
const INVISIBLE_FORMATTING: [char; 16] = [
    '\u{061C}', // Arabic letter mark
    '\u{200B}', // zero-width space
    '\u{200C}', // zero-width non-joiner
    '\u{200D}', // zero-width joiner
    '\u{200E}', // left-to-right mark
    '\u{200F}', // right-to-left mark
    '\u{202A}', // left-to-right embedding
    '\u{202B}', // right-to-left embedding
    '\u{202C}', // pop directional formatting
    '\u{202D}', // left-to-right override
    '\u{202E}', // right-to-left override
    '\u{2066}', // left-to-right isolate
    '\u{2067}', // right-to-left isolate
    '\u{2068}', // first strong isolate
    '\u{2069}', // pop directional isolate
    '\u{FEFF}', // zero-width no-break space
];

/// Why a text is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextProblem {
    Empty,
    TooLong,
    /// A control or invisible formatting character.
    Unprintable,
}

/// A text of 1 to `chars_max` characters, not only spaces, with no control
/// or invisible formatting characters.
pub fn check_display_text(text: &str, chars_max: usize) -> Result<(), TextProblem> {
    if text.trim().is_empty() {
        return Err(TextProblem::Empty);
    }
    check_optional_text(text, chars_max)
}

/// As [`check_display_text`], but an empty text is allowed.
pub fn check_optional_text(text: &str, chars_max: usize) -> Result<(), TextProblem> {
    if text.chars().count() > chars_max {
        return Err(TextProblem::TooLong);
    }
    if text.chars().any(|c| c.is_control() || INVISIBLE_FORMATTING.contains(&c)) {
        return Err(TextProblem::Unprintable);
    }
    Ok(())
}

/// The rule of [`check_display_text`] as a JSON-schema pattern (ECMA
/// syntax), for the API's documents: any characters but controls and the
/// invisible formatting ones, at least one of them not a space.
pub const DISPLAY_TEXT_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]*",
    r"[^\s\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]",
    r"[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]*$"
);

/// The rule of [`check_optional_text`] as a pattern.
pub const OPTIONAL_TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]*$";

/// The rule of [`is_web_url`] as a pattern: `http` or `https`, a host (a
/// name whose last label starts with a letter, or a dotted IPv4 address), an
/// optional port, an optional path of visible ASCII.
pub const WEB_URL_PATTERN: &str = concat!(
    r"^https?://(?:(?:[a-z0-9-]{1,63}\.)*[a-z][a-z0-9-]{0,62}",
    r"|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    r"(?:/[!-~]*)?$"
);

/// An http or https URL the platform may be asked to send to, as
/// [`WEB_URL_PATTERN`] says, of at most `chars_max` characters.
pub fn is_web_url(text: &str, chars_max: usize) -> bool {
    if text.len() > chars_max {
        return false;
    }
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else { return false };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    (is_dns_name(host) || is_dotted_ipv4(host)) && port.is_none_or(is_port)
}

/// `[a-z0-9-]{1,63}` labels joined by dots, the last starting with a letter
/// (a name never reads as a number, which URL parsers take for an address).
fn is_dns_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    labels.iter().all(label_ok) && labels.last().is_some_and(|last| last.as_bytes()[0].is_ascii_lowercase())
}

/// Four numbers 0 to 255 without leading zeros, joined by dots.
fn is_dotted_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4 && parts.iter().all(|part| is_number_up_to(part, 255))
}

/// 1 to 65535 without leading zeros.
fn is_port(port: &str) -> bool {
    is_number_up_to(port, 65_535) && port != "0"
}

fn is_number_up_to(text: &str, max: u32) -> bool {
    let canonical = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    canonical && (text == "0" || !text.starts_with('0')) && text.parse::<u32>().is_ok_and(|value| value <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_people_write_pass_and_hidden_characters_do_not() {
        for good in ["Alice", "淘宝小店", "Zoë's shop", "a b", "😀"] {
            assert_eq!(check_display_text(good, 200), Ok(()), "{good}");
        }
        for bad in ["nul\0", "esc\u{1b}[31m", "tab\there", "line\nbreak", "\u{202E}exe.doc", "a\u{200B}b", "\u{2069}"] {
            assert_eq!(check_display_text(bad, 200), Err(TextProblem::Unprintable), "{bad:?}");
        }
        assert_eq!(check_display_text("   ", 200), Err(TextProblem::Empty));
        assert_eq!(check_display_text("abc", 2), Err(TextProblem::TooLong));
        assert_eq!(check_optional_text("", 2), Ok(()));
    }

    /// The patterns the API documents say what the functions do: ECMA's
    /// `\uXXXX` read as the regex crate's `\x{XXXX}`.
    fn pattern(ecma: &str) -> regex::Regex {
        let rust = regex_lite_escape(ecma);
        regex::Regex::new(&rust).unwrap_or_else(|error| panic!("{error}"))
    }

    fn regex_lite_escape(ecma: &str) -> String {
        let mut out = String::new();
        let mut rest = ecma;
        while let Some(at) = rest.find("\\u") {
            out.push_str(&rest[..at]);
            out.push_str(&format!("\\x{{{}}}", &rest[at + 2..at + 6]));
            rest = &rest[at + 6..];
        }
        out.push_str(rest);
        out
    }

    proptest::proptest! {
        #[test]
        fn the_documented_patterns_are_the_rules(text in "(?s).{0,12}", url in "(https?://)?[a-z0-9A-Z.:/?@\\[\\]\\- ]{0,24}") {
            let display = pattern(DISPLAY_TEXT_PATTERN);
            let optional = pattern(OPTIONAL_TEXT_PATTERN);
            let web = pattern(WEB_URL_PATTERN);
            proptest::prop_assert_eq!(display.is_match(&text), check_display_text(&text, 100).is_ok(), "{:?}", text);
            proptest::prop_assert_eq!(optional.is_match(&text), check_optional_text(&text, 100).is_ok(), "{:?}", text);
            proptest::prop_assert_eq!(web.is_match(&url), is_web_url(&url, 2_048), "{:?}", url);
        }

        #[test]
        fn the_url_pattern_is_the_rule_near_its_edges(
            url in "https?://([a-z0-9-]{1,3}\\.){0,3}[a-z0-9-]{1,3}(:[0-9]{1,6})?(/[ -~]{0,6})?",
        ) {
            proptest::prop_assert_eq!(pattern(WEB_URL_PATTERN).is_match(&url), is_web_url(&url, 2_048), "{:?}", url);
        }
    }

    #[test]
    fn web_urls_need_a_scheme_we_send_to_and_a_host() {
        for good in
            ["http://127.0.0.1:8080/hook", "https://shop.example/notify?x=1", "http://localhost", "https://a-b.c0/"]
        {
            assert!(is_web_url(good, 2_048), "{good}");
        }
        let bad = [
            "http://",
            "https://",
            "ftp://host/",
            "host/path",
            "http://a b/",
            "http://x/\0",
            "",
            "http://1.2.3.4.5/",
            "http://256.1.1.1/",
            "http://01.1.1.1/",
            "http://x:0/",
            "http://x:65536/",
            "http://X.com/",
            "http://a..b/",
            "http://[::1]/",
            "http://x?q",
            "http://user@x/",
        ];
        for bad in bad {
            assert!(!is_web_url(bad, 2_048), "{bad}");
        }
        assert!(!is_web_url("http://abc/", 5));
    }
}
