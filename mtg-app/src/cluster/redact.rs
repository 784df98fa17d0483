//! The Redis URL carries the password: logs and errors show only [`redis_address`].

/// The scheme, host, port and database of a Redis URL, without the user info (user and
/// password) and without any query: what logs and errors may show.
pub fn redis_address(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "(not a URL)".to_owned();
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let rest = rest.split_once(['?', '#']).map_or(rest, |(before, _)| before);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{}{host}", &url[..start])
}

#[cfg(test)]
mod tests {
    use super::redis_address;

    #[test]
    fn the_password_never_shows() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@10.0.0.1:6380/2", "redis://10.0.0.1:6380/2"),
            ("rediss://user:p%40ss@redis.example:6380", "rediss://redis.example:6380"),
            ("redis://user:a@b@host/1", "redis://host/1"),
            ("redis://host/0?password=s3cret", "redis://host/0"),
            ("no-scheme:s3cret@host", "(not a URL)"),
        ] {
            assert_eq!(redis_address(url), shown, "{url}");
            assert!(!redis_address(url).contains("s3cret") && !redis_address(url).contains("p%40ss"));
        }
    }
}
