/**
 * The local cache, no peers: the mccache Proxy against Map, a plain object, lru-cache (same max and
 * ttl) and node-cache, in one run on the same 10k string keys.
 *
 * "mc store" is the store behind an mccache cache used directly (storeOf(cache).get/set...), to
 * show what the Proxy itself costs.
 *
 * Operations: read hit, read miss, write (update of an existing key) of a small number and of a
 * small object, a write of a number to one key written as a name (`cache.fixed = v`: V8 runs named
 * stores to a Proxy on a fast path, while computed-key stores `cache[k] = v` go through its
 * runtime, ~200 ns more here), `in`, delete (re-inserted untimed after each iteration) and Object.keys of the
 * whole cache. Each timed iteration runs the operation on a block of 1000 keys, walking round the
 * 10k, so timer overhead does not dominate and an iteration fits in a scheduler time slice on a
 * busy machine. Operations run one after the other with every contender in turn, three rounds;
 * ops/s is the median over rounds of the median iteration. Each contender's loops are compiled
 * separately (new Function), so every call site stays monomorphic and no contender pays for
 * another's shapes.
 *
 * Targets (issue 2): reads >= 10 M ops/s and >= 0.7x lru-cache.get; writes >= 2 M ops/s.
 *
 * Run: npx tsx benchmarks/local.ts
 */
import { cpus } from 'node:os';
import { LRUCache } from 'lru-cache';
import NodeCache from 'node-cache';
import { Bench } from 'tinybench';
import { type Cache, storeOf } from '../lib/cache/proxy.js';
import { standaloneCache } from './helpers/standalone-cache.js';

const KEYS = 10_000;
const BLOCK = 1000;
const ROUNDS = 3;
const MAX = 2 * KEYS;
const TTL_SECONDS = 3600;
const TARGET_READ = 10_000_000;
const TARGET_READ_RATIO = 0.7;
const TARGET_WRITE = 2_000_000;

const keys = Array.from({ length: KEYS }, (_, i) => `user:${(0x9e3779b1 * (i + 1)) >>> 0}`);
const missingKeys = keys.map((key) => `${key}:missing`);
const numbers = keys.map((_, i) => i);
const objects = keys.map((key, i) => ({ id: i, name: key, active: i % 2 === 0 }));

/** A contender: its container `t` and the source of each operation on key `k` (and value `v`). */
interface Contender {
  name: string;
  target: unknown;
  get: string;
  set: string;
  /** A write to one fixed key written as a name (`t.fixed = v`): V8 handles named stores to a Proxy fast. */
  setNamed: string;
  has: string;
  remove: string;
  keys: string;
}

function mccacheProxy(): Cache<unknown> {
  return standaloneCache<unknown>('bench', { ttl: TTL_SECONDS, max: MAX, size: 2 ** 30 }, MAX);
}

const contenders: Contender[] = [
  {
    name: 'mccache',
    target: mccacheProxy(),
    get: 't[k]',
    set: 't[k] = v',
    setNamed: 't.fixed = v',
    has: 'k in t',
    remove: 'delete t[k]',
    keys: 'Object.keys(t)',
  },
  {
    // The store behind the same kind of cache, without the Proxy: what the dictionary syntax costs.
    name: 'mc store',
    target: storeOf(mccacheProxy()),
    get: 't.get(k)',
    set: 't.set(k, v)',
    setNamed: "t.set('fixed', v)",
    has: 't.has(k)',
    remove: 't.delete(k)',
    keys: 't.keys()',
  },
  {
    name: 'Map',
    target: new Map(),
    get: 't.get(k)',
    set: 't.set(k, v)',
    setNamed: "t.set('fixed', v)",
    has: 't.has(k)',
    remove: 't.delete(k)',
    keys: '[...t.keys()]',
  },
  {
    name: 'object',
    target: {},
    get: 't[k]',
    set: 't[k] = v',
    setNamed: 't.fixed = v',
    has: 'k in t',
    remove: 'delete t[k]',
    keys: 'Object.keys(t)',
  },
  {
    name: 'lru-cache',
    target: new LRUCache<string, {}>({ max: MAX, ttl: TTL_SECONDS * 1000 }),
    get: 't.get(k)',
    set: 't.set(k, v)',
    setNamed: "t.set('fixed', v)",
    has: 't.has(k)',
    remove: 't.delete(k)',
    keys: '[...t.keys()]',
  },
  {
    name: 'node-cache',
    // useClones: false, or node-cache deep-copies every value on get and set.
    target: new NodeCache({ stdTTL: TTL_SECONDS, checkperiod: 0, useClones: false, maxKeys: MAX }),
    get: 't.get(k)',
    set: 't.set(k, v)',
    setNamed: "t.set('fixed', v)",
    has: 't.has(k)',
    remove: 't.del(k)',
    keys: 't.keys()',
  },
];

/** Where each contender's loops are in the key ring, and what they consumed (so reads are not optimised away). */
interface LoopState {
  cursor: number;
  last: number;
  sink: number;
}

type BlockLoop = (t: unknown, keys: string[], values: unknown[], state: LoopState) => void;

/** Compiles a loop that runs `statement` on the next block of keys, with `k` the key and `v` the value. */
function blockLoop(statement: string): BlockLoop {
  return new Function(
    't',
    'keys',
    'values',
    'state',
    `const from = state.cursor;
     const to = from + ${BLOCK};
     let sink = 0;
     for (let i = from; i < to; i++) {
       const k = keys[i];
       const v = values[i];
       ${statement};
     }
     state.last = from;
     state.cursor = to === keys.length ? 0 : to;
     state.sink += sink;`,
  ) as BlockLoop;
}

const state: LoopState = { cursor: 0, last: 0, sink: 0 };
const OPERATIONS = [
  'read hit',
  'read miss',
  'write number',
  'write c.fixed',
  'write object',
  'in',
  'delete',
  'Object.keys',
] as const;
type Operation = (typeof OPERATIONS)[number];

interface Task {
  run: () => void;
  afterEach?: () => void;
  perIteration: number;
}

/** The timed function of each operation for one contender. */
function tasksOf(c: Contender): Record<Operation, Task> {
  const fill = blockLoop(c.set);
  for (let i = 0; i < KEYS / BLOCK; i++) fill(c.target, keys, objects, state);
  const refill = () => {
    const cursor = state.cursor;
    state.cursor = state.last;
    fill(c.target, keys, objects, state);
    state.cursor = cursor;
  };
  const timed = (statement: string, keyList: string[], values: unknown[]) => {
    const loop = blockLoop(statement);
    return () => loop(c.target, keyList, values, state);
  };
  const listKeys = new Function('t', 'state', `state.sink += ${c.keys}.length;`) as (
    t: unknown,
    s: LoopState,
  ) => void;
  return {
    'read hit': { run: timed(`if (${c.get} !== undefined) sink++`, keys, objects), perIteration: BLOCK },
    'read miss': {
      run: timed(`if (${c.get} === undefined) sink++`, missingKeys, objects),
      perIteration: BLOCK,
    },
    'write number': { run: timed(c.set, keys, numbers), perIteration: BLOCK },
    'write c.fixed': { run: timed(c.setNamed, keys, numbers), perIteration: BLOCK },
    'write object': { run: timed(c.set, keys, objects), perIteration: BLOCK },
    in: { run: timed(`if (${c.has}) sink++`, keys, objects), perIteration: BLOCK },
    delete: { run: timed(c.remove, keys, objects), afterEach: refill, perIteration: BLOCK },
    'Object.keys': { run: () => listKeys(c.target, state), perIteration: 1 },
  };
}

const tasks = new Map(contenders.map((c) => [c.name, tasksOf(c)]));
/** ops/s of each round, by "operation|contender". */
const samples = new Map<string, number[]>();
for (let round = 0; round < ROUNDS; round++) {
  // Operation-major order: the contenders of one operation run close together in time, so a
  // burst of load on a shared machine hits them alike.
  const bench = new Bench({ time: 300, warmup: true, warmupTime: 100 });
  for (const operation of OPERATIONS) {
    for (const c of contenders) {
      const task = tasks.get(c.name)![operation];
      bench.add(`${operation}|${c.name}`, task.run, task.afterEach ? { afterEach: task.afterEach } : {});
    }
  }
  await bench.run();
  for (const task of bench.tasks) {
    const result = task.result;
    if (!('latency' in result)) throw new Error(`benchmark ${task.name} did not complete: ${result.state}`);
    const [operation, contender] = task.name.split('|') as [Operation, string];
    const perIteration = tasks.get(contender)![operation].perIteration;
    samples.set(task.name, [...(samples.get(task.name) ?? []), (perIteration / result.latency.p50) * 1000]);
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const rates = new Map([...samples].map(([name, values]) => [name, median(values)]));
const rate = (operation: string, contender: string) => rates.get(`${operation}|${contender}`)!;
const format = (opsPerSecond: number) =>
  opsPerSecond >= 1e6 ? `${(opsPerSecond / 1e6).toFixed(2)} M` : `${(opsPerSecond / 1e3).toFixed(1)} k`;

console.log(`Node ${process.version}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'})`);
console.log(
  `${KEYS} string keys, max ${MAX}, ttl ${TTL_SECONDS} s; ops/s: median of ${ROUNDS} rounds of the median iteration\n`,
);
const names = contenders.map((c) => c.name);
console.log(
  ['operation'.padEnd(14), ...names.map((n) => n.padStart(12)), 'mccache/lru-cache'.padStart(19)].join(''),
);
for (const operation of OPERATIONS) {
  const cells = names.map((name) => format(rate(operation, name)).padStart(12));
  const ratio = rate(operation, 'mccache') / rate(operation, 'lru-cache');
  console.log([operation.padEnd(14), ...cells, `${ratio.toFixed(2)}x`.padStart(19)].join(''));
}

const readHit = rate('read hit', 'mccache');
const readRatio = readHit / rate('read hit', 'lru-cache');
const writes: [string, Operation][] = [
  ['cache[k] = number', 'write number'],
  ['cache.fixed = number', 'write c.fixed'],
  ['cache[k] = object', 'write object'],
];
const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
console.log('\nTargets');
const line = (what: string, figure: string, ok: boolean) =>
  console.log(`  ${what.padEnd(44)}${figure.padStart(15)}  ${verdict(ok)}`);
line('reads (cache[k]) >= 10 M ops/s', `${format(readHit)} ops/s`, readHit >= TARGET_READ);
line('reads (cache[k]) >= 0.7x lru-cache.get', `${readRatio.toFixed(2)}x`, readRatio >= TARGET_READ_RATIO);
for (const [label, operation] of writes) {
  const writeRate = rate(operation, 'mccache');
  line(`writes (${label}) >= 2 M ops/s`, `${format(writeRate)} ops/s`, writeRate >= TARGET_WRITE);
}
if (state.sink === -1) console.log('unreachable');
