//! The `toolhost` command: list, call and check plugins of a folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::task::JoinHandle;
use toolhost::catalog::ToolView;
use toolhost::{FolderChanges, Host, HostConfig};

mod cli;

/// jemalloc rather than glibc's malloc: 0.87–0.95× the server's CPU per MCP
/// call and 0.86× the p50 of a session call, at about the same peak RSS,
/// for a warm start 2–18 % longer (README, Performance).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "toolhost",
    version,
    about = "Run WebAssembly component tools for LLM agents"
)]
struct Cli {
    /// The plugin folder: every `*.wasm` in it, with its optional `NAME.toml`.
    #[arg(
        long,
        global = true,
        env = "TOOLHOST_PLUGINS",
        default_value = "dist/plugins"
    )]
    plugins: PathBuf,
    /// Where compiled plugins are cached (default: ~/.cache/toolhost).
    #[arg(long, global = true, env = "TOOLHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// The host configuration file (default: ./toolhost.toml when it exists).
    #[arg(long, global = true, env = "TOOLHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Do not read or write the compile cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// The task store: where records of calls are kept across restarts
    /// (default: ~/.local/share/toolhost/tasks.db).
    #[arg(long, global = true, env = "TOOLHOST_STATE", value_name = "PATH")]
    state: Option<PathBuf>,
    /// Keep records of calls in memory only: lost when the host stops.
    #[arg(long, global = true, conflicts_with = "state")]
    no_state: bool,
    /// Serve only the tools of this profile of the configuration file.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Log more (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the tools of the plugin folder.
    List {
        /// Print JSON: every tool with its plugin and schemas.
        #[arg(long)]
        json: bool,
    },
    /// Call a tool: shows its progress while it runs, prints its result,
    /// exits non-zero on error. Ctrl-C cancels it (twice: stops it at once).
    Call {
        /// The tool name.
        tool: String,
        /// The arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
        /// Print the call's events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the tool list in the shape an LLM API expects.
    Schema {
        /// mcp, openai or anthropic.
        #[arg(long, default_value = "mcp")]
        format: toolhost::catalog::SchemaFormat,
        /// With --format openai: strict-mode tools (every schema made
        /// strict; a tool whose schema cannot be is an error).
        #[arg(long)]
        strict: bool,
    },
    /// Check a plugin file: what it provides and asks for, or why it is refused.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make a plugin folder to start from: `<LANG>-<NAME>/` with one working
    /// tool, a manifest and a README. It builds with `tools/build-plugins`.
    New {
        /// The plugin name: lowercase letters, digits, - and _. The tool is
        /// named after it (with _ for -).
        name: String,
        /// The language: rust, python, js or c.
        #[arg(long, value_enum)]
        lang: cli::Language,
        /// The folder to make it in.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
    },
    /// Serve the tools over MCP: on stdio, or over streamable HTTP with
    /// --http. The plugin folder is followed live.
    Serve {
        /// Serve streamable HTTP on this address (default 127.0.0.1:8700),
        /// at /mcp, instead of stdio.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8700")]
        http: Option<std::net::SocketAddr>,
        /// Accept this Host header too (HTTP; loopback names are always
        /// accepted). Repeat for more.
        #[arg(long, value_name = "HOST")]
        allow_host: Vec<String>,
        /// How calls answer: `release` (the first update answers, the call
        /// goes on) or `final` (the request stays open until the call ends,
        /// updates sent as progress). Default: the profile's, else release.
        #[arg(long, value_name = "MODE")]
        answer: Option<toolhost::AnswerMode>,
        /// The most HTTP sessions open at once (default 256); past it
        /// `initialize` is refused with an error naming the limit.
        #[arg(long, value_name = "N")]
        max_sessions: Option<usize>,
        /// The most HTTP connections open at once (default 512); past it a
        /// new connection is answered 503 with an error naming the limit.
        #[arg(long, value_name = "N")]
        max_connections: Option<usize>,
        /// Close an HTTP session after this long without a request, and
        /// none being answered (default 5m), e.g. `90s` or `10m`.
        #[arg(long, value_name = "DURATION")]
        session_idle: Option<humantime::Duration>,
    },
    /// Serve the dashboard: live calls, history, plugins and tools, and a
    /// form to try each tool. The plugin folder is followed live.
    Dashboard {
        /// Listen on this address. Any address but loopback needs a token.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8701")]
        addr: std::net::SocketAddr,
        /// The token every request must carry (default: `token` in the
        /// [dashboard] table of toolhost.toml).
        #[arg(long, env = "TOOLHOST_DASHBOARD_TOKEN", value_name = "TOKEN")]
        token: Option<String>,
        /// Accept this Host header too (loopback names are always accepted).
        /// Repeat for more.
        #[arg(long, value_name = "HOST")]
        allow_host: Vec<String>,
    },
    /// List recent calls from the task store, newest first; `tasks show ID`
    /// shows one with its updates and its result.
    Tasks {
        #[command(subcommand)]
        show: Option<cli::TasksCommand>,
        #[command(flatten)]
        filter: cli::TasksFilter,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // What is left is ours no more, such as a read of stdin from a
            // terminal, which cannot be cancelled and would hold the exit
            // until Enter; the task store was flushed in `run`.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::New { name, lang, dir } = &cli.command {
        return new(name, *lang, dir);
    }
    let mut config = match &cli.config {
        Some(path) => HostConfig::load_file(path)?,
        None if Path::new("toolhost.toml").exists() => HostConfig::load_file("toolhost.toml")?,
        None => HostConfig::default(),
    };
    if let Some(name) = &cli.profile {
        config.use_profile(name).map_err(anyhow::Error::msg)?;
    }
    if cli.no_cache {
        config.cache_dir = None;
    } else if let Some(dir) = cli.cache_dir.clone() {
        config.cache_dir = Some(dir);
    }
    let state = match (cli.no_state, &cli.state) {
        (true, _) => None,
        (false, Some(path)) => Some(path.clone()),
        (false, None) => toolhost::store::default_path(),
    };
    if let Command::Tasks { show, filter } = &cli.command {
        return cli::tasks(state.as_deref(), show.as_ref(), filter).await;
    }
    // The watch of the folder a server follows is set up beside the
    // folder's first listing; `serve` catches up with what changed in
    // between when it follows the watch.
    let watching = matches!(cli.command, Command::Serve { .. }).then(|| {
        let dir = cli.plugins.clone();
        tokio::task::spawn_blocking(move || FolderChanges::watch(dir))
    });
    // The commands that run calls keep their records (B31). They begin
    // before the engine is set up and the store is open: a server lists
    // the tools of unchanged plugins meanwhile. An engine that cannot be
    // set up ends the command with why.
    let host = if matches!(
        cli.command,
        Command::Serve { .. } | Command::Call { .. } | Command::Dashboard { .. }
    ) {
        let records = config.records;
        Host::opening(config, cli::open_store(state.clone(), records))
    } else {
        Host::new(config)?
    };
    let code = tokio::select! {
        biased;
        e = host.set_up_failed() => Err(e),
        code = command(&host, cli, watching) => code,
    };
    // Lazy writes of the last calls reach the disk before the process ends.
    if let Err(e) = host.store().flush().await {
        tracing::warn!(error = %e, "the last task records may not be kept");
    }
    code
}

/// The watch `run` began for `serve`.
async fn watched(watching: Option<JoinHandle<Result<FolderChanges>>>) -> Result<FolderChanges> {
    let watching = watching.context("the plugin folder was not watched")?;
    watching.await.context("watching the plugin folder")?
}

async fn command(
    host: &Host,
    cli: Cli,
    watching: Option<JoinHandle<Result<FolderChanges>>>,
) -> Result<ExitCode> {
    match cli.command {
        Command::Check { file, json } => check(host, &file, json).await,
        Command::Schema { format, strict } => {
            load(host, &cli.plugins).await?;
            let tools = host.open_session(Default::default()).tools();
            let rendered = match (format, strict) {
                (toolhost::catalog::SchemaFormat::OpenAi, true) => {
                    toolhost::catalog::render_openai_strict(&tools)
                        .map_err(|e| anyhow::anyhow!("these tools cannot be made strict:\n{e}"))?
                }
                (_, true) => anyhow::bail!("--strict goes with --format openai"),
                (format, false) => toolhost::catalog::render(&tools, format),
            };
            println!("{}", serde_json::to_string_pretty(&rendered)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::List { json } => {
            load(host, &cli.plugins).await?;
            list(host, json)
        }
        Command::Call {
            tool,
            arguments,
            json,
        } => {
            // Start loading; the call waits only until its tool is there.
            host.start_loading(&cli.plugins)
                .with_context(|| format!("loading plugins from {}", cli.plugins.display()))?;
            cli::call(host, &tool, &arguments, json).await
        }
        Command::Dashboard {
            addr,
            token,
            allow_host,
        } => {
            cli::dashboard(host, &cli.plugins, addr, token, allow_host).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::New { .. } | Command::Tasks { .. } => {
            unreachable!("handled before the host starts")
        }
        Command::Serve {
            http,
            allow_host,
            answer,
            max_sessions,
            max_connections,
            session_idle,
        } => {
            let sessions = cli::SessionFlags {
                max: max_sessions,
                connections: max_connections,
                idle: session_idle.map(Into::into),
            };
            cli::serve(
                host,
                &cli.plugins,
                watched(watching),
                http,
                allow_host,
                answer,
                sessions,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn new(name: &str, lang: cli::Language, dir: &Path) -> Result<ExitCode> {
    let made = cli::new_plugin(name, lang, dir)?;
    println!("created {}/", made.folder.display());
    for file in &made.files {
        println!("  {file}");
    }
    println!();
    println!("build and try it from the toolhost checkout:");
    println!("  tools/build-plugins {}", made.build_path);
    println!(
        "  tools/run call {} '{{\"text\": \"one two\\nthree\", \"delay_ms\": 500}}'",
        made.tool
    );
    Ok(ExitCode::SUCCESS)
}

async fn load(host: &Host, dir: &std::path::Path) -> Result<()> {
    host.load_dir(dir)
        .await
        .with_context(|| format!("loading plugins from {}", dir.display()))?;
    Ok(())
}

fn list(host: &Host, json: bool) -> Result<ExitCode> {
    let tools = host.tools();
    if json {
        let all: Vec<_> = tools
            .iter()
            .map(|t| ToolView::of(t.plugin.name(), &t.tool).to_json())
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if tools.is_empty() {
        eprintln!("no tools");
    }
    let width = tools.iter().map(|t| t.tool.name.len()).max().unwrap_or(0);
    for t in &tools {
        let first_line = t.tool.description.lines().next().unwrap_or_default();
        println!(
            "{:width$}  {:14}  {first_line}",
            t.tool.name,
            t.plugin.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(host: &Host, file: &std::path::Path, json: bool) -> Result<ExitCode> {
    let plugin = match host.check(file).await {
        Ok(p) => p,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "file": file, "reason": e.reason() })
                );
            } else {
                println!("refused: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let limits = plugin.limits();
    let perms = &plugin.manifest().permissions;
    if json {
        let tools: Vec<_> = plugin
            .tools()
            .iter()
            .map(|t| {
                let mut v = ToolView::of(plugin.name(), t).to_json();
                v["portability_warnings"] =
                    serde_json::json!(toolhost::portable::warnings(&t.input_schema));
                v
            })
            .collect();
        let value = serde_json::json!({
            "ok": true,
            "file": plugin.path(),
            "plugin": plugin.name(),
            "manifest": plugin.manifest_path(),
            "imports": plugin.imports(),
            "permissions": {
                "env": perms.env,
                "dirs": perms.dirs.iter().map(|d| serde_json::json!({"host": d.host, "guest": d.guest, "write": d.write})).collect::<Vec<_>>(),
                "network": perms.network.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            },
            "limits": {
                "fuel": limits.fuel, "memory": limits.memory,
                "timeout_ms": limits.timeout.as_millis() as u64,
                "max_concurrency": limits.max_concurrency,
                "cancel_grace_ms": limits.cancel_grace.as_millis() as u64,
                "updates": limits.updates, "update_size": limits.update_size,
                "result_size": limits.result_size, "log": limits.log,
                "metering": limits.metering.as_str(),
            },
            "tools": tools,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin   {} ({})", plugin.name(), plugin.path().display());
    match plugin.manifest_path() {
        Some(m) => println!("manifest {}", m.display()),
        None => println!("manifest none (no files, no environment, no network)"),
    }
    println!("tools");
    for t in plugin.tools() {
        let mut notes = vec![t.on_duplicate.as_str().to_owned()];
        if t.cancellable {
            notes.push("cancellable".into());
        }
        if !t.enabled {
            notes.push("disabled".into());
        }
        notes.push(t.delivery.as_str().into());
        println!(
            "  {}  [{}]  {}",
            t.name,
            notes.join(", "),
            t.description.lines().next().unwrap_or_default()
        );
        println!("    arguments: {}", t.input_schema);
        for w in toolhost::portable::warnings(&t.input_schema) {
            println!("    warning: {w}");
        }
    }
    println!("asks for");
    for i in plugin.imports() {
        println!("  {i}");
    }
    println!("granted");
    println!(
        "  env:     {}",
        if perms.env.is_empty() {
            "none".into()
        } else {
            perms.env.join(", ")
        }
    );
    if perms.dirs.is_empty() {
        println!("  dirs:    none");
    }
    for d in &perms.dirs {
        println!(
            "  dir:     {} as {} ({})",
            d.host.display(),
            d.guest,
            if d.write { "read-write" } else { "read-only" }
        );
    }
    let net: Vec<String> = perms.network.iter().map(|n| n.to_string()).collect();
    println!(
        "  network: {}",
        if net.is_empty() {
            "none".into()
        } else {
            net.join(", ")
        }
    );
    println!("limits   {limits}");
    Ok(ExitCode::SUCCESS)
}
