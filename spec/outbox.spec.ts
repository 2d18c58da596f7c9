/**
 * The outbox: encoded data ops waiting to be sent. What a flush takes out must decode to exactly the
 * ops put in (newest version per key once coalescing starts), within the op and byte bounds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Outbox } from '../lib/cluster/outbox.js';
import { crcHalves, decodeEntries, Op } from '../lib/wire/ops.js';
import { crcOf } from '../lib/wire/value-codec.js';

interface Sent {
  op: number;
  cache: string;
  key: string;
  tsm: number;
  writer: number;
  value?: string;
}

function addWrite(outbox: Outbox, key: string, tsm: number, value: string, writer = 7, cache = 'c'): boolean {
  const bytes = Buffer.from(value);
  const [high, low] = crcHalves(crcOf(bytes));
  return outbox.add(Op.UPD, cache, key, tsm, writer, high, low, bytes);
}

/** Takes everything in messages of `budget` bytes and decodes it. */
function drain(outbox: Outbox, budget = 1400): { sent: Sent[]; messages: number } {
  const sent: Sent[] = [];
  let messages = 0;
  const message = Buffer.alloc(budget);
  for (let size = outbox.nextSize(); size > 0; size = outbox.nextSize()) {
    let bytes: Uint8Array;
    if (size > budget) {
      bytes = Uint8Array.from(outbox.takeOne()!);
    } else {
      const taken = outbox.takeInto(message, 0, budget);
      assert.ok(taken > 0, 'a record that fits is taken');
      bytes = message.subarray(0, outbox.lastEnd);
    }
    messages++;
    const decoded = decodeEntries(bytes);
    assert.ok(decoded.ok, 'the taken bytes decode');
    for (const entry of decoded.entries) {
      assert.ok(entry.op === Op.UPD || entry.op === Op.DEL);
      const base = { op: entry.op, cache: entry.cache, key: entry.key, tsm: entry.tsm, writer: entry.writer };
      if (entry.op === Op.UPD) {
        assert.equal(entry.crc, crcOf(entry.value), 'the crc travels with its value');
        sent.push({ ...base, value: Buffer.from(entry.value).toString() });
      } else sent.push(base);
    }
  }
  return { sent, messages };
}

const roomy = { maxOps: 1000, maxBytes: 1 << 20 };

describe('Outbox', () => {
  test('gives back every op in order, packed into messages that respect the budget', () => {
    const outbox = new Outbox(roomy);
    for (let i = 0; i < 100; i++)
      assert.ok(addWrite(outbox, `k${i}`, 1000 + i, `value-${i}`.padEnd(60, '.')));
    assert.ok(outbox.add(Op.DEL, 'c', 'gone', 2000, 7, 0, 0, undefined));
    assert.equal(outbox.size, 101);
    const { sent, messages } = drain(outbox, 500);
    assert.deepEqual(
      sent.map((s) => s.key),
      [...Array.from({ length: 100 }, (_, i) => `k${i}`), 'gone'],
    );
    assert.equal(sent[5]!.value, 'value-5'.padEnd(60, '.'));
    assert.equal(sent[100]!.op, Op.DEL);
    assert.ok(messages >= 14 && messages <= 20, `${messages} messages of 500 bytes for ~7.5 KB`);
    assert.equal(outbox.size, 0);
    assert.equal(outbox.bytes, 0, 'a drained outbox reuses its log from the start');
  });

  test('copies the value: changing the caller buffer afterwards changes nothing', () => {
    const outbox = new Outbox(roomy);
    const value = Buffer.from('original');
    outbox.add(Op.INS, 'c', 'k', 1, 7, 0, 0, value);
    value.write('mutated!');
    const decoded = decodeEntries(Uint8Array.from(outbox.takeOne()!));
    assert.ok(decoded.ok && decoded.entries[0]!.op === Op.INS);
    assert.equal(Buffer.from((decoded.entries[0] as { value: Uint8Array }).value).toString(), 'original');
  });

  test('a burst on a few hot keys costs one op per key, overwriting the newest record in place', () => {
    const outbox = new Outbox(roomy);
    // Stamps of the same CBOR width (1000-1999), so every version of the op has the same size.
    addWrite(outbox, 'counter', 1001, '1');
    const oneRecord = outbox.bytes;
    for (let i = 2; i <= 999; i++) addWrite(outbox, 'counter', 1000 + i, `${i % 10}`);
    assert.equal(outbox.size, 1);
    assert.equal(outbox.bytes, oneRecord, 'the newest record was overwritten in place, 999 times');
    for (let i = 1001; i <= 2000; i++) {
      addWrite(outbox, 'counter', 1000 + i, `${i}`);
      addWrite(outbox, 'sum', i, `${i * 2}`);
      addWrite(outbox, 'max', i, `${i * 3}`);
    }
    assert.equal(outbox.size, 3);
    // Every rewrite replaced a queued op: 998 in place, then 1000 + 999 + 999 interleaved.
    assert.equal(outbox.coalesced, 998 + 2998);
    assert.ok(!addWrite(outbox, 'sum', 5, 'older'), 'an older version than the queued one is ignored');
    const { sent } = drain(outbox);
    assert.deepEqual(
      sent.map((s) => [s.key, s.value]),
      [
        ['counter', '2000'],
        ['sum', '4000'],
        ['max', '6000'],
      ],
    );
  });

  test('sends a key twice when far apart while there is room, and only its newest version once full', () => {
    const outbox = new Outbox({ maxOps: 20, maxBytes: 1 << 20 });
    addWrite(outbox, 'hot', 1, 'v1');
    for (let i = 0; i < 8; i++) addWrite(outbox, `k${i}`, 10 + i, 'x');
    addWrite(outbox, 'hot', 2, 'v2');
    assert.equal(outbox.size, 10, 'no index while there is room: both versions of "hot" go');
    for (let i = 8; i < 18; i++) addWrite(outbox, `k${i}`, 10 + i, 'x');
    assert.equal(outbox.size, 20);
    // Full: coalescing starts, the two versions of "hot" become one, and the newer write fits.
    assert.ok(addWrite(outbox, 'hot', 3, 'v3'));
    assert.equal(outbox.coalesced, 2);
    assert.equal(outbox.size, 19);
    assert.ok(!addWrite(outbox, 'hot', 2, 'stale'), 'an older version than the queued one is ignored');
    const { sent } = drain(outbox);
    assert.deepEqual(
      sent.filter((s) => s.key === 'hot').map((s) => s.value),
      ['v3'],
    );
    assert.equal(sent.length, 19);
  });

  test('drops new keys once full of distinct keys, counts them, and takes them again once drained', () => {
    const outbox = new Outbox({ maxOps: 50, maxBytes: 1 << 20 });
    for (let i = 0; i < 50; i++) assert.ok(addWrite(outbox, `k${i}`, i + 1, 'x'));
    assert.ok(!addWrite(outbox, 'late', 100, 'x'));
    assert.ok(!addWrite(outbox, 'later', 101, 'x'));
    assert.equal(outbox.dropped, 2);
    assert.ok(addWrite(outbox, 'k3', 200, 'newer'), 'a queued key still takes its newer version');
    const { sent } = drain(outbox);
    assert.equal(sent.length, 50);
    assert.equal(sent.find((s) => s.key === 'k3')!.value, 'newer');
    assert.ok(addWrite(outbox, 'late', 300, 'x'), 'room again after the drain');
  });

  test('while coalescing, keys already taken are new again, and compaction keeps every key its own record', () => {
    // Small bounds: coalescing starts after 8 records, compaction runs soon after.
    const outbox = new Outbox({ maxOps: 8, maxBytes: 4096 });
    for (let i = 0; i < 8; i++) addWrite(outbox, `k${i}`, 100 + i, `v${i}`);
    assert.ok(!addWrite(outbox, 'k8', 108, 'v8'), 'full: coalescing starts and the new key is dropped');
    // A partial drain takes k0..k2.
    const message = Buffer.alloc(4096);
    const first = outbox.takeInto(message, 0, 3 * (outbox.nextSize() + 2));
    assert.equal(first, 3);
    assert.ok(addWrite(outbox, 'k8', 109, 'v8'), 'room again for a new key');
    // Rewrites of taken keys are new ops; they must not supersede (or be refused by) other records.
    assert.ok(addWrite(outbox, 'k0', 200, 'k0-newer'));
    assert.ok(addWrite(outbox, 'k1', 50, 'k1-older-than-sent'));
    // A rewrite of a key still queued supersedes it, even with the outbox full.
    assert.ok(addWrite(outbox, 'k4', 300, 'k4-newer'));
    const { sent } = drain(outbox);
    const byKey = new Map(sent.map((op) => [op.key, op.value]));
    assert.deepEqual([...byKey.keys()].sort(), ['k0', 'k1', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8']);
    assert.equal(byKey.get('k0'), 'k0-newer');
    assert.equal(byKey.get('k1'), 'k1-older-than-sent');
    assert.equal(byKey.get('k3'), 'v3', 'k3 was not taken for k0 after renumbering');
    assert.equal(byKey.get('k4'), 'k4-newer');
    assert.equal(sent.length, 8, 'one op per key');
    assert.equal(outbox.size, 0);
    assert.equal(outbox.nextSize(), 0);
  });

  test('after heavy coalescing with compaction, size matches what is left to send', () => {
    const outbox = new Outbox({ maxOps: 50, maxBytes: 8192 });
    const message = Buffer.alloc(512);
    let expected = 0;
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 30; i++)
        addWrite(outbox, `k${(round * 7 + i) % 60}`, round * 100 + i + 1, `${round}`.padEnd(40, '.'));
      outbox.takeInto(message, 0, 512);
      expected = outbox.size;
      assert.ok(outbox.size >= 0 && outbox.size <= 50, `size ${outbox.size}`);
      assert.ok(outbox.bytes <= 8192 + 8192 / 4 + 200, `log ${outbox.bytes} bytes`);
    }
    const { sent } = drain(outbox, 512);
    assert.equal(sent.length, expected, 'size counted exactly the ops still to send');
    assert.equal(new Set(sent.map((op) => op.key)).size, sent.length, 'one op per key');
  });

  test('keeps its log within maxBytes, even when one key is rewritten many times', () => {
    const maxBytes = 64 * 1024;
    const outbox = new Outbox({ maxOps: 100_000, maxBytes });
    const value = 'v'.repeat(200);
    for (let i = 0; i < 5000; i++) addWrite(outbox, 'same', i + 1, `${i}:${value}`);
    for (let i = 0; i < 100; i++) addWrite(outbox, `k${i}`, 10_000 + i, value);
    assert.ok(outbox.bytes <= maxBytes, `log of ${outbox.bytes} bytes`);
    const { sent } = drain(outbox);
    const same = sent.filter((s) => s.key === 'same');
    assert.equal(same.length, 1);
    assert.equal(same[0]!.value, `4999:${value}`);
    assert.equal(sent.length - 1 + outbox.dropped, 100, 'every distinct key was either sent or counted');
  });

  test('a partial drain resumes where it stopped, and later ops queue behind the rest', () => {
    const outbox = new Outbox(roomy);
    for (let i = 0; i < 30; i++) addWrite(outbox, `a${i}`, i + 1, 'x'.repeat(40));
    const message = Buffer.alloc(400);
    const first = outbox.takeInto(message, 0, 400);
    assert.ok(first > 0 && first < 30);
    addWrite(outbox, 'b', 99, 'y');
    const { sent } = drain(outbox);
    assert.deepEqual(
      sent.map((s) => s.key),
      [...Array.from({ length: 30 - first }, (_, i) => `a${first + i}`), 'b'],
    );
  });

  test('hands an op larger than the budget over by itself', () => {
    const outbox = new Outbox(roomy);
    addWrite(outbox, 'small', 1, 'x');
    addWrite(outbox, 'large', 2, 'L'.repeat(5000));
    addWrite(outbox, 'after', 3, 'y');
    const { sent, messages } = drain(outbox, 1000);
    assert.deepEqual(
      sent.map((s) => s.key),
      ['small', 'large', 'after'],
    );
    assert.equal(sent[1]!.value, 'L'.repeat(5000));
    assert.equal(messages, 3);
  });

  test('large ops taken one by one stay intact while the log behind them is reclaimed', () => {
    const outbox = new Outbox({ maxOps: 1000, maxBytes: 8 << 20 });
    const values = Array.from({ length: 120 }, (_, i) => String.fromCharCode(65 + (i % 26)).repeat(20_000));
    for (const [i, value] of values.entries()) addWrite(outbox, `big${i}`, i + 1, value);
    for (let i = 0; i < values.length; i++) {
      assert.ok(outbox.nextSize() > 1000);
      const view = outbox.takeOne()!;
      const decoded = decodeEntries(view);
      assert.ok(decoded.ok, `op ${i} decodes`);
      const entry = decoded.entries[0] as { key: string; value: Uint8Array };
      assert.equal(entry.key, `big${i}`);
      // A boolean, not assert.equal: a diff of two 20 kB strings takes minutes.
      assert.ok(Buffer.from(entry.value).toString() === values[i], `value ${i} intact`);
    }
    assert.equal(outbox.nextSize(), 0);
    assert.equal(outbox.bytes, 0);
  });

  test('refuses an out-of-range op with an error and stays consistent', () => {
    const outbox = new Outbox(roomy);
    addWrite(outbox, 'ok', 1, 'x');
    assert.throws(() => outbox.add(Op.UPD, 'c', 'bad', -1, 7, 0, 0, Buffer.from('x')), /tsm must be/);
    assert.equal(outbox.size, 1);
    assert.deepEqual(
      drain(outbox).sent.map((s) => s.key),
      ['ok'],
    );
  });
});
