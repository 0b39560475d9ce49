//! The sandbox of one call: the store's data, its WASI context built from the
//! plugin's grants, and the host functions a plugin imports.
//!
//! Deny-by-default: stdin is closed, no environment, no preopened
//! directories, no sockets, no outgoing HTTP, unless the manifest grants them.
//! The plugin's stdout and stderr become log lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use wasmtime::component::{HasData, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreContextMut, StoreLimits};
use wasmtime_wasi::ResourceTableError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup as lookup;
use wasmtime_wasi::p2::bindings::sockets::network::{self, Network};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    FieldMapError, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::bindings::{self, CallContext, LogLevel};
use crate::error::Limit;
use crate::ids::CallIdentity;
use crate::limits::Limits;
use crate::manifest::{NetworkGrant, Permissions};
use crate::output::LogStream;

/// Resources a call may hold at once (streams, pollables, HTTP fields...).
pub(crate) const MAX_RESOURCES: usize = 4096;
/// The header fields of one HTTP message, in bytes.
pub(crate) const MAX_HTTP_FIELDS: usize = 32 * 1024;

/// Shared between a running call and whoever controls it: the flag that
/// `cancelled()` reads, and the forced stop that ends the call at its next
/// fuel yield or host-call await (B21).
#[derive(Debug, Default)]
pub(crate) struct CallControl {
    cancelled: AtomicBool,
    forced: AtomicBool,
    force: tokio::sync::Notify,
    /// Woken by a cancel as by a forced stop.
    cancel: tokio::sync::Notify,
}

impl CallControl {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Stop the call by force; it ends as cancelled.
    pub(crate) fn force_stop(&self) {
        Self::stop_all([(self, true)]);
    }

    /// Stop every call of `controls` by force.
    pub(crate) fn force_stop_all<'a>(controls: impl IntoIterator<Item = &'a Self>) {
        Self::stop_all(controls.into_iter().map(|c| (c, true)));
    }

    /// Cancel each call of `calls` (`cancelled()` returns true from now
    /// on), and stop by force those paired with `true`. Every flag is
    /// raised before any call is woken: one call that ends and frees its
    /// slot must not let another of them in while that one's flag is
    /// still down.
    pub(crate) fn stop_all<'a>(calls: impl IntoIterator<Item = (&'a Self, bool)>) {
        let calls: Vec<_> = calls.into_iter().collect();
        for &(c, forced) in &calls {
            c.cancelled.store(true, Ordering::Release);
            if forced {
                c.forced.store(true, Ordering::Release);
            }
        }
        for (c, forced) in calls {
            if forced {
                c.force.notify_waiters();
            }
            c.cancel.notify_waiters();
        }
    }

    /// Whether the call was stopped by force (a call that has not entered
    /// its plugin then never does).
    pub(crate) fn is_force_stopped(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Resolves once the call is cancelled (or stopped by force): what a
    /// call that has not entered its plugin yet waits on, since it has
    /// nothing to clean up in a grace period.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it loses nothing.
    pub(crate) async fn cancel_requested(&self) {
        raised(&self.cancel, &self.cancelled).await;
    }

    /// Resolves once [`force_stop`](Self::force_stop) has been called.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it loses nothing.
    pub(crate) async fn force_stopped(&self) {
        raised(&self.force, &self.forced).await;
    }
}

/// Resolves once `flag` is set; whoever sets it then wakes `notify`'s
/// waiters. Cancel safe.
async fn raised(notify: &tokio::sync::Notify, flag: &AtomicBool) {
    let notified = notify.notified();
    tokio::pin!(notified);
    // Registered before the flag is read, so a wake in between is not lost.
    notified.as_mut().enable();
    if flag.load(Ordering::Acquire) {
        return;
    }
    notified.await;
}

/// An update a plugin sent, with the fuel its call had burned by then and
/// whether the call was cancelled by then (such an update answers nothing,
/// B22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentUpdate {
    pub(crate) message: String,
    pub(crate) fuel_used: u64,
    pub(crate) after_cancel: bool,
}

/// Where a call's updates go. Boxed: every call makes its channel, which
/// allocates room for 32 messages at once (1.3 KiB of them unboxed, 0.3
/// KiB boxed), and most calls send few updates.
pub(crate) type Updates = mpsc::UnboundedSender<Box<SentUpdate>>;

/// The data of one call's store.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: HttpGrants,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) identity: CallIdentity,
    pub(crate) control: Arc<CallControl>,
    updates: Option<Updates>,
    /// The call's fuel budget, to tell the fuel burned from what is left.
    fuel: u64,
    bounds: Bounds,
    /// When the call last yielded at a host call
    /// ([`HostCallSlices`](crate::engine::HostCallSlices)).
    pub(crate) slice_started: std::time::Instant,
}

/// What a call may send the host through its imports, and what it sent.
struct Bounds {
    max_updates: u64,
    max_update_size: u64,
    log_budget: u64,
    updates: u64,
    logged: u64,
    log_dropped: u64,
    /// The limit (other than memory) that ended the call.
    hit: Option<Limit>,
}

impl CallState {
    /// A fresh sandbox for one call (or one `describe()`).
    pub(crate) fn new(
        grants: &Grants,
        identity: CallIdentity,
        limits: &Limits,
        control: Arc<CallControl>,
        updates: Option<Updates>,
    ) -> Self {
        let memory = limits.memory;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream::new(identity.clone(), "stdout"))
            .stderr(LogStream::new(identity.clone(), "stderr"))
            .envs(&grants.env);
        for dir in &grants.dirs {
            let perms = if dir.write {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            if let Err(e) = wasi.preopened_dir(&dir.host, &dir.guest, perms) {
                // The folder existed when the manifest was checked; report
                // and run without it rather than fail the call.
                tracing::warn!(plugin = %identity.plugin, dir = %dir.host.display(), error = %e, "granted directory is gone");
            }
        }
        if !grants.network.is_empty() {
            let network = grants.network.clone();
            // Name lookups are further narrowed to the granted names by
            // `GrantedLookups`, which stands in front of wasmtime's resolver.
            wasi.allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, use_| {
                    let network = network.clone();
                    Box::pin(async move { outgoing_allowed(&network, addr, use_).await })
                });
        }
        // Resources (streams, HTTP fields, pollables) live in host memory,
        // outside the plugin's memory limit: bound them too.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS);
        Self {
            wasi: wasi.build(),
            http,
            hooks: HttpGrants {
                network: grants.network.clone(),
            },
            table,
            limiter: MemoryLimiter {
                limits: wasmtime::StoreLimitsBuilder::new()
                    .memory_size(usize::try_from(memory).unwrap_or(usize::MAX))
                    .table_elements(1_000_000)
                    .instances(1000)
                    .build(),
                memory,
                total: 0,
                hit: false,
            },
            identity,
            control,
            updates,
            fuel: limits.fuel,
            slice_started: std::time::Instant::now(),
            bounds: Bounds {
                max_updates: limits.updates,
                max_update_size: limits.update_size,
                log_budget: limits.log,
                updates: 0,
                logged: 0,
                log_dropped: 0,
                hit: None,
            },
        }
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// The limit that ended the call with `trap`, if one did (B23).
    pub(crate) fn limit_hit(&self, trap: &wasmtime::Error) -> Option<Limit> {
        if self.limiter.hit {
            return Some(Limit::Memory(self.limiter.memory));
        }
        if self.bounds.hit.is_some() {
            return self.bounds.hit;
        }
        // The resource table and the header maps trap with their own
        // errors, somewhere in the trap's chain of causes.
        trap.chain().find_map(|cause| {
            if let Some(ResourceTableError::Full) = cause.downcast_ref::<ResourceTableError>() {
                return Some(Limit::Resources(MAX_RESOURCES as u64));
            }
            match cause.downcast_ref::<FieldMapError>() {
                Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields) => {
                    Some(Limit::HttpFields(MAX_HTTP_FIELDS as u64))
                }
                _ => None,
            }
        })
    }
}

/// Network grants are for outgoing traffic: connecting and sending to a
/// granted address, and the implicit bind to an ephemeral port that comes
/// with it. Listening, accepting and binding to a chosen port are denied.
async fn outgoing_allowed(
    network: &[NetworkGrant],
    addr: std::net::SocketAddr,
    use_: SocketAddrUse,
) -> bool {
    match use_ {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            addr.ip().is_unspecified() && addr.port() == 0
        }
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
            for g in network {
                if g.allows(addr).await {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// A plugin's grants, resolved once at load and shared by all its calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grants {
    env: Vec<(String, String)>,
    dirs: Vec<crate::manifest::DirGrant>,
    network: Arc<[NetworkGrant]>,
}

impl Grants {
    /// Resolve a manifest's permissions: environment values are read from the
    /// host's environment now; a granted variable that is unset is skipped.
    pub(crate) fn resolve(plugin: &str, p: &Permissions) -> Self {
        let env = p
            .env
            .iter()
            .filter_map(|k| match std::env::var(k) {
                Ok(v) => Some((k.clone(), v)),
                Err(_) => {
                    tracing::warn!(plugin, variable = %k, "granted environment variable is not set");
                    None
                }
            })
            .collect();
        Self {
            env,
            dirs: p.dirs.clone(),
            network: p.network.clone().into(),
        }
    }
}

/// Memory limits, remembering whether one was hit so that the call can be
/// reported as "memory limit" rather than as a crash (B23). `memory`
/// bounds the call's linear memories together: a component may have
/// several, each of which wasmtime would let grow to the limit alone.
struct MemoryLimiter {
    limits: StoreLimits,
    memory: u64,
    /// The bytes of all the call's linear memories.
    total: u64,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = (self.total + desired as u64).saturating_sub(current as u64);
        let ok = after <= self.memory && self.limits.memory_growing(current, desired, maximum)?;
        if ok {
            self.total = after;
        } else {
            self.hit = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Outgoing HTTP is allowed only to granted `host:port` pairs, so only
/// granted names are ever looked up.
struct HttpGrants {
    network: Arc<[NetworkGrant]>,
}

impl WasiHttpHooks for HttpGrants {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        // The connection is made to the authority as written, user
        // information included: `secret@granted.example` would make the
        // host's resolver look up a name the plugin chose.
        let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
        let allowed = !userinfo
            && uri.host().is_some_and(|host| {
                let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
                self.network.iter().any(|g| g.allows_authority(host, port))
            });
        if !allowed {
            tracing::warn!(uri = %uri, "outgoing HTTP request denied: not in the plugin's network grants");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl bindings::toolhost::plugin::types::Host for CallState {}

impl CallState {
    /// The `update` import: bounded, logged, and passed on with the fuel
    /// burned so far.
    fn send_update(&mut self, message: String, fuel_used: u64) -> wasmtime::Result<()> {
        let b = &mut self.bounds;
        b.updates += 1;
        if message.len() as u64 > b.max_update_size {
            b.hit = Some(Limit::UpdateSize(b.max_update_size));
            wasmtime::bail!("update of {} bytes over the limit", message.len());
        }
        if b.updates > b.max_updates {
            b.hit = Some(Limit::Updates(b.max_updates));
            wasmtime::bail!("update {} over the limit", b.updates);
        }
        let id = &self.identity;
        tracing::debug!(plugin = %id.plugin, tool = %id.tool, call_id = %id.call_id, %message, "update");
        if let Some(tx) = &self.updates {
            // The receiver is gone only when nobody waits for this call any
            // more; the update has nowhere to go.
            let _ = tx.send(Box::new(SentUpdate {
                message,
                fuel_used,
                after_cancel: self.control.is_cancelled(),
            }));
        }
        Ok(())
    }
}

impl bindings::toolhost::plugin::host::Host for CallState {
    /// Never reached from a plugin: [`linker`] defines `update` again with
    /// the store at hand, to read the fuel.
    fn update(&mut self, message: String) -> wasmtime::Result<()> {
        self.send_update(message, 0)
    }

    fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.control.is_cancelled())
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let id = &self.identity;
        let b = &mut self.bounds;
        let message = crate::output::clip(&message);
        if b.logged + message.len() as u64 > b.log_budget {
            if b.log_dropped == 0 {
                tracing::warn!(plugin = %id.plugin, tool = %id.tool, call_id = %id.call_id, budget = b.log_budget, "log budget of the call spent; its further log messages are dropped");
            }
            b.log_dropped += message.len() as u64;
            return Ok(());
        }
        b.logged += message.len() as u64;
        macro_rules! at {
            ($lvl:ident) => {
                tracing::$lvl!(target: "toolhost::plugin", plugin = %id.plugin, tool = %id.tool, call_id = %id.call_id, "{message}")
            };
        }
        match level {
            LogLevel::Trace => at!(trace),
            LogLevel::Debug => at!(debug),
            LogLevel::Info => at!(info),
            LogLevel::Warn => at!(warn),
            LogLevel::Error => at!(error),
        }
        Ok(())
    }

    fn call_info(&mut self) -> wasmtime::Result<CallContext> {
        Ok(CallContext {
            call_id: self.identity.call_id.clone(),
            session_id: self.identity.session_id.clone(),
            tool: self.identity.tool.clone(),
        })
    }
}

/// `wasi:sockets/ip-name-lookup` narrowed to the names a manifest grants:
/// a lookup of any other name is refused with `access-denied` before any
/// resolver is asked, so a plugin cannot leak data through the names it
/// looks up. A grant by IP address allows no lookup; an IP address written
/// as a name is still answered, since that asks no resolver. The rest is
/// wasmtime's implementation.
struct GrantedLookups<'a> {
    network: &'a [NetworkGrant],
    sockets: WasiSocketsCtxView<'a>,
}

impl GrantedLookups<'_> {
    fn allows(&self, name: &str) -> bool {
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        // A fully qualified name (`localhost.`) is the same name.
        let name = name.strip_suffix('.').unwrap_or(name);
        self.network.iter().any(|g| {
            g.host.parse::<std::net::IpAddr>().is_err() && g.host.eq_ignore_ascii_case(name)
        })
    }
}

impl lookup::Host for GrantedLookups<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<lookup::ResolveAddressStream>, SocketError> {
        if !self.allows(&name) {
            return Err(lookup::ErrorCode::AccessDenied.into());
        }
        self.sockets.resolve_addresses(network, name)
    }
}

impl lookup::HostResolveAddressStream for GrantedLookups<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<lookup::ResolveAddressStream>,
    ) -> Result<Option<lookup::IpAddress>, SocketError> {
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.sockets.subscribe(stream)
    }

    fn drop(&mut self, stream: Resource<lookup::ResolveAddressStream>) -> wasmtime::Result<()> {
        lookup::HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

/// Turns the lookup's errors into what the plugin is told, as wasmtime does.
impl network::Host for GrantedLookups<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<network::ErrorCode> {
        self.sockets.convert_error_code(error)
    }

    fn network_error_code(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<network::ErrorCode>> {
        self.sockets.network_error_code(error)
    }
}

impl network::HostNetwork for GrantedLookups<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, this)
    }
}

struct Lookups;

impl HasData for Lookups {
    type Data<'a> = GrantedLookups<'a>;
}

impl CallState {
    fn lookups(&mut self) -> GrantedLookups<'_> {
        GrantedLookups {
            network: &self.hooks.network,
            sockets: WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
        }
    }
}

/// The WIT interface of the host functions a plugin imports.
const HOST_INTERFACE: &str = "toolhost:plugin/host@0.1.0";

/// The linker every plugin is instantiated with: all of WASI preview 2,
/// `wasi:http`, and the `toolhost:plugin/host` interface.
pub(crate) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Name lookups only for granted names (see `GrantedLookups`): this
    // replaces the interface wasmtime just added.
    linker.allow_shadowing(true);
    lookup::add_to_linker::<CallState, Lookups>(&mut linker, CallState::lookups)?;
    linker.allow_shadowing(false);
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    // `update` once more, with the store at hand: each update carries the
    // fuel burned so far (what a running call shows), read only when the
    // plugin sends one.
    linker.allow_shadowing(true);
    linker.instance(HOST_INTERFACE)?.func_wrap(
        "update",
        |mut store: StoreContextMut<'_, CallState>, (message,): (String,)| {
            let left = store.get_fuel().ok();
            let state = store.data_mut();
            let fuel_used = left.map_or(0, |left| state.fuel.saturating_sub(left));
            state.send_update(message, fuel_used)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_limit_bounds_all_linear_memories_together() {
        let mut limiter = MemoryLimiter {
            limits: wasmtime::StoreLimitsBuilder::new().build(),
            memory: 64 << 20,
            total: 0,
            hit: false,
        };
        let grow = |l: &mut MemoryLimiter, current, desired| {
            l.memory_growing(current, desired, None).expect("no trap")
        };
        assert!(grow(&mut limiter, 0, 40 * MIB), "a first memory");
        assert!(
            !grow(&mut limiter, 0, 40 * MIB),
            "a second one past the sum"
        );
        assert!(limiter.hit);
        assert!(grow(&mut limiter, 0, 24 * MIB), "up to the limit in all");
        assert!(!grow(&mut limiter, 40 * MIB, 41 * MIB));
        // A growth past the memory's own maximum fails without counting.
        let mut fresh = MemoryLimiter {
            total: 0,
            hit: false,
            ..limiter
        };
        assert!(
            !fresh
                .memory_growing(0, 32 * MIB, Some(16 * MIB))
                .expect("no trap")
        );
        assert!(grow(&mut fresh, 0, 64 * MIB));
    }
}
