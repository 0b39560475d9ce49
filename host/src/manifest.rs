//! The plugin manifest, `NAME.toml` beside `NAME.wasm`.
//!
//! Every field is optional. Without a manifest a plugin gets no files, no
//! environment, no network and the host's default limits. Unknown keys, bad
//! sizes or durations and paths that do not exist are errors that name the
//! file and the key.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bindings::{DuplicatePolicy, DuplicateScope};
use crate::error::FileError;
use crate::limits::Metering;

/// A parsed and checked manifest. Relative `dirs` are resolved against the
/// manifest's folder.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub limits: LimitOverrides,
    pub permissions: Permissions,
    pub tools: BTreeMap<String, ToolOverride>,
}

/// Limits a manifest may set; `None` keeps the host's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub max_concurrency: Option<u32>,
    pub cancel_grace: Option<Duration>,
    pub updates: Option<u64>,
    pub update_size: Option<u64>,
    pub result_size: Option<u64>,
    pub log: Option<u64>,
    pub metering: Option<Metering>,
}

/// What a plugin may reach outside its sandbox. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Permissions {
    /// Environment variables passed from the host's environment.
    pub env: Vec<String>,
    pub dirs: Vec<DirGrant>,
    /// Outgoing connections allowed, for sockets and for `wasi:http`.
    pub network: Vec<NetworkGrant>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirGrant {
    /// Absolute path on the host.
    pub host: PathBuf,
    /// Where the plugin sees it.
    pub guest: String,
    pub write: bool,
}

/// `host:port`, where host is an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    pub host: String,
    pub port: u16,
}

impl NetworkGrant {
    /// Whether a connection to `addr` is covered by this grant. A DNS-name
    /// grant covers the addresses the name resolves to.
    pub async fn allows(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.port {
            return false;
        }
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return ip == addr.ip();
        }
        match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
            Ok(mut addrs) => addrs.any(|a| a.ip() == addr.ip()),
            Err(_) => false,
        }
    }

    /// Whether an HTTP authority (`host` or `host:port`) is covered, with
    /// `default_port` for the scheme when the authority names none.
    pub fn allows_authority(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        port == self.port && host.eq_ignore_ascii_case(&self.host)
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Per-tool changes to what `describe()` said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolOverride {
    pub on_duplicate: Option<DuplicatePolicy>,
    pub duplicate_scope: Option<DuplicateScope>,
    pub enabled: Option<bool>,
}

impl Manifest {
    /// Read and check the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let err = |message: String| FileError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(err)
    }

    /// Parse manifest text; relative host paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let raw: raw::Manifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let limits = limit_overrides(raw.limits)?;
        let mut dirs = Vec::new();
        for (i, d) in raw.permissions.dirs.into_iter().enumerate() {
            let host = base.join(&d.host);
            let host = host
                .canonicalize()
                .map_err(|e| format!("permissions.dirs[{i}].host: {}: {e}", host.display()))?;
            if !host.is_dir() {
                return Err(format!(
                    "permissions.dirs[{i}].host: {} is not a directory",
                    host.display()
                ));
            }
            if !d.guest.starts_with('/') {
                return Err(format!(
                    "permissions.dirs[{i}].guest: {:?} must be an absolute path",
                    d.guest
                ));
            }
            dirs.push(DirGrant {
                host,
                guest: d.guest,
                write: d.write,
            });
        }
        for (i, name) in raw.permissions.env.iter().enumerate() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(format!(
                    "permissions.env[{i}]: {name:?} is not a variable name"
                ));
            }
        }
        let network = raw
            .permissions
            .network
            .iter()
            .enumerate()
            .map(|(i, s)| parse_grant(s).map_err(|e| format!("permissions.network[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        let tools = raw
            .tools
            .into_iter()
            .map(|(name, t)| {
                (
                    name,
                    ToolOverride {
                        on_duplicate: t.on_duplicate.map(Into::into),
                        duplicate_scope: t.duplicate_scope.map(Into::into),
                        enabled: t.enabled,
                    },
                )
            })
            .collect();
        Ok(Self {
            limits,
            permissions: Permissions {
                env: raw.permissions.env,
                dirs,
                network,
            },
            tools,
        })
    }
}

/// Check the `[limits]` table of a manifest or of the host's configuration.
pub(crate) fn limit_overrides(raw: raw::Limits) -> Result<LimitOverrides, String> {
    let limits = LimitOverrides {
        fuel: raw.fuel,
        memory: raw
            .memory
            .map(|m| m.bytes().map_err(|e| format!("limits.memory: {e}")))
            .transpose()?,
        timeout: duration("limits.timeout", raw.timeout)?,
        max_concurrency: raw.max_concurrency,
        cancel_grace: duration("limits.cancel-grace", raw.cancel_grace)?,
        updates: raw.updates,
        update_size: size("limits.update-size", raw.update_size)?,
        result_size: size("limits.result-size", raw.result_size)?,
        log: size("limits.log", raw.log)?,
        metering: raw
            .metering
            .map(|m| m.parse().map_err(|e| format!("limits.metering: {e}")))
            .transpose()?,
    };
    if limits.fuel == Some(0) {
        return Err("limits.fuel: must be more than 0".into());
    }
    if limits.max_concurrency == Some(0) {
        return Err("limits.max-concurrency: must be at least 1".into());
    }
    Ok(limits)
}

/// A TOML error on one line, with where it is.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn size(key: &str, value: Option<Size>) -> Result<Option<u64>, String> {
    value
        .map(|v| v.bytes().map_err(|e| format!("{key}: {e}")))
        .transpose()
}

fn duration(key: &str, value: Option<String>) -> Result<Option<Duration>, String> {
    value
        .map(|v| humantime::parse_duration(&v).map_err(|e| format!("{key}: {v:?}: {e}")))
        .transpose()
}

fn parse_grant(s: &str) -> Result<NetworkGrant, String> {
    let bad = || format!("{s:?} is not host:port");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid_name = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if host.parse::<IpAddr>().is_err() && !valid_name {
        return Err(bad());
    }
    Ok(NetworkGrant {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The manifest as written, before checking.
pub(crate) mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Manifest {
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub permissions: Permissions,
        #[serde(default)]
        pub tools: BTreeMap<String, Tool>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Limits {
        pub fuel: Option<u64>,
        pub memory: Option<super::Size>,
        pub timeout: Option<String>,
        pub max_concurrency: Option<u32>,
        pub cancel_grace: Option<String>,
        pub updates: Option<u64>,
        pub update_size: Option<super::Size>,
        pub result_size: Option<super::Size>,
        pub log: Option<super::Size>,
        pub metering: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Permissions {
        #[serde(default)]
        pub env: Vec<String>,
        #[serde(default)]
        pub dirs: Vec<Dir>,
        #[serde(default)]
        pub network: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dir {
        pub host: String,
        pub guest: String,
        #[serde(default)]
        pub write: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Tool {
        pub on_duplicate: Option<super::Policy>,
        pub duplicate_scope: Option<super::Scope>,
        pub enabled: Option<bool>,
    }
}

/// A size written as bytes (`1048576`) or with a unit (`"64MiB"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(b),
            Size::Text(t) => t
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| format!("{t:?}: {e}")),
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Policy {
    Allow,
    Reject,
    Replace,
    Confirm,
    Queue,
}

impl From<Policy> for DuplicatePolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Allow => DuplicatePolicy::Allow,
            Policy::Reject => DuplicatePolicy::Reject,
            Policy::Replace => DuplicatePolicy::Replace,
            Policy::Confirm => DuplicatePolicy::Confirm,
            Policy::Queue => DuplicatePolicy::Queue,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scope {
    Name,
    NameAndArguments,
}

impl From<Scope> for DuplicateScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Name => DuplicateScope::Name,
            Scope::NameAndArguments => DuplicateScope::NameAndArguments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_parses() {
        let dir = std::env::temp_dir();
        let text = format!(
            r#"
[limits]
fuel = 5_000_000_000
memory = "64MiB"
timeout = "5m"
max-concurrency = 16
cancel-grace = "1s"

[permissions]
env = ["WEATHER_API_KEY"]
dirs = [{{ host = "{}", guest = "/data", write = false }}]
network = ["127.0.0.1:8080", "api.example.com:443"]

[tools.book_flight]
on-duplicate = "confirm"
enabled = true
"#,
            dir.display()
        );
        let m = Manifest::parse(&text, Path::new(".")).expect("parses");
        assert_eq!(m.limits.memory, Some(64 << 20));
        assert_eq!(m.limits.timeout, Some(Duration::from_secs(300)));
        assert_eq!(m.limits.cancel_grace, Some(Duration::from_secs(1)));
        assert_eq!(m.limits.metering, None, "fuel unless asked");
        assert_eq!(m.permissions.network[1].host, "api.example.com");
        assert_eq!(m.permissions.network[1].port, 443);
        assert_eq!(
            m.tools["book_flight"].on_duplicate,
            Some(DuplicatePolicy::Confirm)
        );
    }

    #[test]
    fn metering_is_fuel_or_epoch() {
        let m =
            Manifest::parse("[limits]\nmetering = \"epoch\"\n", Path::new(".")).expect("parses");
        assert_eq!(m.limits.metering, Some(Metering::Epoch));
        let m = Manifest::parse("[limits]\nmetering = \"fuel\"\n", Path::new(".")).expect("parses");
        assert_eq!(m.limits.metering, Some(Metering::Fuel));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[limits]\nfule = 1\n", "fule"),
            ("[limits]\nmemory = \"lots\"\n", "limits.memory"),
            ("[limits]\ntimeout = \"soon\"\n", "limits.timeout"),
            (
                "[limits]\nmetering = \"cycles\"\n",
                "limits.metering: \"cycles\" is not a metering mode",
            ),
            (
                "[permissions]\nnetwork = [\"nope\"]\n",
                "permissions.network[0]",
            ),
            (
                "[permissions]\ndirs = [{ host = \"/does/not/exist\", guest = \"/d\" }]\n",
                "permissions.dirs[0].host",
            ),
            ("[tools.x]\non-duplicate = \"sometimes\"\n", "sometimes"),
        ];
        for (text, needle) in cases {
            let e = Manifest::parse(text, Path::new(".")).expect_err(text);
            assert!(e.contains(needle), "{e:?} should mention {needle}");
        }
    }
}
