//! The `getProxyConfig` / `getProxyConfigV6` text: which middle proxies serve which DC.
//!
//! Grammar (as the official server reads it): whitespace is space, tab, CR, LF; `#` starts a
//! comment to the end of the line; every statement ends with `;`. `proxy_for <dc> <host>:<port>;`
//! lists a middle proxy for a signed DC id, `default <dc>;` names the fallback group, and
//! `proxy`, `timeout`, `min_connections`, `max_connections` are tuning knobs we ignore.
//!
//! This parser is tolerant: a bad or unknown statement is skipped with a warning instead of
//! failing the file, and IPv6 hosts are accepted with or without brackets (split at the last
//! colon). A trailing statement without its `;` (a truncated download) is skipped with a
//! warning rather than trusted.

use core::fmt;
use core::fmt::Write as _;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The group used when a DC has no entries and the file names no `default`.
pub const FALLBACK_DC: i16 = 2;

/// The middle proxies of one address family, by signed DC id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyMap {
    /// Middle proxies per DC id, in file order.
    pub by_dc: BTreeMap<i16, Vec<SocketAddr>>,
    /// The `default` line's DC, if any.
    pub default: Option<i16>,
}

impl ProxyMap {
    /// Whether the map lists no middle proxy at all (never replace a good map with such a one).
    pub fn is_empty(&self) -> bool {
        self.by_dc.values().all(Vec::is_empty)
    }

    /// The group serving `dc`: its own entries, else the `default` group (DC 2 without a
    /// `default` line), else none.
    pub fn group(&self, dc: i16) -> &[SocketAddr] {
        match self.by_dc.get(&dc) {
            Some(group) if !group.is_empty() => group,
            _ => self.by_dc.get(&self.default.unwrap_or(FALLBACK_DC)).map_or(&[], Vec::as_slice),
        }
    }

    /// The map in the config file's text form (IPv6 hosts bracketed); [`parse`] reads it back.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(dc) = self.default {
            let _ = writeln!(out, "default {dc};");
        }
        for (dc, addrs) in &self.by_dc {
            for addr in addrs {
                let _ = writeln!(out, "proxy_for {dc} {addr};");
            }
        }
        out
    }
}

/// A statement that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The 1-based line where the statement starts.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The result of parsing a config text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedConfig {
    /// What was understood.
    pub map: ProxyMap,
    /// Every skipped statement.
    pub warnings: Vec<ConfigWarning>,
}

/// Parses a `getProxyConfig` text. Never fails: check [`ProxyMap::is_empty`] and the warnings.
pub fn parse(text: &str) -> ParsedConfig {
    let mut out = ParsedConfig::default();
    // Comments go first (a `;` inside one does not end a statement), keeping line breaks.
    let mut stripped = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |body| (body, "\n"));
        stripped.push_str(body.split_once('#').map_or(body, |(code, _)| code));
        stripped.push_str(newline);
    }
    let mut line = 1;
    let mut rest = stripped.as_str();
    loop {
        let (statement, terminated, next) = match rest.find(';') {
            Some(at) => (&rest[..at], true, &rest[at + 1..]),
            None => (rest, false, ""),
        };
        let leading = statement.len() - statement.trim_start().len();
        let start_line = line + statement[..leading].matches('\n').count();
        line += statement.matches('\n').count();
        let words: Vec<&str> = statement.split_ascii_whitespace().collect();
        if !words.is_empty() {
            let result = if terminated {
                apply(&words, &mut out.map)
            } else {
                Err("missing ';' at the end of the text".into())
            };
            if let Err(message) = result {
                out.warnings.push(ConfigWarning {
                    line: start_line,
                    message: format!("{message}: `{}`", words.join(" ")),
                });
            }
        }
        if !terminated {
            return out;
        }
        rest = next;
    }
}

fn apply(words: &[&str], map: &mut ProxyMap) -> Result<(), String> {
    match words {
        ["proxy_for", dc, addr] => {
            let dc = parse_dc(dc)?;
            let addr = parse_addr(addr)?;
            map.by_dc.entry(dc).or_default().push(addr);
            Ok(())
        }
        ["default", dc] => {
            map.default = Some(parse_dc(dc)?);
            Ok(())
        }
        ["proxy", _] | ["timeout", _] | ["min_connections", _] | ["max_connections", _] => Ok(()),
        ["proxy_for" | "default" | "proxy" | "timeout" | "min_connections" | "max_connections", ..] => {
            Err(format!("wrong number of arguments to `{}`", words[0]))
        }
        _ => Err("unknown directive".into()),
    }
}

fn parse_dc(word: &str) -> Result<i16, String> {
    word.parse::<i16>().map_err(|_| format!("DC id `{word}` is not in -32768..32767"))
}

/// `a.b.c.d:port`, `[v6]:port` or `v6:port` (split at the last colon).
pub fn parse_addr(word: &str) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(inner) = word.strip_prefix('[') {
        let (host, port) = inner.split_once("]:").ok_or_else(|| format!("`{word}`: no `]:port`"))?;
        (host, port)
    } else {
        word.rsplit_once(':').ok_or_else(|| format!("`{word}`: no `:port`"))?
    };
    let ip: IpAddr = host.parse().map_err(|_| format!("`{host}` is not an IP address"))?;
    let port: u16 =
        port.parse().ok().filter(|&p| p != 0).ok_or_else(|| format!("port `{port}` is not in 1..65535"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "# comments may appear anywhere
default 2;
proxy_for 1 192.0.2.10:8888;
proxy_for -1 192.0.2.10:8888;
proxy_for 2 192.0.2.20:80;
proxy_for 2 192.0.2.21:80;
proxy_for 203 192.0.2.30:443;
";

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn spec_example() {
        let p = parse(SPEC);
        assert_eq!(p.warnings, vec![]);
        assert_eq!(p.map.default, Some(2));
        assert_eq!(p.map.group(1), [a("192.0.2.10:8888")]);
        assert_eq!(p.map.group(-1), [a("192.0.2.10:8888")]);
        assert_eq!(p.map.group(203), [a("192.0.2.30:443")]);
        assert_eq!(p.map.group(-2), [a("192.0.2.20:80"), a("192.0.2.21:80")], "default group");
        assert_eq!(parse(&p.map.render()).map, p.map);
    }

    #[test]
    fn tolerant_parsing() {
        let text = "timeout 5000; min_connections 4;\tmax_connections 8;\n\
                    proxy 192.0.2.1:80; # ; inside a comment\n\
                    proxy_for 4 [2001:db8::1]:443; proxy_for 4 2001:db8::2:8888;\n\
                    frobnicate 1;\n\
                    proxy_for 5 192.0.2.5;\n\
                    proxy_for\n 99999 192.0.2.6:80;\n\
                    proxy_for 6 192.0.2.6:0;\n\
                    default x;\n\
                    proxy_for 7 192.0.2.7:443";
        let p = parse(text);
        assert_eq!(p.map.group(4), [a("[2001:db8::1]:443"), a("[2001:db8::2]:8888")]);
        assert_eq!(p.map.default, None);
        assert_eq!(p.map.by_dc.len(), 1);
        let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![4, 5, 6, 8, 9, 10], "{:#?}", p.warnings);
        assert!(p.warnings[0].message.contains("unknown directive"));
        assert!(p.warnings[5].message.contains("missing ';'"));
        assert_eq!(p.map.group(2), [] as [SocketAddr; 0], "no default, no DC 2");
    }

    #[test]
    fn group_rule() {
        let mut m = ProxyMap::default();
        m.by_dc.insert(2, vec![a("192.0.2.2:80")]);
        m.by_dc.insert(3, vec![a("192.0.2.3:80")]);
        assert_eq!(m.group(-2), [a("192.0.2.2:80")], "no default line: DC 2");
        m.default = Some(3);
        assert_eq!(m.group(-2), [a("192.0.2.3:80")]);
        assert_eq!(m.group(2), [a("192.0.2.2:80")]);
        assert!(!m.is_empty());
        assert!(parse("# nothing\n").map.is_empty());
    }
}
