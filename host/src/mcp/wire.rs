//! The client's side of the wire: one JSON-RPC message (a stdio line or an
//! HTTP body) read into what rmcp handles, or, when it cannot be read, the
//! JSON-RPC error that answers it. rmcp alone drops such a message (stdio)
//! or answers it with a bare HTTP status, leaving the client waiting for
//! its id; here every request whose id can be read gets an error under that
//! id, and any other unreadable message an error without one.
//!
//! What cannot be read: more than the message size limit (its id is not
//! looked for), invalid UTF-8 or a lone surrogate (`\ud800`), a known method with
//! parameters of the wrong shape (`"params": "str"`, or `{"name": 5}`
//! for `tools/call`, which rmcp would take for an unknown method), anything that is not
//! a JSON-RPC 2.0 object, JSON nested deeper than serde_json's 128 levels
//! (refused under its id, which is found without that limit). An unknown
//! method is read (rmcp answers it with
//! "method not found"). A notification that cannot be read is only logged:
//! nothing may answer a notification.

use rmcp::model::{
    CallToolRequest, CallToolRequestMethod, CallToolRequestParams, CancelTaskMethod,
    CancelTaskRequest, ClientJsonRpcMessage, ClientRequest, CompleteRequest, CompleteRequestMethod,
    ConstString, CustomRequest, ErrorData, GetPromptRequest, GetPromptRequestMethod, GetTaskMethod,
    GetTaskRequest, InitializeRequest, InitializeResultMethod, JsonRpcMessage, JsonRpcRequest,
    JsonRpcVersion2_0, ListPromptsRequest, ListPromptsRequestMethod, ListResourceTemplatesRequest,
    ListResourceTemplatesRequestMethod, ListResourcesRequest, ListResourcesRequestMethod,
    ListToolsRequest, ListToolsRequestMethod, PingRequest, PingRequestMethod, ReadResourceRequest,
    ReadResourceRequestMethod, RequestId, ServerJsonRpcMessage, SubscriptionsListenRequest,
    SubscriptionsListenRequestMethod, UpdateTaskMethod, UpdateTaskRequest,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a message from the client comes to.
pub(crate) enum Read {
    /// A message for rmcp.
    Message(ClientJsonRpcMessage),
    /// Unreadable: send this answer instead.
    Refused(ServerJsonRpcMessage),
    /// Nothing to do: a blank line.
    Nothing,
    /// An unreadable notification or response (logged), which JSON-RPC
    /// does not answer; why it could not be read.
    Dropped(String),
}

/// The answer to a message longer than `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ServerJsonRpcMessage {
    tracing::warn!(limit, "an MCP message exceeds the size limit");
    ServerJsonRpcMessage::error(
        ErrorData::invalid_request(
            format!(
                "the message exceeds the limit of {limit} bytes (max_message_size); it was not read"
            ),
            None,
        ),
        None,
    )
}

/// Read one message (without its line end).
pub(crate) fn read(bytes: &[u8]) -> Read {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Read::Nothing;
    }
    if let Some(call) = tools_call(bytes) {
        return Read::Message(call);
    }
    // Anything else costs rmcp's parse (and the failed direct try: about
    // 0.2 µs where `method` comes before `params`, as clients write it,
    // more where the params are read before the try fails); the diagnosis
    // below only runs for what rmcp cannot read.
    match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(JsonRpcMessage::Request(request)) => {
            if let ClientRequest::CustomRequest(custom) = &request.request
                && let Some(reason) = misshapen(custom)
            {
                let error = error_for(true, &reason, Some(&custom.method));
                return refuse(Some(request.id), error);
            }
            Read::Message(JsonRpcMessage::Request(request))
        }
        Ok(message) => Read::Message(message),
        Err(error) => diagnose(bytes, &error),
    }
}

/// A `tools/call` request and nothing more at its top level, its params
/// read by rmcp's own type in the same pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsCall {
    /// "2.0" only.
    #[serde(rename = "jsonrpc")]
    _jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    /// "tools/call" only.
    #[serde(rename = "method")]
    _method: CallToolRequestMethod,
    params: CallToolRequestParams,
}

/// The message most read, read directly: rmcp reads a request by trying
/// each request type in turn (`tools/call` is the fourteenth), each try
/// failing with an error message built and thrown away, over a copy of the
/// whole message in serde's buffer, and then its params through a second
/// buffer (to take `_meta` out). `None` for anything else or anything
/// unusual (another member beside the four, bad params), which the general
/// path reads, or refuses, as before.
fn tools_call(bytes: &[u8]) -> Option<ClientJsonRpcMessage> {
    let ToolsCall { id, mut params, .. } = serde_json::from_slice::<ToolsCall>(bytes).ok()?;
    // Where rmcp's reading puts `_meta` (the progress token): in the
    // request's extensions, not its params.
    let meta = params.meta.take();
    let mut request = CallToolRequest::new(params);
    if let Some(meta) = meta {
        request.extensions.insert(meta);
    }
    Some(JsonRpcMessage::Request(JsonRpcRequest::new(
        id,
        ClientRequest::CallToolRequest(request),
    )))
}

/// The methods rmcp reads into their own types. A request of one of them
/// whose params do not fit that type is read as a custom request (the
/// types are tried in turn, the custom one last), which would be answered
/// "method not found". (The deprecated logging and legacy resource
/// subscriptions are left out.)
const TYPED: &[(&str, WhyNot)] = &[
    (InitializeResultMethod::VALUE, why_not::<InitializeRequest>),
    (PingRequestMethod::VALUE, why_not::<PingRequest>),
    (ListToolsRequestMethod::VALUE, why_not::<ListToolsRequest>),
    (CallToolRequestMethod::VALUE, why_not::<CallToolRequest>),
    (GetTaskMethod::VALUE, why_not::<GetTaskRequest>),
    (UpdateTaskMethod::VALUE, why_not::<UpdateTaskRequest>),
    (CancelTaskMethod::VALUE, why_not::<CancelTaskRequest>),
    (
        SubscriptionsListenRequestMethod::VALUE,
        why_not::<SubscriptionsListenRequest>,
    ),
    (CompleteRequestMethod::VALUE, why_not::<CompleteRequest>),
    (
        ListPromptsRequestMethod::VALUE,
        why_not::<ListPromptsRequest>,
    ),
    (GetPromptRequestMethod::VALUE, why_not::<GetPromptRequest>),
    (
        ListResourcesRequestMethod::VALUE,
        why_not::<ListResourcesRequest>,
    ),
    (
        ListResourceTemplatesRequestMethod::VALUE,
        why_not::<ListResourceTemplatesRequest>,
    ),
    (
        ReadResourceRequestMethod::VALUE,
        why_not::<ReadResourceRequest>,
    ),
];

/// Why a request does not fit one method's type, if it does not.
type WhyNot = fn(&CustomRequest) -> Option<String>;

/// Why a request read as custom does not fit the type of its method, if
/// that method has one.
fn misshapen(custom: &CustomRequest) -> Option<String> {
    let (_, why_not) = TYPED.iter().find(|(method, _)| *method == custom.method)?;
    why_not(custom)
}

fn why_not<T: DeserializeOwned>(custom: &CustomRequest) -> Option<String> {
    let mut request = serde_json::Map::new();
    request.insert("method".into(), custom.method.clone().into());
    if let Some(params) = &custom.params {
        request.insert("params".into(), params.clone());
    }
    match serde_json::from_value::<T>(Value::Object(request)) {
        Ok(_) => None,
        Err(e) => Some(short(&e)),
    }
}

/// The members that tell a request, a notification and a response apart.
/// Other members are skipped without being decoded, so a lone surrogate
/// in `params` does not hide the id.
#[derive(Deserialize)]
struct Shape {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

fn diagnose(bytes: &[u8], error: &serde_json::Error) -> Read {
    let reason = short(error);
    let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
        && std::str::from_utf8(bytes).is_ok();
    // serde would read a struct from an array too: only an object has an id.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let Some(shape) = object
        .then(|| serde_json::from_slice::<Shape>(bytes).ok())
        .flatten()
    else {
        // Not even the outline of an object can be read: no id.
        return refuse(None, error_for(well_formed, &reason, None));
    };
    let id = shape
        .id
        .and_then(|v| serde_json::from_value::<RequestId>(v).ok());
    match (id, shape.method) {
        (Some(id), Some(method)) => {
            let method = method.as_str().map(str::to_owned);
            refuse(Some(id), error_for(well_formed, &reason, method.as_deref()))
        }
        (None, Some(method)) => {
            tracing::warn!(method = %method, reason, "an unreadable MCP notification was dropped");
            Read::Dropped(format!(
                "an unreadable notification (or a request without a string or number id): {reason}"
            ))
        }
        (Some(_), None) if shape.result.is_some() || shape.error.is_some() => {
            tracing::warn!(reason, "an unreadable MCP response was dropped");
            Read::Dropped(format!("an unreadable response: {reason}"))
        }
        (id, None) => refuse(
            id,
            ErrorData::invalid_request(format!("not a JSON-RPC 2.0 request: {reason}"), None),
        ),
    }
}

/// Bad JSON is a parse error; a readable request of the wrong shape has
/// invalid parameters (its method is known: rmcp reads unknown ones).
fn error_for(well_formed: bool, reason: &str, method: Option<&str>) -> ErrorData {
    match (well_formed, method) {
        (false, _) => {
            ErrorData::parse_error(format!("the message is not valid JSON: {reason}"), None)
        }
        (true, Some(method)) => {
            ErrorData::invalid_params(format!("invalid request `{method}`: {reason}"), None)
        }
        (true, None) => {
            ErrorData::invalid_request(format!("not a JSON-RPC 2.0 request: {reason}"), None)
        }
    }
}

fn refuse(id: Option<RequestId>, error: ErrorData) -> Read {
    tracing::warn!(id = ?id, code = error.code.0, message = %error.message, "an MCP message could not be read");
    Read::Refused(ServerJsonRpcMessage::error(error, id))
}

/// serde's reason, bounded: it may quote the client's input.
fn short(error: &serde_json::Error) -> String {
    const MAX: usize = 200;
    let mut reason = error.to_string();
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &str) -> Value {
        match read(line.as_bytes()) {
            Read::Refused(answer) => serde_json::to_value(answer).expect("json"),
            Read::Message(m) => panic!("read {line}: {m:?}"),
            Read::Nothing | Read::Dropped(_) => panic!("nothing for {line}"),
        }
    }

    /// What rmcp's own reading makes of a line, as JSON.
    fn as_rmcp_reads(line: &str) -> Value {
        let m = serde_json::from_str::<ClientJsonRpcMessage>(line).expect("rmcp reads it");
        serde_json::to_value(m).expect("json")
    }

    #[test]
    fn a_tools_call_is_read_directly_as_rmcp_would_read_it() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            r#"{"params":{"name":"e"},"method":"tools/call","id":"x-1","jsonrpc":"2.0"}"#,
            // The progress token goes where rmcp puts it, and comes back.
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"progressToken":"p"},"name":"e","arguments":{"n":1.5e3,"s":"\u00e9\n"}}}"#,
            // Members rmcp's params do not know are read past, as by rmcp.
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"e","task":{"ttl":5},"other":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"_meta":null,"name":"e","arguments":null}}"#,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"e","_meta":{"progressToken":7,"x":{"y":[]}},"requestState":"s"}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"e","_meta":{}}}"#,
        ] {
            let direct =
                tools_call(line.as_bytes()).unwrap_or_else(|| panic!("not direct: {line}"));
            assert_eq!(
                serde_json::to_value(direct).expect("json"),
                as_rmcp_reads(line),
                "{line}"
            );
        }
        let with_meta = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"progressToken":"p"},"name":"e"}}"#;
        let Some(JsonRpcMessage::Request(r)) = tools_call(with_meta.as_bytes()) else {
            panic!("not a request");
        };
        let ClientRequest::CallToolRequest(call) = r.request else {
            panic!("not tools/call");
        };
        assert!(call.params.meta.is_none(), "{:?}", call.params.meta);
        assert!(
            (call.extensions.get::<rmcp::model::RequestMetaObject>())
                .and_then(|m| m.get_progress_token())
                .is_some(),
            "the progress token is lost"
        );
    }

    #[test]
    fn anything_but_a_plain_tools_call_takes_the_general_path() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"e"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"e"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"str"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"e"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ok","arguments":{"s":"\ud800"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","name":"f"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":[1]}}"#,
        ] {
            assert!(
                tools_call(line.as_bytes()).is_none(),
                "read directly: {line}"
            );
        }
    }

    #[test]
    fn a_lone_surrogate_is_answered_under_the_request_id() {
        let answer = refused(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ok","arguments":{"s":"\ud800"}}}"#,
        );
        assert_eq!(answer["id"], 7, "{answer}");
        // Well-formed JSON, but not a string serde can read: bad params.
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }

    #[test]
    fn params_of_the_wrong_shape_are_invalid_params() {
        let answer = refused(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":"str"}"#);
        assert_eq!(answer["id"], "a", "{answer}");
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("tools/call")),
            "{answer}"
        );
    }

    #[test]
    fn deep_json_is_answered_under_its_id() {
        // tools/call too: the direct read skims its params without a depth
        // limit, and reading them then meets serde_json's.
        for (method, open, close) in [
            ("tools/list", "", ""),
            ("tools/call", r#"{"name":"e","arguments":{"a":"#, "}}"),
        ] {
            let deep = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{open}{}{}{close}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            let answer = refused(&deep);
            assert_eq!(answer["id"], 1, "{method}: {answer}");
            assert!(answer["error"]["code"].is_i64(), "{method}: {answer}");
        }
    }

    #[test]
    fn garbage_is_answered_without_an_id() {
        for line in ["not json", "[1,2]", "42", r#"{"id": 1, "method": "#] {
            let answer = refused(line);
            assert!(answer.get("id").is_none(), "{answer}");
            assert!(answer["error"]["code"].is_i64(), "{answer}");
        }
    }

    #[test]
    fn unreadable_notifications_and_blank_lines_get_no_answer() {
        let line = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":"str"}"#;
        assert!(matches!(read(line.as_bytes()), Read::Dropped(_)), "{line}");
        let null_id = r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#;
        assert!(matches!(read(null_id.as_bytes()), Read::Dropped(_)));
        assert!(matches!(read(b"   "), Read::Nothing));
    }

    #[test]
    fn params_that_do_not_fit_a_known_method_are_invalid_params() {
        for (line, field) in [
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#,
                "tools/call",
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}"#,
                "name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"tasks/get","params":{"taskId":[]}}"#,
                "tasks/get",
            ),
        ] {
            let answer = refused(line);
            assert_eq!(answer["id"], 3, "{answer}");
            assert_eq!(answer["error"]["code"], -32602, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{answer}");
        }
    }

    #[test]
    fn good_messages_and_unknown_methods_go_to_rmcp() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#,
        ] {
            assert!(matches!(read(line.as_bytes()), Read::Message(_)), "{line}");
        }
    }

    /// What reading the commonest message costs: `cargo test --release -p
    /// toolhost --lib mcp::wire -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints figures"]
    fn bench_reading_a_tools_call() {
        let line = br#"{"jsonrpc":"2.0","id":12345,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
        for _ in 0..3 {
            let n = 200_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(read(std::hint::black_box(line)));
            }
            println!(
                "read a tools/call: {:.0} ns",
                t.elapsed().as_nanos() as f64 / f64::from(n)
            );
        }
    }
}
