//! The texts that answer the model when a call goes on in the background
//! (B30): templates with named fields, good defaults, replaceable by the
//! embedder and by the host's configuration file.

use serde::Deserialize;

/// Every text the host writes into the conversation.
///
/// Fields are written `{name}`. Each template has its own set (see
/// [`Templates::fields`]); an unknown field is an error when the templates
/// are set, never a surprise in a conversation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Templates {
    /// The answer of a call released by its first update (B2).
    /// Fields: `call_id`, `tool`, `message`.
    pub update: String,
    /// The output of each later update (B3). Fields: `call_id`, `tool`, `message`, `n`.
    pub progress: String,
    /// The output of a released call's result (B4). Fields: `call_id`, `tool`, `output`.
    pub result: String,
    /// The output of a released call's error (B6). Fields: `call_id`, `tool`, `error`.
    pub error: String,
    /// A call cancelled before or after it was released (B22). Fields: `call_id`, `tool`.
    pub cancelled: String,
    /// A fire-and-forget call has started (B9). Fields: `call_id`, `tool`.
    pub started: String,
    /// A duplicate refused by `reject` (B11). Fields: `call_id`, `tool`, `running`.
    pub reject: String,
    /// A duplicate held by `confirm` (B12). Fields: `call_id`, `tool`, `running`.
    pub confirm: String,
    /// A duplicate waiting under `queue` (B14). Fields: `call_id`, `tool`, `running`.
    pub queued: String,
    /// The instructions of a reply request (B26). Fields: `count`.
    pub reply: String,
    /// The same, when the agent spoke since the items arrived (B27). Fields: `count`.
    pub reply_maybe_told: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            update: "{message}\n\n[toolhost: call {call_id} ({tool}) goes on in the background. \
                     Its progress and result will be delivered when ready; state only what this \
                     message says and do not invent a result. toolhost_task_status or \
                     toolhost_cancel_task with call_id \"{call_id}\" check on it or stop it.]"
                .into(),
            progress: "[toolhost: progress of call {call_id} ({tool}), update {n}] {message}"
                .into(),
            result: "[toolhost: result of call {call_id} ({tool})]\n{output}".into(),
            error: "[toolhost: call {call_id} ({tool}) failed] {error}".into(),
            cancelled: "[toolhost: call {call_id} ({tool}) was cancelled before it finished. \
                        There is no result; do not assume one.]"
                .into(),
            started: "[toolhost: {tool} started in the background as call {call_id}. Its outcome \
                      is recorded, not reported here; do not assume it succeeded or failed.]"
                .into(),
            reject: "[toolhost: not started. {tool} is already running as {running}. Wait for \
                     its result, which will be delivered, or stop it with toolhost_cancel_task \
                     and call again. Do not invent its result.]"
                .into(),
            confirm: "[toolhost: not started. {tool} is already running as {running}. If a \
                      second run is really wanted, call {tool} again with \
                      \"confirm_duplicate\": true; otherwise wait for the running call's result.]"
                .into(),
            queued: "[toolhost: queued as call {call_id}. {tool} will start when {running} has \
                     ended; its result will be delivered when ready. Do not invent it.]"
                .into(),
            reply: "[toolhost: {count} background item(s) above arrived since your last turn. \
                    Tell the user what they say, briefly, and state nothing they do not say.]"
                .into(),
            reply_maybe_told: "[toolhost: {count} background item(s) above arrived, and you \
                               have spoken since some of them did, so part of this may already \
                               be told. Mention only what is new; if nothing is, an empty reply \
                               is fine.]"
                .into(),
        }
    }
}

impl Templates {
    /// The defaults for clients that get no deliveries, such as MCP's: the
    /// texts that answer a call which goes on say how to learn more (the
    /// companion tools with the call_id) rather than promise a delivery.
    pub fn for_polling() -> Self {
        Self {
            update: "{message}\n\n[toolhost: call {call_id} ({tool}) goes on in the background. \
                     Its progress and result are not sent here: call toolhost_task_status with \
                     call_id \"{call_id}\" to learn them, or toolhost_cancel_task to stop it. State \
                     only what this message says and do not invent a result.]"
                .into(),
            reject: "[toolhost: not started. {tool} is already running as {running}. Ask \
                     toolhost_task_status for its result, or stop it with toolhost_cancel_task \
                     and call again. Do not invent its result.]"
                .into(),
            confirm: "[toolhost: not started. {tool} is already running as {running}. If a \
                      second run is really wanted, call {tool} again with \
                      \"confirm_duplicate\": true; otherwise ask toolhost_task_status for the \
                      running call's result.]"
                .into(),
            queued: "[toolhost: queued as call {call_id}. {tool} will start when {running} has \
                     ended. Ask toolhost_task_status with call_id \"{call_id}\" for its result; \
                     do not invent it.]"
                .into(),
            ..Self::default()
        }
    }

    /// The fields each template may use.
    pub fn fields(name: &str) -> &'static [&'static str] {
        match name {
            "update" => &["call_id", "tool", "message"],
            "progress" => &["call_id", "tool", "message", "n"],
            "result" => &["call_id", "tool", "output"],
            "error" => &["call_id", "tool", "error"],
            "cancelled" | "started" => &["call_id", "tool"],
            "reject" | "confirm" | "queued" => &["call_id", "tool", "running"],
            "reply" | "reply_maybe_told" => &["count"],
            _ => &[],
        }
    }

    fn all(&self) -> [(&'static str, &str); 11] {
        [
            ("update", &self.update),
            ("progress", &self.progress),
            ("result", &self.result),
            ("error", &self.error),
            ("cancelled", &self.cancelled),
            ("started", &self.started),
            ("reject", &self.reject),
            ("confirm", &self.confirm),
            ("queued", &self.queued),
            ("reply", &self.reply),
            ("reply_maybe_told", &self.reply_maybe_told),
        ]
    }

    /// Fill the `{name}` fields of any text written in the templates'
    /// syntax; braces around anything else stay as they are.
    pub fn fill(text: &str, fields: &[(&str, &str)]) -> String {
        render(text, fields)
    }

    /// Check that every template uses only its own fields.
    pub fn check(&self) -> Result<(), String> {
        for (name, text) in self.all() {
            for field in placeholders(text) {
                if !Self::fields(name).contains(&field) {
                    return Err(format!(
                        "template `{name}` uses the unknown field {{{field}}}; it may use {}",
                        Self::fields(name)
                            .iter()
                            .map(|f| format!("{{{f}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|rest| {
        let end = rest.find('}')?;
        let name = &rest[..end];
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .then_some(name)
    })
}

/// Fill a template's fields.
pub(crate) fn render(template: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}').and_then(|end| {
            fields
                .iter()
                .find(|(k, _)| *k == &after[..end])
                .map(|(_, v)| (end, v))
        }) {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_only_their_fields_and_name_the_call() {
        for t in [Templates::default(), Templates::for_polling()] {
            check_defaults(&t);
        }
        for text in Templates::for_polling().all() {
            assert!(!text.1.contains("will be delivered"), "{}", text.1);
        }
    }

    fn check_defaults(t: &Templates) {
        t.check().expect("defaults are valid");
        // B30: every text that answers a call which goes on names the call id(s).
        for text in [&t.update, &t.started, &t.queued] {
            assert!(text.contains("{call_id}"), "{text}");
        }
        for text in [&t.reject, &t.confirm] {
            assert!(text.contains("{running}"), "{text}");
        }
        // B30: they tell the model not to invent results.
        for text in [&t.update, &t.reject, &t.queued, &t.reply] {
            assert!(
                text.contains("invent") || text.contains("state nothing"),
                "{text}"
            );
        }
    }

    #[test]
    fn render_fills_known_fields_and_keeps_other_braces() {
        assert_eq!(
            render("{a} and {b} but {c} and {", &[("a", "1"), ("b", "2")]),
            "1 and 2 but {c} and {"
        );
        assert_eq!(render("{json: {a}}", &[("a", "x")]), "{json: x}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let t = Templates {
            reject: "busy: {runing}".into(),
            ..Default::default()
        };
        let e = t.check().expect_err("typo");
        assert!(
            e.contains("reject") && e.contains("{runing}") && e.contains("{running}"),
            "{e}"
        );
    }
}
