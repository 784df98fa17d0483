//! The Prometheus exposition: OpenMetrics text (what Prometheus asks for), or the classic
//! text format 0.0.4 for clients that do not ask for OpenMetrics. Counter names end in
//! `_total` in both, so a series has one name whichever format was scraped.

use prometheus_client::registry::Registry;

/// `Content-Type` of the OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text (ends with `# EOF`).
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else classic.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// Encodes every series of `registry`.
pub(crate) fn render(registry: &Registry, format: Format) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would leave a partial text, which
    // is still better than none.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    match format {
        Format::OpenMetrics => text,
        Format::Text => classic(&text),
    }
}

/// OpenMetrics text → classic text: counter families are named with their `_total` samples'
/// name in `# HELP`/`# TYPE`, and `# EOF`/`# UNIT` lines are dropped.
fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 12);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names_counters_with_total_and_drops_eof() {
        let om = "# HELP a_b Bytes.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n\
                  # HELP g Live.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_b_total Bytes.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n\
             # HELP g Live.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
