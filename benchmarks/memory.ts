/**
 * Memory per entry: mccache against lru-cache and Map, at 100k and 1M entries with small values
 * (small integers, which V8 stores inline) and string keys like "key:123456".
 *
 * Each figure comes from a fresh child process: force a GC, read heapUsed + arrayBuffers (typed
 * arrays live outside the JS heap), fill the container, force a GC again, and divide the growth by
 * the number of entries. Two figures per container:
 * - "with keys": the key strings are created during the fill, so they count;
 * - "bookkeeping": the keys exist before the first reading, so only the container's own memory
 *   counts (for mccache: the key index, the LRU links and the metadata). The target is at most
 *   120 bytes per entry at 1M entries.
 * Both lru-cache and mccache are given max = the number of entries (lru-cache preallocates it).
 *
 * Run: node --expose-gc --import tsx benchmarks/memory.ts
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import { standaloneCache } from './helpers/standalone-cache.js';

const SIZES = [100_000, 1_000_000];
const CONTENDERS = ['mccache', 'lru-cache', 'Map'] as const;
const MODES = ['with keys', 'bookkeeping'] as const;
const TARGET_BOOKKEEPING_BYTES = 120;

type ContenderName = (typeof CONTENDERS)[number];
type Mode = (typeof MODES)[number];

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with --expose-gc: node --expose-gc --import tsx benchmarks/memory.ts');
  for (let i = 0; i < 4; i++) collect();
}

function usedBytes(): number {
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

function keyOf(i: number): string {
  return `key:${(0x9e3779b1 * (i + 1)) >>> 0}`;
}

/** A container of the given kind, as a function that stores one entry. */
function makeContainer(contender: ContenderName, entries: number): (key: string, value: number) => void {
  if (contender === 'mccache') {
    const cache = standaloneCache<number>('memory', { max: entries, size: 2 ** 40, ttl: 3600 }, 16);
    return (key, value) => {
      cache[key] = value;
    };
  }
  if (contender === 'lru-cache') {
    const lru = new LRUCache<string, number>({ max: entries, ttl: 3600_000 });
    return (key, value) => {
      lru.set(key, value);
    };
  }
  const map = new Map<string, number>();
  return (key, value) => {
    map.set(key, value);
  };
}

/** One measurement, in this (child) process: bytes per entry. */
function measure(contender: ContenderName, entries: number, mode: Mode): number {
  const keys = mode === 'bookkeeping' ? Array.from({ length: entries }, (_, i) => keyOf(i)) : undefined;
  gc();
  const before = usedBytes();
  const store = makeContainer(contender, entries);
  for (let i = 0; i < entries; i++) store(keys ? keys[i]! : keyOf(i), i);
  gc();
  const after = usedBytes();
  // Keep the container and the keys alive until after the second reading.
  if (store.length !== 2 || (keys && keys.length !== entries)) throw new Error('unreachable');
  return (after - before) / entries;
}

const [, , childContender, childEntries, childMode] = process.argv;
if (childContender) {
  // Child: one measurement, printed as a number.
  console.log(measure(childContender as ContenderName, Number(childEntries), childMode as Mode).toFixed(1));
} else {
  const script = fileURLToPath(import.meta.url);
  const results = new Map<string, number>();
  for (const entries of SIZES) {
    for (const contender of CONTENDERS) {
      for (const mode of MODES) {
        const output = execFileSync(
          process.execPath,
          ['--expose-gc', '--import', 'tsx', script, contender, String(entries), mode],
          {
            encoding: 'utf8',
          },
        );
        results.set(`${contender}|${entries}|${mode}`, Number(output.trim()));
      }
    }
  }
  console.log(`Node ${process.version}, ${cpus().length} cores; heap + array buffers per entry, in bytes\n`);
  const header = [
    'entries'.padEnd(10),
    'mode'.padEnd(13),
    ...CONTENDERS.map((c) => c.padStart(11)),
    'mccache/lru'.padStart(13),
  ];
  console.log(header.join(''));
  for (const entries of SIZES) {
    for (const mode of MODES) {
      const figures = CONTENDERS.map((c) => results.get(`${c}|${entries}|${mode}`)!);
      const ratio = figures[0]! / figures[1]!;
      console.log(
        [
          entries.toLocaleString('en-US').padEnd(10),
          mode.padEnd(13),
          ...figures.map((f) => f.toFixed(1).padStart(11)),
          `${ratio.toFixed(2)}x`.padStart(13),
        ].join(''),
      );
    }
  }
  const bookkeeping = results.get(`mccache|1000000|bookkeeping`)!;
  console.log(
    `\nTarget: mccache bookkeeping (key index + LRU + metadata) <= ${TARGET_BOOKKEEPING_BYTES} bytes per entry at 1M: ` +
      `${bookkeeping.toFixed(1)} bytes, ${bookkeeping <= TARGET_BOOKKEEPING_BYTES ? 'met' : 'MISSED'}`,
  );
}
