import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../lib/clock.js';
import { type FrameHeader, FrameKind } from '../lib/wire/frame.js';
import { Reassembly, type ReassemblyOptions } from '../lib/wire/reassembly.js';

const FRAGMENT = 100;

function setup(overrides: Partial<ReassemblyOptions> = {}) {
  const clock = new ManualClock();
  const reassembly = new Reassembly({
    clock,
    timeoutMs: 5000,
    maxMessagesPerSender: 4,
    maxBytesPerSender: 10_000,
    maxSenders: 3,
    ...overrides,
  });
  return { clock, reassembly };
}

/** The fragments of a message of `length` bytes (filled with `fill`), FRAGMENT bytes each but the last. */
function fragments(
  sender: number,
  firstSeq: number,
  length: number,
  fill = 1,
  kind: 1 | 2 = FrameKind.Data,
): Array<[FrameHeader, Buffer]> {
  const count = Math.max(1, Math.ceil(length / FRAGMENT));
  const message = Buffer.alloc(length, fill);
  return Array.from({ length: count }, (_, index) => [
    {
      clusterId: 1,
      sender,
      kind,
      fragmentIndex: index,
      fragmentCount: count,
      seq: (firstSeq + index) >>> 0,
      messageLength: length,
    },
    message.subarray(index * FRAGMENT, Math.min(length, (index + 1) * FRAGMENT)),
  ]);
}

describe('reassembly', () => {
  test('reassembles fragments in any order and counts duplicates', () => {
    const { reassembly } = setup();
    const parts = fragments(7, 10, 450);
    const message = Buffer.concat(parts.map(([, payload]) => payload));
    const order = [3, 0, 3, 4, 1, 0, 2];
    const results = order.map((i) => reassembly.add(parts[i]![0], parts[i]![1]));
    assert.deepEqual(results.slice(0, -1), Array(order.length - 1).fill(undefined));
    assert.deepEqual(results.at(-1), message);
    assert.equal(reassembly.stats.duplicates, 2);
    assert.equal(reassembly.stats.completed, 1);
    assert.equal(reassembly.heldMessages, 0);
    assert.equal(reassembly.heldBytes, 0);
  });

  test('a late duplicate of a completed message is counted, not held', () => {
    const { reassembly } = setup();
    const parts = fragments(7, 10, 250);
    for (const [header, payload] of parts) reassembly.add(header, payload);
    assert.equal(reassembly.add(parts[1]![0], parts[1]![1]), undefined);
    assert.equal(reassembly.stats.duplicates, 1);
    assert.equal(reassembly.heldMessages, 0);
  });

  test('messages are told apart by sender, kind and message id', () => {
    const { reassembly } = setup();
    const a = fragments(1, 0, 150, 0xa);
    const b = fragments(2, 0, 150, 0xb);
    const c = fragments(1, 0, 150, 0xc, FrameKind.Control);
    const d = fragments(1, 2, 150, 0xd);
    for (const parts of [a, b, c, d]) assert.equal(reassembly.add(parts[0]![0], parts[0]![1]), undefined);
    assert.equal(reassembly.heldMessages, 4);
    assert.deepEqual(reassembly.add(d[1]![0], d[1]![1]), Buffer.alloc(150, 0xd));
    assert.deepEqual(reassembly.add(c[1]![0], c[1]![1]), Buffer.alloc(150, 0xc));
    assert.deepEqual(reassembly.add(b[1]![0], b[1]![1]), Buffer.alloc(150, 0xb));
    assert.deepEqual(reassembly.add(a[1]![0], a[1]![1]), Buffer.alloc(150, 0xa));
  });

  test('a message id that wraps past 2^32 is still one message', () => {
    const { reassembly } = setup();
    const parts = fragments(1, 0xffffffff, 300);
    assert.equal(parts[1]![0].seq, 0);
    let whole: Buffer | undefined;
    for (const [header, payload] of parts) whole = reassembly.add(header, payload);
    assert.deepEqual(whole, Buffer.alloc(300, 1));
  });

  test('a single-fragment message is returned at once and never held', () => {
    const { reassembly } = setup();
    const [[header, payload]] = fragments(1, 5, 80) as [[FrameHeader, Buffer]];
    assert.deepEqual(reassembly.add(header, payload), payload);
    assert.equal(reassembly.heldMessages, 0);
  });

  test('bounds the number of incomplete messages per sender, and counts what it refuses', () => {
    const { reassembly } = setup({ maxMessagesPerSender: 2 });
    const messages = [0, 10, 20].map((seq) => fragments(1, seq, 200));
    for (const parts of messages) reassembly.add(parts[0]![0], parts[0]![1]);
    assert.equal(reassembly.heldMessages, 2);
    assert.equal(reassembly.stats.overBudget, 1);
    // The refused message's later fragments are refused too: nothing of it is held.
    assert.equal(reassembly.add(messages[2]![1]![0], messages[2]![1]![1]), undefined);
    assert.equal(reassembly.stats.overBudget, 2);
    // Another sender has its own budget.
    reassembly.add(fragments(2, 0, 200)[0]![0], fragments(2, 0, 200)[0]![1]);
    assert.equal(reassembly.heldMessages, 3);
    // Completing one frees its slot.
    assert.ok(reassembly.add(messages[0]![1]![0], messages[0]![1]![1]));
    assert.equal(reassembly.add(messages[2]![0]![0], messages[2]![0]![1]), undefined);
    assert.equal(reassembly.heldMessages, 3);
  });

  test('bounds the bytes held per sender, and counts what it refuses', () => {
    const { reassembly } = setup({ maxBytesPerSender: 1000 });
    const big = fragments(1, 0, 700);
    const second = fragments(1, 100, 400);
    const fits = fragments(1, 200, 300);
    reassembly.add(big[0]![0], big[0]![1]);
    assert.equal(reassembly.heldBytes, 700);
    reassembly.add(second[0]![0], second[0]![1]);
    assert.equal(reassembly.stats.overBudget, 1);
    assert.equal(reassembly.heldBytes, 700);
    reassembly.add(fits[0]![0], fits[0]![1]);
    assert.equal(reassembly.heldBytes, 1000);
    const tooBigAlone = fragments(2, 0, 1001);
    reassembly.add(tooBigAlone[0]![0], tooBigAlone[0]![1]);
    assert.equal(reassembly.stats.overBudget, 2);
    assert.equal(reassembly.heldMessages, 2);
  });

  test('bounds the bytes held for all senders together, and counts what it refuses', () => {
    const { reassembly } = setup({ maxBytesPerSender: 1000, maxBytesTotal: 1550 });
    for (const sender of [1, 2, 3]) {
      const [first] = fragments(sender, 0, 700);
      reassembly.add(first![0], first![1]);
    }
    assert.equal(reassembly.heldBytes, 1400);
    assert.equal(reassembly.stats.overBudget, 1);
    const [small] = fragments(3, 10, 150);
    reassembly.add(small![0], small![1]);
    assert.equal(reassembly.heldBytes, 1550);
    assert.equal(reassembly.stats.overBudget, 1);
  });

  test('bounds the number of senders, forgetting idle ones first', () => {
    const { reassembly } = setup({ maxSenders: 2 });
    const one = fragments(1, 0, 200);
    const two = fragments(2, 0, 200);
    reassembly.add(one[0]![0], one[0]![1]);
    reassembly.add(two[0]![0], two[0]![1]);
    const three = fragments(3, 0, 200);
    assert.equal(reassembly.add(three[0]![0], three[0]![1]), undefined);
    assert.equal(reassembly.stats.overBudget, 1);
    assert.equal(reassembly.heldMessages, 2);
    // Sender 1 completes and becomes idle: sender 3 may take its place.
    reassembly.add(one[1]![0], one[1]![1]);
    reassembly.add(three[0]![0], three[0]![1]);
    assert.equal(reassembly.heldMessages, 2);
    assert.deepEqual(reassembly.add(three[1]![0], three[1]![1]), Buffer.alloc(200, 1));
  });

  test('drops an incomplete message after the timeout without progress, and counts it', () => {
    const { clock, reassembly } = setup({ timeoutMs: 5000 });
    const slow = fragments(1, 0, 300);
    const stalled = fragments(2, 0, 300);
    reassembly.add(slow[0]![0], slow[0]![1]);
    reassembly.add(stalled[0]![0], stalled[0]![1]);
    clock.advance(4000);
    reassembly.add(slow[1]![0], slow[1]![1]); // progress restarts the timeout
    clock.advance(1000);
    reassembly.expire();
    assert.equal(reassembly.stats.timedOut, 1);
    assert.equal(reassembly.heldMessages, 1);
    assert.equal(reassembly.heldBytes, 300);
    clock.advance(3999);
    reassembly.expire();
    assert.equal(reassembly.stats.timedOut, 1);
    assert.deepEqual(reassembly.add(slow[2]![0], slow[2]![1]), Buffer.alloc(300, 1));
    // The dropped message starts over if its fragments come again.
    assert.equal(reassembly.add(stalled[1]![0], stalled[1]![1]), undefined);
    assert.equal(reassembly.heldMessages, 1);
  });

  test('says whether it has each fragment, so a receiver marks only those seqs as received', () => {
    const { reassembly } = setup({ maxMessagesPerSender: 1 });
    const held = fragments(1, 0, 300);
    const refused = fragments(1, 10, 200);
    reassembly.add(held[0]![0], held[0]![1]);
    assert.equal(reassembly.lastFragmentKept, true, 'stored');
    reassembly.add(refused[0]![0], refused[0]![1]);
    assert.equal(reassembly.lastFragmentKept, false, 'refused: the budget is full');
    reassembly.add(held[0]![0], held[0]![1]);
    assert.equal(reassembly.lastFragmentKept, true, 'a duplicate of a held fragment: it is had');
    reassembly.add(held[1]![0], held[1]![1]);
    assert.ok(reassembly.add(held[2]![0], held[2]![1]));
    assert.equal(reassembly.lastFragmentKept, true, 'completed the message');
    reassembly.add(held[1]![0], held[1]![1]);
    assert.equal(reassembly.lastFragmentKept, true, 'a late duplicate of a completed message: had too');
    const pending = fragments(2, 100, 300);
    reassembly.add(pending[0]![0], pending[0]![1]);
    const disagreeing = fragments(2, 100, 350); // the same message id, another length
    reassembly.add(disagreeing[1]![0], disagreeing[1]![1]);
    assert.equal(reassembly.lastFragmentKept, false, 'inconsistent with its message: not had');
    reassembly.add(refused[0]![0], refused[0]![1]);
    assert.equal(reassembly.lastFragmentKept, true, 'room again: the same fragment is kept now');
  });

  test('reports each timed-out message with its sender, kind and the fragments it held', () => {
    const { clock, reassembly } = setup();
    const data = fragments(5, 0, 300);
    const control = fragments(6, 40, 450, 1, FrameKind.Control);
    reassembly.add(data[0]![0], data[0]![1]);
    reassembly.add(data[2]![0], data[2]![1]);
    reassembly.add(control[1]![0], control[1]![1]);
    clock.advance(5000);
    const reported: Array<[number, number, number]> = [];
    reassembly.expire((sender, kind, held) => reported.push([sender, kind, held]));
    assert.deepEqual(
      reported.sort((a, b) => a[0] - b[0]),
      [
        [5, FrameKind.Data, 2],
        [6, FrameKind.Control, 1],
      ],
    );
  });

  test('dropSender frees everything held for that sender only', () => {
    const { reassembly } = setup();
    for (const seq of [0, 10, 20]) {
      const [first] = fragments(1, seq, 300);
      reassembly.add(first![0], first![1]);
    }
    const other = fragments(2, 0, 200);
    reassembly.add(other[0]![0], other[0]![1]);
    assert.equal(reassembly.heldMessages, 4);
    reassembly.dropSender(1);
    assert.equal(reassembly.heldMessages, 1);
    assert.equal(reassembly.heldBytes, 200);
    reassembly.dropSender(99);
    assert.deepEqual(reassembly.add(other[1]![0], other[1]![1]), Buffer.alloc(200, 1));
    assert.equal(reassembly.stats.timedOut + reassembly.stats.overBudget, 0);
  });

  test('fragments that disagree with the first one seen are counted as inconsistent and dropped', () => {
    const { reassembly } = setup();
    const parts = fragments(1, 0, 300);
    reassembly.add(parts[0]![0], parts[0]![1]);
    const variants: Array<[FrameHeader, Buffer]> = [
      [{ ...parts[1]![0], fragmentCount: 4 }, parts[1]![1]], // another count
      [{ ...parts[1]![0], messageLength: 299 }, parts[1]![1]], // another length
      [parts[1]![0], parts[1]![1].subarray(0, 99)], // wrong size for a middle fragment
      [{ ...parts[2]![0] }, Buffer.alloc(50)], // a last fragment implying another fragment size
      [{ ...parts[1]![0], fragmentIndex: 3, seq: 3 }, parts[1]![1]], // index beyond the count
    ];
    for (const [header, payload] of variants) assert.equal(reassembly.add(header, payload), undefined);
    assert.equal(reassembly.stats.inconsistent, variants.length);
    assert.equal(reassembly.add(parts[1]![0], parts[1]![1]), undefined);
    assert.deepEqual(reassembly.add(parts[2]![0], parts[2]![1]), Buffer.alloc(300, 1));
  });

  test('refuses invalid options with a message naming the option', () => {
    assert.throws(() => setup({ maxBytesPerSender: 0 }), /maxBytesPerSender/);
    assert.throws(() => setup({ timeoutMs: Number.NaN }), /timeoutMs/);
  });
});
