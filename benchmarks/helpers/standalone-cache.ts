/**
 * One cache with no peers and no replication sink, for the local and memory benchmarks: the store and
 * its Proxy exactly as getCache makes them, minus the engine.
 */
import type { Cache } from '../../lib/cache/proxy.js';
import { CacheRegistry } from '../../lib/cache/registry.js';
import { HybridLogicalClock, SystemClock } from '../../lib/clock.js';
import { type CacheSettings, cacheSettingsOf, DEFAULTS } from '../../lib/config.js';
import { silentLog } from '../../lib/log.js';

export function standaloneCache<V>(
  name: string,
  settings: Partial<CacheSettings>,
  maxTombstones: number,
): Cache<V> {
  const clock = new SystemClock();
  const registry = new CacheRegistry(
    {
      clock,
      hlc: new HybridLogicalClock(clock),
      nodeId: 1,
      log: silentLog,
      tombstoneTtlMs: 60_000,
      maxTombstones,
    },
    { ...cacheSettingsOf(DEFAULTS), ...settings },
  );
  return registry.cache<V>(name);
}
