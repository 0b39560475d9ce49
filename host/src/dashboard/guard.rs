//! Who may use the dashboard: every request's `Host` header, its origin
//! when it changes something, and the token when one is set.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// The cookie that carries the token after a visit to `/?token=...`.
const COOKIE: &str = "toolhost_dashboard";

pub(super) async fn guard(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let options = &shared.options;
    let headers = request.headers();
    let Some(host) = single_host(headers) else {
        return refuse(StatusCode::BAD_REQUEST, "one Host header is required");
    };
    let name = host_name(&host);
    if !options
        .allowed_hosts
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&name))
    {
        return refuse(StatusCode::FORBIDDEN, "this Host is not allowed");
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && cross_origin(headers, &host) {
        return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    if let Some(token) = options.token.as_deref() {
        if let Some(given) = query_token(request.uri().query()) {
            if !same(given.as_bytes(), token.as_bytes()) {
                return refuse(StatusCode::UNAUTHORIZED, "wrong token");
            }
            // Keep it in a cookie and take it out of the address bar.
            let path = request.uri().path().to_owned();
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, path),
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                    ),
                ],
            )
                .into_response();
        }
        if !carries(headers, token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: open /?token=TOKEN once, or send Authorization: Bearer TOKEN",
            );
        }
    }
    next.run(request).await
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// The `Host` header, when there is exactly one (two is a smuggling attempt).
fn single_host(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(header::HOST).iter();
    let host = all.next()?.to_str().ok()?.to_owned();
    all.next().is_none().then_some(host)
}

/// `localhost:8701` -> `localhost`, `[::1]:8701` -> `::1`.
fn host_name(authority: &str) -> String {
    match authority.parse::<axum::http::uri::Authority>() {
        Ok(a) => a
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        Err(_) => String::new(),
    }
}

/// Whether a browser says the request comes from another site: its
/// `Sec-Fetch-Site`, or an `Origin` other than this server's own. Programs
/// send neither and pass (the token still applies).
fn cross_origin(headers: &HeaderMap, host: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return true;
    }
    match headers.get(header::ORIGIN) {
        None => false,
        Some(origin) => !origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("http://{host}"))),
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    let uri = format!("/?{}", query?).parse().ok()?;
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
    pairs
        .0
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Whether the request carries `token`, as a bearer token or the cookie.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    bearer
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && same(v.as_bytes(), token.as_bytes()))
}

/// Equality in a time that does not tell how much of the token matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_port_and_brackets() {
        assert_eq!(host_name("localhost:8701"), "localhost");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn another_origin_or_site_is_cross_origin() {
        let mut h = HeaderMap::new();
        assert!(!cross_origin(&h, "localhost:1"));
        h.insert(
            header::ORIGIN,
            "http://localhost:1".parse().expect("a header value"),
        );
        assert!(!cross_origin(&h, "localhost:1"));
        assert!(cross_origin(&h, "localhost:2"));
        h.insert(
            "sec-fetch-site",
            "cross-site".parse().expect("a header value"),
        );
        assert!(cross_origin(&h, "localhost:1"));
    }

    #[test]
    fn token_from_cookie_bearer_or_query() {
        let mut h = HeaderMap::new();
        assert!(!carries(&h, "t0k"));
        h.insert(
            header::COOKIE,
            "a=b; toolhost_dashboard=t0k"
                .parse()
                .expect("a header value"),
        );
        assert!(carries(&h, "t0k"));
        assert!(!carries(&h, "t0"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer t0k".parse().expect("a header value"),
        );
        assert!(carries(&h, "t0k"));
        assert_eq!(query_token(Some("x=1&token=a%20b")).as_deref(), Some("a b"));
    }
}
