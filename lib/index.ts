/**
 * mccache: in-process caches that look like plain objects and stay coherent across a cluster.
 *
 * ```ts
 * import { getCache } from 'mccache';
 * const users = getCache<Profile>('users');
 * users.u42 = profile;            // replicated to every member
 * users.u42;                      // Profile | undefined, a local read
 * users.metadata.u42?.tsm;        // when it was written
 * ```
 *
 * The functions below act on one default member per process, created by the first call with the
 * configuration from package.json and MCCACHE_* variables. Use {@link createNode} for more.
 *
 * @packageDocumentation
 */
import type { Cache } from './cache/proxy.js';
import type { CacheStore } from './cache/store.js';
import type { EntryChecksum } from './cache/types.js';
import type { CacheOptions } from './config.js';
import {
  type ClusterChecksums,
  type ClusterMetrics,
  createNode,
  type LocalMetrics,
  type McCacheNode,
} from './node.js';

export type { Cache, MetadataView } from './cache/proxy.js';
export { storeOf } from './cache/proxy.js';
export type { CacheRegistry } from './cache/registry.js';
export { type CacheStore, EntryTooLargeError } from './cache/store.js';
export {
  ApplyOutcome,
  type CacheCounters,
  type CacheStoreApi,
  ChangeKind,
  type EntryChecksum,
  type EntryMetadata,
  type KeyVersion,
  type RemoteChange,
  type ReplicationSink,
} from './cache/types.js';
export { type Clock, hlcToMillis, ManualClock, SystemClock, type TimerHandle } from './clock.js';
export type { ClusterEngine, EngineCounters, EngineLimits, EngineTiming } from './cluster/engine.js';
export type { LatencyHistogram, LatencySummary } from './cluster/latency.js';
export {
  type CacheOptions,
  type CacheSettings,
  type CallbackContext,
  type ClusterSettings,
  ConfigError,
  DEFAULTS,
  type Settings,
} from './config.js';
export type { Log } from './log.js';
export { getHops, getMtu, MissingToolError } from './netcheck.js';
export {
  type ClusterChecksums,
  type ClusterMetrics,
  createNode,
  type LocalMetrics,
  McCacheNode,
  type NodeOptions,
  type ProcessFigures,
} from './node.js';
export {
  MemoryNetwork,
  type MemoryNetworkFaults,
  type MemoryNetworkOptions,
  type MemoryNetworkStats,
  MemoryTransport,
} from './transport/memory-network.js';
export type { Transport, TransportStats } from './transport/transport.js';
export { generateFernetKey } from './wire/fernet.js';
export { MAX_VALUE_BYTES, UnencodableValueError } from './wire/value-codec.js';

let defaultNode: McCacheNode | undefined;

function installSignalHandlers(node: McCacheNode): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = () => {
      void node.shutdown().finally(() => {
        // Re-raise with the default behaviour unless the application handles the signal itself.
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
    };
    process.once(signal, onSignal);
  }
}

/** The default member of this process, created on first use. */
export function getDefaultNode(): McCacheNode {
  if (!defaultNode) {
    defaultNode = createNode();
    if (defaultNode.settings.handleSignals) installSignalHandlers(defaultNode);
  }
  return defaultNode;
}

/**
 * The cache called `name` (default "mccache"), created on first use; the same name returns the
 * same object. Reads are typed `V | undefined`, writes take `V`. Options (ttl, max, size, mode,
 * callback, callbackWin, freeze) override the configuration for this cache.
 *
 * @throws ConfigError if a setting or option is invalid, naming it, its value and what is expected.
 */
export function getCache<V = unknown>(name?: string, options?: CacheOptions): Cache<V> {
  return getDefaultNode().getCache<V>(name, options);
}

/** The store behind a cache: use it for a key literally named "metadata", which the proxy reserves. */
export function getStore(name?: string): CacheStore | undefined {
  return getDefaultNode().getStore(name);
}

/** Clears a cache (every cache if `name` is omitted) on every member including this one, or only on `node`. */
export function clearCache(name?: string, node?: string | number): void {
  getDefaultNode().clearCache(name, node);
}

/** Counters of this member's caches and engine, and process figures. */
export function getLocalMetrics(name?: string): LocalMetrics {
  return getDefaultNode().getLocalMetrics(name);
}

/** `{ key: { crc, tsm } }` of a cache on this member, sorted by key. */
export function getLocalChecksum(name?: string, key?: string): Record<string, EntryChecksum> {
  return getDefaultNode().getLocalChecksum(name, key);
}

// The functions that return a Promise are async, so that a bad configuration (thrown while the default
// member is created) rejects the Promise instead of throwing before the caller can attach a catch.

/**
 * Metrics of every member that answers within the query timeout, keyed by node id. Also logged.
 * Rejects (never throws) with a ConfigError if the configuration is invalid.
 */
export async function getClusterMetrics(name?: string, node?: string | number): Promise<ClusterMetrics> {
  return getDefaultNode().getClusterMetrics(name, node);
}

/**
 * Checksums of every member that answers within the query timeout, keyed by node id. Also logged.
 * Rejects (never throws) with a ConfigError if the configuration is invalid.
 */
export async function getClusterChecksum(
  name?: string,
  key?: string,
  node?: string | number,
): Promise<ClusterChecksums> {
  return getDefaultNode().getClusterChecksum(name, key, node);
}

/**
 * Resolves once the default member's network is up; rejects with the reason if it failed, including
 * a ConfigError if the configuration is invalid (it never throws).
 */
export async function whenReady(): Promise<void> {
  return getDefaultNode().ready();
}

/** Flushes pending changes, says goodbye to the cluster and closes the network. */
export async function shutdown(): Promise<void> {
  await defaultNode?.shutdown();
}
