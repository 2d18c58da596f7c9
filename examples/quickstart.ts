/**
 * The example from McCache for Python's README, in TypeScript. Run two or three copies at once
 * (`npm run example` in several terminals) to watch them share the cache.
 */
import {
  getCache,
  getClusterMetrics,
  getLocalChecksum,
  getLocalMetrics,
  shutdown,
  whenReady,
} from '../lib/index.js';

await whenReady(); // optional: resolves when the network is up (it does not wait for other members)
// Give copies started in other terminals a few seconds to show up, so that they share what follows.
for (let waited = 0; getLocalMetrics().cluster.members === 0 && waited < 5000; waited += 100) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
const c = getCache<Date>('demo');

let k = 'k1';
c[k] = new Date(); // Insert a cache entry
c[k] = new Date(); // Update a cache entry
console.log(`Metadata for key '${k}' is`, c.metadata[k]);
delete c[k]; // Delete a cache entry
if (!(k in c)) console.log(`${k} is not in the cache.`);

k = 'k2';
c[k] = new Date(); // Insert another cache entry
// Every 'demo' cache in the cluster now holds just one entry, 'k2'.

console.log(getLocalChecksum('demo')); // { k2: { crc: '0559728d541f9256', tsm: 1838741920526337 } }
console.log(getLocalMetrics('demo').caches); // counters of this member's caches (and .cluster, .process)
console.log(await getClusterMetrics('demo')); // { [nodeId]: metrics } of every member that answers
await shutdown(); // flush, say goodbye, close the socket
