//! The one place that narrows wasmtime's flexibility to the choices toolhost
//! makes: the engines, their linkers and compile caches, and every store.
//!
//! A plugin runs in one of two engines, by its [`Metering`]. By default every
//! call is fuel-metered and yields to the async runtime at a fixed fuel
//! interval, so a spinning plugin never blocks a runtime thread and can be
//! stopped at its next yield. A plugin that asks for `metering = "epoch"`
//! runs in a second engine, built when the first such plugin loads, whose
//! code checks an epoch counter instead of counting fuel; one thread
//! advances the counter every millisecond while that engine exists, and a
//! call yields at each tick. Instances come from a pooling allocator (one
//! per engine) sized by [`EngineConfig`].

mod cache;
mod yielding;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SetOnce, watch};
use tokio_util::sync::DropGuard;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{
    Config, Engine, EngineWeak, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    Store,
};

use crate::limits::Metering;
use crate::sandbox::CallState;
use crate::startup::SetUpGate;

pub(crate) use self::cache::{CacheOutcome, CompileCache, FileStamp, Known};
pub(crate) use self::yielding::{Cooperative, HostCallSlices, run_slice};

/// How much fuel a call burns, by default, between two yields to the async
/// runtime.
///
/// One unit of fuel is roughly one WebAssembly instruction; 1 000 000
/// units are about 0.1 ms of a tight loop on this machine (a spinning test
/// plugin burns 10 000 000 000 in about a second), so a cancelled or
/// timed-out spinning call stops within a fraction of a millisecond. Ten
/// times as many yields cost 7–14 % more time on a compute-heavy tool and
/// keep 1.24 cores busy for one spinning call instead of 1.13, for about
/// 0.1 ms less to cancel it (p99 alone 0.19–0.23 ms against 0.28–0.36 ms);
/// the fuel checks themselves cost more (see the benchmark in the README).
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// Core instances one component instance may hold (Python components
/// built by componentize-py hold 14).
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;

/// Linear memories of the pool per instance: most plugins have one, the
/// C (preview 1 adapter), Python and JavaScript ones two or more.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// The address space each memory slot reserves by default (wasmtime's 64-bit
/// default): a 32-bit memory can then never reach past its slot, so compiled
/// code needs no bounds checks.
const FULL_RESERVATION: u64 = 4 << 30;

/// The guard region after each memory slot (wasmtime's 64-bit default).
const GUARD: u64 = 32 << 20;

/// The address space the memory pool of one engine may take with full
/// reservations: 32 TiB of the 128 TiB a Linux x86-64 process has, about
/// 4 000 instances.
const POOL_ADDRESS_SPACE: u64 = 32 << 40;

/// How often the epoch engine's counter advances, and so how often a call
/// of an epoch-metered plugin yields: a cancelled or timed-out call stops
/// within about one tick.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The engine-wide settings. Start from [`EngineConfig::default`].
///
/// Defaults:
/// - `instances`: 256 plugin instances alive at once across all plugins
///   (each running call and each `describe()` holds one): sixteen plugins
///   at their default `max-concurrency`. The pool is set up when the
///   engine is, at about 4 µs an instance (one `mprotect` for each fiber
///   stack's guard page), so a larger pool slows every start. Each
///   instance reserves 8 GiB of address space for two memories; past
///   about 4 000 instances a memory reserves only `max_memory`, and
///   compiled code checks its memory bounds (slower on memory-heavy
///   tools). `[engine] instances` in `toolhost.toml` sets it.
/// - `max_memory`: 1 GiB, the largest linear memory any plugin may be granted.
/// - `pooling`: true; false uses on-demand allocation (no fixed slot count,
///   slower to instantiate).
/// - `fuel`: true. False turns fuel metering off, and with it the fuel
///   budget and the yields; it exists to measure what metering costs.
/// - `yield_interval`: 1 000 000 units of fuel between yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    pub instances: u32,
    pub max_memory: u64,
    pub pooling: bool,
    pub fuel: bool,
    pub yield_interval: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            instances: 256,
            max_memory: 1 << 30,
            pooling: true,
            fuel: true,
            yield_interval: FUEL_YIELD_INTERVAL,
        }
    }
}

/// How much of an instance pool is in use: each running call and each
/// `describe()` holds an instance, and past the pool's `size` they wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceUse {
    /// The pool's instances ([`EngineConfig::instances`]).
    pub size: usize,
    /// Held by running calls and `describe()`s.
    pub held: usize,
    /// Calls and `describe()`s waiting for one.
    pub waiting: usize,
}

/// An instance of a pool, held until dropped.
pub(crate) struct InstancePermit {
    _permit: OwnedSemaphorePermit,
    usage: Arc<watch::Sender<InstanceUse>>,
}

impl Drop for InstancePermit {
    fn drop(&mut self) {
        count(&self.usage, |u| u.held -= 1);
    }
}

/// A wait for an instance, counted while it lasts.
struct Waiting<'a>(&'a watch::Sender<InstanceUse>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        count(self.0, |u| u.waiting -= 1);
    }
}

/// Count a change in a pool's use, waking its watchers only when it has
/// any (a dashboard open): a watch's wake takes eight locks, which every
/// call would otherwise pay twice, for its instance taken and given back.
/// A watcher that comes later reads the count as it is.
fn count(usage: &watch::Sender<InstanceUse>, change: impl FnOnce(&mut InstanceUse)) {
    usage.send_if_modified(|u| {
        change(u);
        usage.receiver_count() > 0
    });
}

/// The engines of a host: the fuel-metered one every plugin uses by
/// default, and the epoch-interrupted one, built when a plugin first asks
/// for it.
///
/// The fuel engine may still be being set up (see [`building`](Self::building)):
/// what needs it waits with [`ready`](Self::ready), and the compile cache's
/// knowledge of plugin files, which a start lists tools from, needs no
/// engine at all.
pub(crate) struct Runtime {
    fuel: Arc<SetOnce<Result<Sandboxes, String>>>,
    /// Opened when the fuel engine's set-up may begin.
    set_up: SetUpGate,
    /// Dropped with the engines: a set-up not begun by then never begins,
    /// nor does the store's opening that waits for the same gate.
    _abandon: Option<DropGuard>,
    /// The fuel engine's instances, counted from before it is set up.
    fuel_pool: Pool,
    epoch: OnceLock<Sandboxes>,
    /// Held while the epoch engine is built, so it is built once.
    building_epoch: Mutex<()>,
    cache: CompileCache,
    config: EngineConfig,
}

/// Sets the fuel engine's set-up as failed when it is dropped before the
/// set-up ends (it panicked, or the runtime stopped before it began), so
/// that nothing waits for it forever.
struct SettingUp(Arc<SetOnce<Result<Sandboxes, String>>>);

impl Drop for SettingUp {
    fn drop(&mut self) {
        let _ = (self.0).set(Err("the engine's set-up stopped before it ended".into()));
    }
}

impl Runtime {
    /// The engines, the fuel one set up before this returns.
    pub(crate) fn new(config: &EngineConfig, cache_dir: Option<PathBuf>) -> Result<Self> {
        let runtime = Self::unbuilt(config, cache_dir, SetUpGate::opened());
        let (cache, pool) = (runtime.cache.clone(), runtime.fuel_pool.clone());
        let fuel = Sandboxes::set_up(config, Metering::Fuel, cache, pool);
        let _ = runtime.fuel.set(Ok(fuel.map_err(|e| anyhow::anyhow!(e))?));
        Ok(runtime)
    }

    /// The engines, returned at once; the fuel engine is set up on a
    /// blocking thread (a few milliseconds, mostly reserving the instance
    /// pool) once `set_up` opens, which [`ready`](Self::ready) and
    /// [`begin_set_up`](Self::begin_set_up) do (see [`crate::startup`]).
    /// Must be called within a tokio runtime.
    pub(crate) fn building(
        config: &EngineConfig,
        cache_dir: Option<PathBuf>,
        set_up: SetUpGate,
    ) -> Self {
        let mut runtime = Self::unbuilt(config, cache_dir, set_up);
        runtime._abandon = Some(runtime.set_up.abandon_on_drop());
        let setting_up = SettingUp(runtime.fuel.clone());
        let (config, cache, pool, gate) = (
            runtime.config.clone(),
            runtime.cache.clone(),
            runtime.fuel_pool.clone(),
            runtime.set_up.clone(),
        );
        tokio::spawn(async move {
            if !gate.wait().await {
                return;
            }
            tokio::task::spawn_blocking(move || {
                let fuel = Sandboxes::set_up(&config, Metering::Fuel, cache, pool);
                let _ = setting_up.0.set(fuel);
            });
        });
        runtime
    }

    fn unbuilt(config: &EngineConfig, cache_dir: Option<PathBuf>, set_up: SetUpGate) -> Self {
        Self {
            fuel: Arc::new(SetOnce::new()),
            set_up,
            _abandon: None,
            fuel_pool: Pool::new(config),
            epoch: OnceLock::new(),
            building_epoch: Mutex::new(()),
            cache: CompileCache::for_this_build(cache_dir),
            config: config.clone(),
        }
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The compile cache all engines share: what it remembers of plugin
    /// files (their hashes, what their last load described) needs no
    /// engine; each engine keys its compiled artifacts by its own
    /// fingerprint.
    pub(crate) fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// Let the fuel engine's set-up begin, if it has not (see
    /// [`crate::startup`]).
    pub(crate) fn begin_set_up(&self) {
        self.set_up.open();
    }

    /// Why the fuel engine could not be set up, once its set-up has begun
    /// and failed; pending otherwise. Waiting for it does not begin the
    /// set-up.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn set_up_failed(&self) -> anyhow::Error {
        match self.fuel.wait().await {
            Err(e) => anyhow::anyhow!("{e}"),
            Ok(_) => std::future::pending().await,
        }
    }

    /// Wait until the engine of `metering` is set up (the epoch one is
    /// built now if it is not yet, the fuel one's set-up begun), or fails
    /// to be.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn ready(self: &Arc<Self>, metering: Metering) -> Result<&Sandboxes> {
        match metering {
            Metering::Fuel => {
                self.begin_set_up();
                match self.fuel.wait().await {
                    Ok(fuel) => Ok(fuel),
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                }
            }
            Metering::Epoch => {
                if let Some(epoch) = self.epoch.get() {
                    return Ok(epoch);
                }
                // Building an engine takes a millisecond or more, and the
                // first epoch-metered load may be beside a call or an
                // answer: off the runtime's threads. Built to the end even
                // if this wait is dropped.
                let runtime = self.clone();
                tokio::task::spawn_blocking(move || runtime.sandboxes(metering).map(|_| ()))
                    .await
                    .map_err(|e| anyhow::anyhow!("building the epoch engine: {e}"))??;
                self.sandboxes(metering)
            }
        }
    }

    /// The engine of plugins metered by `metering`, built on first use for
    /// the epoch one. The fuel engine must be [`ready`](Self::ready): what
    /// runs a plugin comes after its load, which waited for it.
    pub(crate) fn sandboxes(&self, metering: Metering) -> Result<&Sandboxes> {
        match metering {
            Metering::Fuel => match self.fuel.get() {
                Some(Ok(fuel)) => Ok(fuel),
                Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
                None => anyhow::bail!("the engine is not set up yet"),
            },
            Metering::Epoch => {
                if let Some(epoch) = self.epoch.get() {
                    return Ok(epoch);
                }
                let _building = self
                    .building_epoch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(epoch) = self.epoch.get() {
                    return Ok(epoch);
                }
                let pool = Pool::new(&self.config);
                let epoch =
                    Sandboxes::set_up(&self.config, Metering::Epoch, self.cache.clone(), pool)
                        .map_err(|e| anyhow::anyhow!(e))?;
                tick(epoch.engine.weak());
                Ok(self.epoch.get_or_init(|| epoch))
            }
        }
    }

    /// The pool of `metering`'s engine; the fuel one's is there before its
    /// engine is.
    fn pool(&self, metering: Metering) -> Result<&Pool> {
        match metering {
            Metering::Fuel => Ok(&self.fuel_pool),
            Metering::Epoch => Ok(&self.sandboxes(metering)?.pool),
        }
    }

    /// Wait for an instance of the pool of `metering`'s engine to be free,
    /// and hold it until the permit is dropped, which must be after the
    /// store it was taken for.
    pub(crate) async fn instance(&self, metering: Metering) -> Result<InstancePermit> {
        if let Some(free) = self.free_instance(metering)? {
            return Ok(free);
        }
        let pool = self.pool(metering)?;
        count(&pool.usage, |u| u.waiting += 1);
        // Counted out again however the wait ends, cancelled too.
        let _waiting = Waiting(&pool.usage);
        let permit = (pool.instances.clone().acquire_owned().await)
            .context("the instance pool is closed")?;
        Ok(pool.held(permit))
    }

    /// An instance of the pool of `metering` if one is free now, without
    /// waiting (`None` if none is).
    pub(crate) fn free_instance(&self, metering: Metering) -> Result<Option<InstancePermit>> {
        let pool = self.pool(metering)?;
        Ok(match pool.instances.clone().try_acquire_owned() {
            Ok(permit) => Some(pool.held(permit)),
            Err(tokio::sync::TryAcquireError::NoPermits) => None,
            Err(tokio::sync::TryAcquireError::Closed) => {
                anyhow::bail!("the instance pool is closed")
            }
        })
    }

    /// How much of the fuel engine's instance pool is in use, as it changes.
    pub(crate) fn instance_use(&self) -> watch::Receiver<InstanceUse> {
        self.fuel_pool.usage.subscribe()
    }

    /// A fresh store for one call (or one `describe()`) of a plugin metered
    /// by `metering`; see [`Sandboxes::store`].
    pub(crate) fn store(
        &self,
        metering: Metering,
        state: CallState,
        fuel: u64,
    ) -> Result<Store<CallState>> {
        self.sandboxes(metering)?.store(state, fuel)
    }

    /// The fuel a store burned from its budget of `fuel`; 0 for a store
    /// that counts none (epoch metering, or fuel turned off).
    pub(crate) fn fuel_used(store: &Store<CallState>, fuel: u64) -> u64 {
        store.get_fuel().map_or(0, |left| fuel.saturating_sub(left))
    }
}

/// A permit per instance of an engine's pool: a call or `describe()`
/// holds one from before it instantiates until its store is dropped, so
/// past the pool's size they wait their turn instead of failing.
#[derive(Clone)]
struct Pool {
    instances: Arc<Semaphore>,
    usage: Arc<watch::Sender<InstanceUse>>,
}

impl Pool {
    fn new(config: &EngineConfig) -> Self {
        let size = match config.pooling {
            true => config.instances as usize,
            false => Semaphore::MAX_PERMITS,
        };
        Self {
            instances: Arc::new(Semaphore::new(size)),
            usage: Arc::new(watch::Sender::new(InstanceUse {
                size,
                ..InstanceUse::default()
            })),
        }
    }

    /// `permit`, counted as held until it is dropped.
    fn held(&self, permit: OwnedSemaphorePermit) -> InstancePermit {
        count(&self.usage, |u| u.held += 1);
        InstancePermit {
            _permit: permit,
            usage: self.usage.clone(),
        }
    }
}

/// One engine with the linker and instance pool that belong to it, and
/// the compile cache all engines share (its compiled artifacts keyed by
/// this engine's fingerprint). Components, instances and stores of one
/// engine never mix with another's.
pub(crate) struct Sandboxes {
    metering: Metering,
    engine: Engine,
    pool: Pool,
    linker: Linker<CallState>,
    cache: CompileCache,
    /// The engine's fingerprint: what its compiled artifacts are keyed by.
    fingerprint: String,
    fuel: bool,
    yield_interval: u64,
}

impl Sandboxes {
    /// Set an engine up, or say why it cannot be.
    fn set_up(
        config: &EngineConfig,
        metering: Metering,
        cache: CompileCache,
        pool: Pool,
    ) -> Result<Self, String> {
        let started = std::time::Instant::now();
        let set_up = Self::new(config, metering, cache, pool).map_err(|e| format!("{e:#}"));
        match &set_up {
            Ok(_) => {
                tracing::debug!(elapsed = ?started.elapsed(), ?metering, "the engine is set up")
            }
            Err(e) => tracing::error!(error = %e, ?metering, "the engine could not be set up"),
        }
        set_up
    }

    fn new(
        config: &EngineConfig,
        metering: Metering,
        cache: CompileCache,
        pool: Pool,
    ) -> Result<Self> {
        let engine = build(config, metering)?;
        let linker = crate::sandbox::linker(&engine)?;
        Ok(Self {
            metering,
            fingerprint: fingerprint(&engine, metering),
            engine,
            pool,
            linker,
            cache,
            fuel: config.fuel && metering == Metering::Fuel,
            yield_interval: config.yield_interval.max(1),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled form of `bytes` (whose BLAKE3 hash is `hash`), from the
    /// cache or freshly compiled. Blocking: compiling a large component
    /// takes seconds.
    pub(crate) fn compile(
        &self,
        hash: &blake3::Hash,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome)> {
        (self.cache).load(&self.engine, &self.fingerprint, hash, bytes)
    }

    /// The compiled form of the file whose hash is `hash`, when the cache
    /// has a usable one for this engine: mapped from the cache file.
    pub(crate) fn cached(&self, hash: &blake3::Hash) -> Option<Component> {
        (self.cache).cached(&self.engine, &self.fingerprint, hash)
    }

    pub(crate) fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// Resolve a component's imports against the host's linker.
    pub(crate) fn instantiate_pre(&self, component: &Component) -> Result<InstancePre<CallState>> {
        Ok(self.linker.instantiate_pre(component)?)
    }

    /// A fresh store for one call (or one `describe()`), with its memory
    /// limiter and what interrupts it: its fuel budget and yield interval,
    /// or a yield at every epoch tick.
    fn store(&self, state: CallState, fuel: u64) -> Result<Store<CallState>> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter());
        store.call_hook_async(HostCallSlices);
        match self.metering {
            Metering::Fuel if self.fuel => {
                store.set_fuel(fuel)?;
                store.fuel_async_yield_interval(Some(self.yield_interval))?;
            }
            Metering::Fuel => {}
            Metering::Epoch => {
                store.set_epoch_deadline(1);
                store.epoch_deadline_async_yield_and_update(1);
            }
        }
        Ok(store)
    }
}

/// Advance the epoch of `engine` every [`EPOCH_TICK`], on a thread of its
/// own (so that ticks go on when every runtime thread is busy), until the
/// engine is dropped.
fn tick(engine: EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("toolhost-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without ticks a call of an epoch plugin never yields: it cannot
        // be cancelled or timed out, only finish.
        tracing::error!(error = %e, "cannot start the epoch thread; epoch-metered calls cannot be stopped");
    }
}

/// Build an engine: fuel-metered (unless `config.fuel` is off) or
/// epoch-interrupted.
fn build(config: &EngineConfig, metering: Metering) -> Result<Engine> {
    let mut c = Config::new();
    c.wasm_component_model(true)
        .consume_fuel(config.fuel && metering == Metering::Fuel)
        .epoch_interruption(metering == Metering::Epoch)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        // 1 MiB of wasm stack: deep enough for interpreters, small enough
        // that unbounded recursion traps quickly.
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    if config.pooling {
        let memories = config.instances.saturating_mul(MEMORIES_PER_INSTANCE);
        // Each memory slot of the pool is reserved up front. 4 GiB per slot
        // lets compiled code skip bounds checks, but 10 000 instances of
        // that (80 TiB) do not fit in a process's 128 TiB of address space
        // next to everything else; past the budget a slot reserves only the
        // largest memory a plugin may have, and code checks its bounds.
        if u64::from(memories) * (FULL_RESERVATION + GUARD) > POOL_ADDRESS_SPACE {
            c.memory_reservation(config.max_memory);
        }
        c.memory_guard_size(GUARD);
        let mut pool = PoolingAllocationConfig::new();
        // Python and JavaScript components hold dozens of core instances,
        // several memories and tables of tens of thousands of entries. The
        // core instances are only counted, so every component instance may
        // have its most: a call waits for a component instance
        // (`Runtime::instance`), and then has all it needs. Memories and
        // tables are reserved up front, two and four per instance, which
        // covers the plugins of all four languages.
        pool.total_component_instances(config.instances)
            .total_core_instances(config.instances * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(memories)
            .total_tables(config.instances * 4)
            .total_stacks(config.instances)
            .total_gc_heaps(config.instances)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .table_elements(100_000)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(1 << 20)
            .max_memory_size(config.max_memory as usize)
            .linear_memory_keep_resident(keep_resident())
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_unused_warm_slots(100)
            // One madvise for many freed slots instead of one per call.
            .decommit_batch_size(32);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c)
        .map_err(anyhow::Error::from)
        .context("configuring the WebAssembly engine")
}

/// How much of each linear memory a pooled slot keeps resident from one
/// instance to the next.
///
/// Where Linux has PAGEMAP_SCAN (6.7+), a slot's pages stay mapped and only
/// those a call dirtied are reset, with memset: most calls then take no page
/// fault and no madvise, which were a third of a trivial call's CPU. The
/// cost is up to 1 MiB per used slot that stays resident while the host
/// runs. Elsewhere the whole resident part would be memset on every call,
/// so it stays small.
fn keep_resident() -> usize {
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        1 << 20
    } else {
        64 << 10
    }
}

/// A short hex fingerprint of everything in the engine that a compiled
/// component depends on, for keying the compile cache. The metering is in
/// the compatibility hash already (fuel and epoch checks are compiled in);
/// naming it too keeps the two engines' entries apart whatever wasmtime
/// hashes.
fn fingerprint(engine: &Engine, metering: Metering) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    metering.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016x}", h.finish())
}
