//! The HTTP side of authentication: the bearer scheme, cookies (`__Host-` rules) and the
//! `return_to` path a login may go back to.

use http::HeaderMap;

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` are the same; one or more spaces follow it.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value: `__Host-` rules (Secure, `Path=/`, no Domain), HttpOnly, SameSite=Lax
/// (the login callback is a cross-site top-level navigation; POSTs are guarded by the CSRF
/// token). `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}")
}

/// `return_to` made safe: a local absolute path, or the console. Rejects scheme-relative
/// (`//host`), backslash tricks and control characters, so a login never redirects off-site.
pub fn local_path(return_to: Option<&str>) -> String {
    const DEFAULT: &str = "/console";
    let Some(path) = return_to else {
        return DEFAULT.to_owned();
    };
    let safe = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path.len() <= 512
        && !path.chars().any(|c| c.is_control() || c.is_whitespace());
    if safe { path.to_owned() } else { DEFAULT.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{LOGIN_COOKIE, SESSION_COOKIE};

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(local_path(Some("/console#/events")), "/console#/events");
        assert_eq!(local_path(Some("/console?x=1")), "/console?x=1");
        for hostile in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "/ok\nLocation: x",
            "",
        ] {
            let safe = local_path(Some(hostile));
            assert_eq!(safe, "/console", "{hostile:?}");
        }
        assert_eq!(local_path(None), "/console");
    }

    #[test]
    fn cookies_are_host_prefixed_and_parsed() {
        let header = set_cookie(SESSION_COOKIE, "abc", 60);
        assert_eq!(header, "__Host-inlet_session=abc; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, http::HeaderValue::from_static("a=1; __Host-inlet_session=xyz; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc", " Bearer abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
