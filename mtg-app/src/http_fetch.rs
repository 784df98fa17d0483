//! Plain HTTP(S) GETs the proxy makes for itself (block/allow lists, doppelganger pages,
//! public-IP detection, the middle-proxy bootstrap, which also reads the `Date` header): `ureq` with rustls on a blocking thread, so it serves either runtime.
//! Direct connections (not through `[network] proxies`), a whole-request timeout, a size cap.

use std::time::Duration;

/// The User-Agent mtg sends.
pub const USER_AGENT: &str = "curl/8.5.0";

/// One GET to make.
#[derive(Debug, Clone)]
pub struct Get {
    /// `http://` or `https://` URL.
    pub url: String,
    /// `Accept` header value.
    pub accept: &'static str,
    /// The whole request (connect, TLS, headers, body) must finish within this.
    pub timeout: Duration,
    /// Largest body accepted, in bytes.
    pub limit: u64,
}

impl Get {
    /// A GET of `url` accepting anything, with `timeout` and a 64 MiB body cap.
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self { url: url.to_owned(), accept: "*/*", timeout, limit: 64 << 20 }
    }
}

/// Runs the GET on a blocking thread; the body of a 2xx answer, or an error naming the URL
/// (password redacted) and what went wrong.
pub async fn get(request: Get) -> Result<Vec<u8>, String> {
    blocking::unblock(move || get_blocking(&request)).await
}

/// The same, on the calling thread.
pub fn get_blocking(request: &Get) -> Result<Vec<u8>, String> {
    fetch(request, ureq::config::IpFamily::Any)
}

/// The same, dialing only IPv4 addresses (`ipv6 == false`) or only IPv6 ones: what public-IP
/// detection needs to learn each family's address.
pub fn get_blocking_over(request: &Get, ipv6: bool) -> Result<Vec<u8>, String> {
    fetch(request, if ipv6 { ureq::config::IpFamily::Ipv6Only } else { ureq::config::IpFamily::Ipv4Only })
}

/// A 2xx answer's body and its `Date` header. `Debug` shows the body's length only (it may
/// be key material, such as the middle-proxy secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body.
    pub body: Vec<u8>,
    /// The `Date` header's value, when the server sent one (in ASCII).
    pub date: Option<String>,
    /// Our clock when the answer's head arrived (to compare with `date`).
    pub received_at: std::time::SystemTime,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("len", &self.body.len())
            .field("date", &self.date)
            .field("received_at", &self.received_at)
            .finish()
    }
}

/// Like [`get`], also returning the `Date` header (the middle-proxy bootstrap estimates our
/// clock skew from it).
pub async fn get_with_date(request: Get) -> Result<Fetched, String> {
    blocking::unblock(move || fetch_full(&request, ureq::config::IpFamily::Any)).await
}

fn fetch(request: &Get, family: ureq::config::IpFamily) -> Result<Vec<u8>, String> {
    fetch_full(request, family).map(|fetched| fetched.body)
}

fn fetch_full(request: &Get, family: ureq::config::IpFamily) -> Result<Fetched, String> {
    let shown = crate::config::redacted(&request.url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(request.timeout))
        .ip_family(family)
        .user_agent(USER_AGENT)
        .http_status_as_error(true)
        .build()
        .into();
    let mut response = agent
        .get(&request.url)
        .header("Accept", request.accept)
        .call()
        .map_err(|e| format!("GET {shown}: {e}"))?;
    let received_at = std::time::SystemTime::now();
    let date = response.headers().get("date").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response
        .body_mut()
        .with_config()
        .limit(request.limit)
        .read_to_vec()
        .map_err(|e| format!("GET {shown}: reading the body: {e}"))?;
    Ok(Fetched { body, date, received_at })
}

/// A one-shot HTTP server for unit tests.
#[cfg(test)]
pub(crate) mod test_server {
    use std::io::{Read, Write};

    /// Serves one canned HTTP answer on loopback; returns the URL and the request it saw.
    pub(crate) fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/list.txt", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (url, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::serve_once;
    use super::*;

    #[test]
    fn fetches_a_body_with_mtgs_user_agent() {
        let (url, server) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n10.0.0.0/8\r\n");
        let body = get_blocking(&Get::new(&url, Duration::from_secs(5))).unwrap();
        assert_eq!(body, b"10.0.0.0/8\r\n");
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /list.txt HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("user-agent: curl/8.5.0\r\n"), "{request}");
    }

    #[test]
    fn the_date_header_comes_back_with_the_body() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        );
        let fetched =
            fetch_full(&Get::new(&url, Duration::from_secs(5)), ureq::config::IpFamily::Any).unwrap();
        server.join().unwrap();
        assert_eq!(fetched.body, b"ok");
        assert_eq!(fetched.date.as_deref(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
    }

    #[test]
    fn an_error_status_names_the_url_without_its_password() {
        let (url, server) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let url = url.replace("http://", "http://me:hunter2@");
        let err = get_blocking(&Get::new(&url, Duration::from_secs(5))).unwrap_err();
        server.join().unwrap();
        assert!(err.contains("me:***@127.0.0.1"), "{err}");
        assert!(err.contains("404"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_body_over_the_limit_is_an_error() {
        let (url, server) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n10.0.0.0/8\r\n");
        let mut get = Get::new(&url, Duration::from_secs(5));
        get.limit = 4;
        assert!(get_blocking(&get).is_err());
        server.join().unwrap();
    }
}
