/**
 * The example from McCache for Python's README, in TypeScript. Run two or three copies at once
 * (`npx tsx examples/quickstart.ts` in several terminals) to watch them share the cache.
 */
import {
  getCache,
  getClusterMetrics,
  getLocalChecksum,
  getLocalMetrics,
  shutdown,
  whenReady,
} from '../lib/index.js';

await whenReady();
const c = getCache<Date>('demo');

let k = 'k1';
c[k] = new Date(); // Insert a cache entry
console.log(`Inserted on ${c[k]?.toISOString()}`);

c[k] = new Date(); // Update a cache entry
console.log(`Updated on ${c[k]?.toISOString()}`);
console.log(`Metadata for key '${k}' is`, c.metadata[k]);

delete c[k]; // Delete a cache entry
if (!(k in c)) console.log(` ${k} is not in the cache.`);

k = 'k2';
c[k] = new Date(); // Insert another cache entry
console.log(`Inserted on ${c[k]?.toISOString()}`);

// At this point every 'demo' cache in the cluster holds just one entry, 'k2'.

// Query the local cache checksum and metrics.
console.dir(getLocalChecksum('demo'), { depth: null });
console.dir(getLocalMetrics('demo').caches, { depth: null });

// Ask the other members for their metrics (resolves with those that answer within a second).
const cluster = await getClusterMetrics('demo');
console.log(`members that answered: ${Object.keys(cluster).join(', ')}`);

await shutdown();
