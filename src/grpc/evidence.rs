//! Where evidence may point (`DISPUTE_EVIDENCE_URL_PREFIXES`, README "Limits"): object-storage
//! locations the platform controls. Anything else — `javascript:`, `data:`, `file:`, a cloud
//! metadata address, a lookalike host — would be opened by an agent's browser or a worker.
//!
//! A URL is parsed (WHATWG rules, as a browser would read it), never compared as text: it
//! must have an allowed location's scheme, its host exactly (and port), and lie under its
//! path on a segment boundary. So with `https://bucket.example/evidence`,
//! `https://bucket.example.evil/x`, `https://bucket.example@evil/`,
//! `https://bucket.example/evidence-other/x` and `https://bucket.example/evidence/../x`
//! are all refused. A URL with credentials (userinfo) is refused, and so is one whose host
//! or path hides a separator or a dot behind percent-encoding (`%2e`, `%2f`, `%5c`), which
//! a storage gateway might decode after this check.

use url::Url;

/// The locations evidence URLs may point at, parsed from configuration.
#[derive(Debug, Clone)]
pub struct EvidencePrefixes(Vec<Location>);

#[derive(Debug, Clone)]
struct Location {
    /// As configured, for the error message.
    text: String,
    scheme: String,
    /// `None`: any host of the scheme (`s3://` — any bucket).
    host: Option<String>,
    port: Option<u16>,
    /// Without a trailing `/`; empty for the whole host.
    path: String,
}

/// Escapes that would change a URL's structure if decoded later.
const HIDDEN_STRUCTURE: [&str; 3] = ["%2e", "%2f", "%5c"];

impl EvidencePrefixes {
    /// Parses the configured locations: `scheme://` (any host of an object-storage scheme)
    /// or `scheme://host[:port][/path]`. A bare `http://`/`https://` is refused: it would
    /// let any web address through.
    pub fn new(prefixes: Vec<String>) -> Result<Self, String> {
        prefixes
            .into_iter()
            .map(|text| Location::parse(&text).map_err(|why| format!("{text:?}: {why}")))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|locations| {
                if locations.is_empty() {
                    Err("name at least one location".to_owned())
                } else {
                    Ok(Self(locations))
                }
            })
    }

    /// Whether `url` points inside one of the locations; otherwise why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let refused = || {
            let allowed: Vec<&str> = self.0.iter().map(|l| l.text.as_str()).collect();
            format!("must be a URL inside one of: {}", allowed.join(", "))
        };
        // Parsers disagree on these (WHATWG reads `\` as `/` in an https URL, others do
        // not): a URL that means one thing here and another to whoever opens it is refused.
        if url.contains(|c: char| c == '\\' || c.is_whitespace()) {
            return Err("must not contain a backslash or whitespace".to_owned());
        }
        let parsed = Url::parse(url).map_err(|_| refused())?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not carry credentials".to_owned());
        }
        let host = parsed.host_str().unwrap_or_default();
        let path = parsed.path();
        if hides_structure(host) || hides_structure(path) || host.contains('%') {
            return Err("must not percent-encode dots or separators".to_owned());
        }
        if self.0.iter().any(|location| location.contains(&parsed)) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

impl Location {
    fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("must be scheme://[host[/path]]")?;
        if rest.is_empty() {
            if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
                return Err("must name a host: any web address would pass".to_owned());
            }
            Url::parse(&format!("{scheme}://x")).map_err(|e| e.to_string())?;
            return Ok(Self {
                text: text.to_owned(),
                scheme: scheme.to_ascii_lowercase(),
                host: None,
                port: None,
                path: String::new(),
            });
        }
        let url = Url::parse(text).map_err(|e| e.to_string())?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".to_owned());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".to_owned());
        }
        Ok(Self {
            text: text.to_owned(),
            scheme: url.scheme().to_owned(),
            host: Some(host.to_ascii_lowercase()),
            port: url.port_or_known_default(),
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    fn contains(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = &self.host else {
            // Any host of the scheme, but there must be one (`s3:///x` has none).
            return url.host_str().is_some_and(|h| !h.is_empty());
        };
        let same_host = url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host));
        if !same_host || url.port_or_known_default() != self.port {
            return false;
        }
        let path = url.path();
        self.path.is_empty()
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn hides_structure(part: &str) -> bool {
    let lower = part.to_ascii_lowercase();
    HIDDEN_STRUCTURE.iter().any(|escape| lower.contains(escape))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(locations: &[&str]) -> EvidencePrefixes {
        EvidencePrefixes::new(locations.iter().map(|s| (*s).to_owned()).collect()).unwrap()
    }

    #[test]
    fn a_lookalike_host_is_not_the_configured_host() {
        let evidence = allowed(&["https://bucket.example"]);
        assert!(evidence.check("https://bucket.example/x.jpg").is_ok());
        assert!(evidence.check("https://BUCKET.example/x.jpg").is_ok());
        for url in [
            "https://bucket.example.evil/x",
            "https://bucket.examplе/x", // Cyrillic е
            "https://evil.example/bucket.example/x",
            "https://bucket.example:8443/x",
            "http://bucket.example/x",
            "https://xbucket.example/x",
        ] {
            assert!(evidence.check(url).is_err(), "{url}");
        }
    }

    #[test]
    fn credentials_and_percent_encoded_tricks_are_refused() {
        let evidence = allowed(&["https://bucket.example/evidence", "s3://"]);
        for url in [
            "https://bucket.example@evil/",
            "https://bucket.example/evidence@evil/",
            "https://user:pass@bucket.example/evidence/x",
            "https://bucket.example%2eevil/x",
            "https://bucket.example/evidence%2f..%2fsecret",
            "https://bucket.example/evidence/%2e%2e/secret",
            "https://bucket.example/evidence/..%5csecret",
            "https://bucket.example\\@evil.com/evidence/x",
            "https://bucket.example/evidence/a b.jpg",
            "https://bucket.example/evidence/../secret",
            "https://bucket.example/evidence-other/x",
            "s3://bucket%2eevil/x",
            "s3://user@bucket/x",
            "s3:///x",
        ] {
            assert!(evidence.check(url).is_err(), "{url}");
        }
        for url in [
            "https://bucket.example/evidence",
            "https://bucket.example/evidence/1001/photo.jpg",
            "s3://any-bucket/1001/photo.jpg",
        ] {
            assert!(evidence.check(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_default_allows_object_storage_only() {
        let default = crate::config::DEFAULT_EVIDENCE_LOCATIONS
            .split(',')
            .map(str::to_owned)
            .collect();
        let evidence = EvidencePrefixes::new(default).unwrap();
        assert!(evidence.check("s3://bucket/a.jpg").is_ok());
        assert!(evidence.check("gs://bucket/b.png").is_ok());
        for url in [
            "https://cdn.example/c.jpg",
            "http://169.254.169.254/latest/meta-data/",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            assert!(evidence.check(url).is_err(), "{url}");
        }
    }

    #[test]
    fn a_configuration_that_would_let_any_web_address_through_is_refused() {
        for bad in ["https://", "http://", "no-scheme", "https://user@host/"] {
            assert!(
                EvidencePrefixes::new(vec![bad.to_owned()]).is_err(),
                "{bad}"
            );
        }
        assert!(EvidencePrefixes::new(vec![]).is_err());
    }
}
