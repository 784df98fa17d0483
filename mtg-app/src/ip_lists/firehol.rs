//! The FireHOL list format: one IP or CIDR per line, `#` starts a comment (whole-line or
//! trailing), blank lines are skipped.
//!
//! A malformed line is skipped and reported with its 1-based number; the lines after it still
//! count (mtg stops reading the source at the first malformed line).

use super::net::{IpNet, NetError};

/// What one source's text holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedList {
    /// The networks, in file order.
    pub nets: Vec<IpNet>,
    /// The lines that were skipped.
    pub malformed: Vec<MalformedLine>,
}

/// A line that is neither blank, a comment nor one IP/CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine {
    /// 1-based line number.
    pub number: usize,
    /// What is wrong with it.
    pub error: NetError,
}

/// Longest part of a bad line quoted back in a warning.
const QUOTE_MAX: usize = 64;

/// Parses a list body (any bytes; non-UTF-8 lines are malformed).
pub fn parse(body: &[u8]) -> ParsedList {
    let mut out = ParsedList::default();
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let entry = line.split_once('#').map_or(&*line, |(before, _)| before).trim();
        if entry.is_empty() {
            continue;
        }
        match IpNet::parse(entry) {
            Ok(net) => out.nets.push(net),
            Err(error) => out.malformed.push(MalformedLine { number: index + 1, error: shortened(error) }),
        }
    }
    out
}

/// The warning for a skipped line of `source` (a file path or a redacted URL).
pub fn warning(source: &str, line: &MalformedLine) -> String {
    format!("{source}: line {}: {}; line skipped", line.number, line.error)
}

/// Keeps quoted text in errors short (a binary file could have huge "lines").
fn shortened(error: NetError) -> NetError {
    let cut = |s: String| -> String {
        match s.char_indices().nth(QUOTE_MAX) {
            Some((at, _)) => format!("{}…", &s[..at]),
            None => s,
        }
    };
    match error {
        NetError::Address(a) => NetError::Address(cut(a)),
        NetError::Prefix(p) => NetError::Prefix(cut(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_comments_and_blank_lines() {
        let body = b"# FireHOL level 1\n#\n\n10.0.0.0/8\n  192.0.2.1  \r\n2001:db8::/32 # docs\n\t\n::1\n";
        let parsed = parse(body);
        let shown: Vec<String> = parsed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"]);
        assert!(parsed.malformed.is_empty());
        assert_eq!(parse(b""), ParsedList::default());
    }

    #[test]
    fn malformed_lines_are_skipped_with_their_numbers_and_later_lines_kept() {
        let body =
            b"10.0.0.0/8\nnot-an-ip\n# fine\n10.0.0.0/40\n\n1.2.3.4 5.6.7.8\n\xff\xfe\n198.51.100.0/24\n";
        let parsed = parse(body);
        let shown: Vec<String> = parsed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "198.51.100.0/24"]);
        let warnings: Vec<String> =
            parsed.malformed.iter().map(|m| warning("/etc/mtg/block.txt", m)).collect();
        assert_eq!(
            warnings,
            [
                "/etc/mtg/block.txt: line 2: \"not-an-ip\" is not an IP address; line skipped",
                "/etc/mtg/block.txt: line 4: \"40\" is not a prefix length (0-32 for IPv4, 0-128 for IPv6); \
                 line skipped",
                "/etc/mtg/block.txt: line 6: \"1.2.3.4 5.6.7.8\" is not an IP address; line skipped",
                "/etc/mtg/block.txt: line 7: \"\u{fffd}\u{fffd}\" is not an IP address; line skipped",
            ]
        );
    }

    #[test]
    fn a_long_bad_line_is_quoted_shortened() {
        let body = "x".repeat(1000);
        let parsed = parse(body.as_bytes());
        assert_eq!(parsed.malformed[0].number, 1);
        assert_eq!(parsed.malformed[0].error, NetError::Address(format!("{}…", "x".repeat(QUOTE_MAX))));
    }
}
