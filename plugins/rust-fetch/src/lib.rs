//! Example plugin: HTTP GET through `wasi:http/outgoing-handler`. The host
//! lets a request out only to the hosts the manifest's `network` list grants.

use serde::Deserialize;
use serde_json::json;
use toolhost_guest::{Plugin, ToolError, ToolOutput, ToolSpec, spec};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// At most this much of the body is returned.
const MAX_BODY: usize = 64 * 1024;
/// Connect and first-byte timeouts, in nanoseconds.
const TIMEOUT_NS: u64 = 10_000_000_000;

struct Fetch;

#[derive(Deserialize)]
struct Args {
    url: String,
}

/// The parts of an http(s) URL that `wasi:http` asks for.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: String,
}

fn parse_url(url: &str) -> Result<Target<'_>, ToolError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ToolError::InvalidArguments(format!("{url} is not an absolute URL")))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => {
            return Err(ToolError::InvalidArguments(format!(
                "only http and https URLs can be fetched, not {scheme}"
            )));
        }
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(ToolError::InvalidArguments(format!("{url} has no host")));
    }
    let path_with_query = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Ok(Target {
        https,
        authority,
        path_with_query,
    })
}

/// What the model is told when the host or the network says no.
fn describe_error(authority: &str, e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => {
            format!("request denied: host {authority} not granted in the plugin manifest")
        }
        ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => {
            format!("cannot resolve {authority}")
        }
        ErrorCode::ConnectionRefused => format!("{authority} refused the connection"),
        ErrorCode::ConnectionTimeout | ErrorCode::HttpResponseTimeout => {
            format!("{authority} did not answer in time")
        }
        ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError => {
            format!("TLS failed with {authority}")
        }
        other => format!("request to {authority} failed: {other:?}"),
    }
}

/// Sends the request and waits for the response head.
fn send(target: &Target<'_>) -> Result<IncomingResponse, ErrorCode> {
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if target.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    // Each setter only fails on a malformed value, which the host then
    // reports from `handle` as an invalid request.
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(target.authority));
    let _ = request.set_path_with_query(Some(&target.path_with_query));

    let options = RequestOptions::new();
    // Hosts may not support timeouts; the call's own timeout still applies.
    let _ = options.set_connect_timeout(Some(TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(TIMEOUT_NS));

    let response = outgoing_handler::handle(request, Some(options))?;
    response.subscribe().block();
    match response.get() {
        Some(Ok(result)) => result,
        // Already taken, or not ready after `block`: neither happens.
        _ => Err(ErrorCode::InternalError(Some(
            "the response was not available".into(),
        ))),
    }
}

/// The first `MAX_BODY` bytes of the body, and whether there was more.
fn read_body(response: &IncomingResponse) -> Result<(Vec<u8>, bool), String> {
    let body = response
        .consume()
        .map_err(|()| "the response body was already taken".to_owned())?;
    let stream = body
        .stream()
        .map_err(|()| "the response body stream was already taken".to_owned())?;
    let mut bytes = Vec::new();
    let truncated = loop {
        let want = (MAX_BODY + 1 - bytes.len()) as u64;
        match stream.blocking_read(want) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break false,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body failed: {}", e.to_debug_string()));
            }
        }
        if bytes.len() > MAX_BODY {
            bytes.truncate(MAX_BODY);
            break true;
        }
    };
    // The stream is a child of the body: it must go first.
    drop(stream);
    drop(body);
    Ok((bytes, truncated))
}

fn http_get(args: Args) -> Result<ToolOutput, ToolError> {
    let target = parse_url(&args.url)?;
    let response =
        send(&target).map_err(|e| ToolError::failed(describe_error(target.authority, &e)))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let (body, truncated) = read_body(&response).map_err(ToolError::failed)?;
    let body = String::from_utf8_lossy(&body).into_owned();

    let text = format!(
        "HTTP {status} ({}), {} bytes{}:\n{body}",
        content_type.as_deref().unwrap_or("no content type"),
        body.len(),
        if truncated { ", cut short" } else { "" },
    );
    Ok(ToolOutput::text_and_data(
        text,
        &json!({
            "status": status,
            "content_type": content_type,
            "body": body,
            "truncated": truncated,
        }),
    ))
}

impl Plugin for Fetch {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec {
            output_schema: Some(
                json!({
                    "type": "object",
                    "properties": {
                        "status": { "type": "integer" },
                        "content_type": { "type": ["string", "null"] },
                        "body": { "type": "string" },
                        "truncated": { "type": "boolean" }
                    },
                    "required": ["status", "content_type", "body", "truncated"]
                })
                .to_string(),
            ),
            ..spec(
                "http_get",
                "Fetches a URL with HTTP GET. Returns the status, the content type and the first 64 KiB of the body as text. Only the hosts granted in the plugin's manifest can be reached.",
                json!({
                    "type": "object",
                    "properties": {
                        "url": { "type": "string", "description": "An http:// or https:// URL." }
                    },
                    "required": ["url"]
                }),
            )
        }]
    }

    fn call(tool: String, arguments: String) -> Result<ToolOutput, ToolError> {
        match tool.as_str() {
            "http_get" => http_get(toolhost_guest::args(&arguments)?),
            other => Err(ToolError::failed(format!("no tool named {other}"))),
        }
    }
}

toolhost_guest::export_plugin!(Fetch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls_for_wasi_http() {
        let target = |url| parse_url(url).ok();
        assert_eq!(
            target("http://127.0.0.1:8080/a/b?c=d#frag"),
            Some(Target {
                https: false,
                authority: "127.0.0.1:8080",
                path_with_query: "/a/b?c=d".into(),
            })
        );
        assert_eq!(
            target("HTTPS://example.com"),
            Some(Target {
                https: true,
                authority: "example.com",
                path_with_query: "/".into(),
            })
        );
        assert_eq!(
            target("http://localhost:8080?x=1"),
            Some(Target {
                https: false,
                authority: "localhost:8080",
                path_with_query: "/?x=1".into(),
            })
        );
        assert_eq!(target("ftp://example.com/"), None);
        assert_eq!(target("example.com/"), None);
        assert_eq!(target("http:///path"), None);
    }
}
