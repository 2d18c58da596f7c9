/**
 * Hostile input: 120k seeded random and mutated datagrams through the whole receive path (frame
 * codec, reassembly, op decoding). Nothing may throw; every datagram ends with exactly one counted
 * outcome; with a key, no datagram but an unmodified valid one is ever accepted.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../lib/clock.js';
import { Fernet, generateFernetKey } from '../lib/wire/fernet.js';
import {
  FRAME_DROP_REASONS,
  FrameCodec,
  type FrameDropReason,
  FrameKind,
  INNER_HEADER_BYTES,
  MAX_MESSAGE_BYTES,
  PREFIX_BYTES,
} from '../lib/wire/frame.js';
import { decodeEntries, type Entry, encodeEntries, Op } from '../lib/wire/ops.js';
import { Reassembly } from '../lib/wire/reassembly.js';

const CLUSTER = 0x0badcafe;
const OTHER_CLUSTER = 0x0badcaff;
const NOW = 1_750_000_000;
const KEY = generateFernetKey();

/** mulberry32: small, fast, seeded. */
function seededRandom(seed: number) {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
  const int = (below: number): number => Math.floor(next() * below);
  const bytes = (length: number): Buffer => {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) out[i] = int(256);
    return out;
  };
  return { next, int, bytes, pick: <T>(items: readonly T[]): T => items[int(items.length)]! };
}

type Random = ReturnType<typeof seededRandom>;

function sampleBatch(random: Random, sender: number, size: number): Entry[] {
  const entries: Entry[] = [];
  let bytes = 0;
  while (bytes < size) {
    const value = random.bytes(100);
    const makers: Array<() => Entry> = [
      () => ({
        op: Op.INS,
        cache: 'sessions',
        key: `session:${random.int(1e9)}`,
        tsm: 1_792_000_000_000_000 + random.int(1e6),
        writer: sender,
        crc: BigInt(random.int(2 ** 32)) << 20n,
        value,
      }),
      () => ({
        op: Op.DEL,
        cache: 'users',
        key: `user:${random.int(1e6)}`,
        tsm: random.int(2 ** 50),
        writer: sender,
      }),
      () => ({
        op: Op.ACK,
        highestSeq: random.int(2 ** 32),
        lowestRetained: 1,
        received: [[sender, 5]],
      }),
      () => ({ op: Op.SYC, cache: 'users', buckets: [1, 2, 3, random.int(2 ** 32)] }),
      () => ({ op: Op.CHK, requestId: 9, target: 0, result: { crc: 12n, keys: ['a', 'b'], n: 1.5 } }),
    ];
    const entry = random.pick(makers)();
    entries.push(entry);
    bytes += entry.op === Op.INS ? 130 : 20;
  }
  return entries;
}

interface Corpus {
  clear: Buffer[];
  sealed: Buffer[];
  /** The encoded batches, for mutating payloads inside otherwise valid frames. */
  batches: Buffer[];
}

const SENDERS = [11, 22, 33];

function buildCorpus(random: Random): Corpus {
  const fernet = new Fernet(KEY);
  const corpus: Corpus = { clear: [], sealed: [], batches: [] };
  for (const sender of SENDERS) {
    const clear = new FrameCodec({ clusterId: CLUSTER, sender, mtu: 1472, nowSeconds: () => NOW });
    const sealed = new FrameCodec({ clusterId: CLUSTER, sender, mtu: 1472, fernet, nowSeconds: () => NOW });
    let seq = random.int(2 ** 32);
    for (let i = 0; i < 30; i++) {
      // Mostly one-datagram batches, some messages of several fragments.
      const batch = encodeEntries(sampleBatch(random, sender, i % 5 === 0 ? 4000 : 300 + random.int(900)));
      corpus.batches.push(batch);
      const kind = random.pick([FrameKind.Data, FrameKind.Control]);
      for (const frame of clear.fragment(kind, seq, batch)) corpus.clear.push(clear.toDatagram(frame));
      for (const frame of sealed.fragment(kind, seq, batch)) corpus.sealed.push(sealed.toDatagram(frame));
      seq = (seq + clear.fragmentCount(batch.length)) >>> 0;
    }
  }
  return corpus;
}

type Outcome = FrameDropReason | 'accepted';

/** One receiver and the whole receive path behind it, with every outcome counted. */
class Receiver {
  readonly frames = new Map<Outcome, number>();
  readonly messages = { ok: 0, decode: 0, shape: 0 };
  messagesOut = 0;
  acceptedMutated = 0;
  maxHeldBytes = 0;
  readonly clock = new ManualClock(NOW * 1000);
  readonly codec: FrameCodec;
  readonly reassembly = new Reassembly({
    clock: this.clock,
    timeoutMs: 2000,
    maxMessagesPerSender: 8,
    maxBytesPerSender: 4 * 1024 * 1024,
    maxSenders: 8,
  });

  constructor(fernet: Fernet | undefined) {
    this.codec = new FrameCodec({ clusterId: CLUSTER, sender: 99, mtu: 1472, fernet, nowSeconds: () => NOW });
  }

  /** Feeds one datagram; returns the frame-level outcome. Throws only if the code under test throws. */
  receive(datagram: Uint8Array, unmodified: boolean): Outcome {
    const parsed = this.codec.fromDatagram(datagram);
    const outcome: Outcome = parsed.ok ? 'accepted' : parsed.reason;
    this.frames.set(outcome, (this.frames.get(outcome) ?? 0) + 1);
    if (!parsed.ok) return outcome;
    if (!unmodified) this.acceptedMutated++;
    const message = this.reassembly.add(parsed.header, parsed.payload);
    this.maxHeldBytes = Math.max(this.maxHeldBytes, this.reassembly.heldBytes);
    if (message !== undefined) {
      this.messagesOut++;
      const decoded = decodeEntries(message);
      if (decoded.ok) this.messages.ok++;
      else this.messages[decoded.reason]++;
    }
    return outcome;
  }

  tick(): void {
    this.clock.advance(500);
    this.reassembly.expire();
  }

  get total(): number {
    let sum = 0;
    for (const count of this.frames.values()) sum += count;
    return sum;
  }
}

function flipBits(random: Random, datagram: Buffer, from: number): Buffer {
  const copy = Buffer.from(datagram);
  const flips = 1 + random.int(3);
  for (let i = 0; i < flips; i++) {
    const offset = from + random.int(copy.length - from);
    copy[offset]! ^= 1 << random.int(8);
  }
  return copy;
}

/** A clear datagram with a syntactically valid prefix and inner header written over random fields. */
function hugeFields(random: Random, codec: FrameCodec): Buffer {
  const payloadLength = random.pick([0, 1, 100, 1436, 1437, 0xffff]);
  const inner = Buffer.alloc(INNER_HEADER_BYTES + Math.min(payloadLength, 1436));
  inner.writeUInt32BE(CLUSTER, 0);
  inner.writeUInt32BE(SENDERS[0]!, 4);
  inner[8] = random.pick([1, 2, 0xff]);
  inner.writeUInt16BE(random.pick([0, 1, 0xfffe, 0xffff, random.int(0x10000)]), 10);
  inner.writeUInt16BE(random.pick([0, 1, 2, 0xffff, random.int(0x10000)]), 12);
  inner.writeUInt16BE(payloadLength, 14);
  inner.writeUInt32BE(random.int(2 ** 32), 16);
  inner.writeUInt32BE(
    random.pick([
      0,
      0xffffffff,
      MAX_MESSAGE_BYTES,
      MAX_MESSAGE_BYTES + 1,
      1436 * 0xffff,
      random.int(2 ** 32),
    ]),
    20,
  );
  const datagram = Buffer.concat([codec.toDatagram(inner).subarray(0, PREFIX_BYTES), inner]);
  datagram.writeUInt32BE(SENDERS[0]!, 8);
  return datagram;
}

describe('wire fuzz', () => {
  test('120k random and mutated datagrams: nothing throws, everything is counted, nothing forged is accepted', () => {
    const random = seededRandom(0x5eed_f00d);
    const corpus = buildCorpus(random);
    const clearReceiver = new Receiver(undefined);
    const sealedReceiver = new Receiver(new Fernet(KEY));
    const otherClusterClear = new FrameCodec({
      clusterId: OTHER_CLUSTER,
      sender: 11,
      mtu: 1472,
      nowSeconds: () => NOW,
    });
    const otherClusterSealed = new FrameCodec({
      clusterId: OTHER_CLUSTER,
      sender: 11,
      mtu: 1472,
      fernet: new Fernet(KEY),
      nowSeconds: () => NOW,
    });
    let skewSeconds = 0;
    const skewedSealed = new FrameCodec({
      clusterId: CLUSTER,
      sender: 11,
      mtu: 1472,
      fernet: new Fernet(KEY),
      nowSeconds: () => NOW + skewSeconds,
    });
    const clearCodec = new FrameCodec({ clusterId: CLUSTER, sender: 11, mtu: 1472, nowSeconds: () => NOW });
    const validClear = new Set(corpus.clear.map((d) => d.toString('latin1')));
    const validSealed = new Set(corpus.sealed.map((d) => d.toString('latin1')));
    const perCategory = new Map<string, number>();
    let sealedFed = 0;
    let sealedUnmodifiedFed = 0;
    let clearPrefixFlipsAccepted = 0;

    const feed = (category: string, receiver: Receiver, datagram: Buffer): Outcome => {
      perCategory.set(category, (perCategory.get(category) ?? 0) + 1);
      const valid = receiver === sealedReceiver ? validSealed : validClear;
      const unmodified = valid.has(datagram.toString('latin1'));
      if (receiver === sealedReceiver) {
        sealedFed++;
        if (unmodified) sealedUnmodifiedFed++;
      }
      return receiver.receive(datagram, unmodified);
    };

    const generators: Array<[string, number, () => void]> = [
      [
        'random bytes',
        12_000,
        () =>
          feed('random bytes', random.pick([clearReceiver, sealedReceiver]), random.bytes(random.int(1500))),
      ],
      [
        'random after a valid prefix',
        14_000,
        () => {
          const sealed = random.next() < 0.5;
          const datagram = Buffer.concat([
            random.pick(sealed ? corpus.sealed : corpus.clear).subarray(0, PREFIX_BYTES),
            random.bytes(random.int(1460)),
          ]);
          feed('random after a valid prefix', sealed ? sealedReceiver : clearReceiver, datagram);
        },
      ],
      [
        'truncated',
        10_000,
        () => {
          const sealed = random.next() < 0.5;
          const datagram = random.pick(sealed ? corpus.sealed : corpus.clear);
          feed(
            'truncated',
            sealed ? sealedReceiver : clearReceiver,
            datagram.subarray(0, random.int(datagram.length)),
          );
        },
      ],
      [
        'wrong magic',
        5000,
        () => {
          const sealed = random.next() < 0.5;
          const datagram = Buffer.from(random.pick(sealed ? corpus.sealed : corpus.clear));
          datagram.writeUInt16BE((0x4d43 + 1 + random.int(0xfffe)) & 0xffff, 0);
          feed('wrong magic', sealed ? sealedReceiver : clearReceiver, datagram);
        },
      ],
      [
        'huge counts and lengths',
        10_000,
        () => feed('huge counts and lengths', clearReceiver, hugeFields(random, clearCodec)),
      ],
      [
        'valid header, garbage body',
        10_000,
        () => {
          if (random.next() < 0.5) {
            const count = 1 + random.int(3);
            const frames = clearCodec.fragment(
              FrameKind.Data,
              random.int(2 ** 32),
              random.bytes(random.int(1436 * count)),
            );
            for (const frame of frames)
              feed('valid header, garbage body', clearReceiver, clearCodec.toDatagram(frame));
          } else {
            const datagram = Buffer.concat([
              random.pick(corpus.sealed).subarray(0, PREFIX_BYTES + 25),
              random.bytes(random.int(1400)),
            ]);
            feed('valid header, garbage body', sealedReceiver, datagram);
          }
        },
      ],
      [
        'valid frame for another cluster',
        5000,
        () => {
          const sealed = random.next() < 0.5;
          const sender = sealed ? otherClusterSealed : otherClusterClear;
          const [frame] = sender.fragment(
            FrameKind.Data,
            random.int(100),
            random.pick(corpus.batches).subarray(0, 500),
          );
          const outcome = feed(
            'valid frame for another cluster',
            sealed ? sealedReceiver : clearReceiver,
            sender.toDatagram(frame!),
          );
          assert.equal(outcome, 'cluster');
        },
      ],
      [
        'bit flips of sealed frames',
        22_000,
        () =>
          feed('bit flips of sealed frames', sealedReceiver, flipBits(random, random.pick(corpus.sealed), 0)),
      ],
      [
        'bit flips of clear frames',
        12_000,
        () => {
          const original = random.pick(corpus.clear);
          const flipped = flipBits(random, original, 0);
          const outcome = feed('bit flips of clear frames', clearReceiver, flipped);
          // Without a key only the payload and the unchecked header fields can change unnoticed.
          if (
            outcome === 'accepted' &&
            !flipped.subarray(0, PREFIX_BYTES).equals(original.subarray(0, PREFIX_BYTES))
          ) {
            clearPrefixFlipsAccepted++;
          }
        },
      ],
      [
        'valid clear frame, mutated batch',
        10_000,
        () => {
          const batch = flipBits(random, random.pick(corpus.batches), 0);
          for (const frame of clearCodec.fragment(FrameKind.Control, random.int(2 ** 32), batch)) {
            feed('valid clear frame, mutated batch', clearReceiver, clearCodec.toDatagram(frame));
          }
        },
      ],
      [
        'sealed outside the replay window',
        2000,
        () => {
          const skew = random.pick([-1, 1]) * (61 + random.int(10_000));
          const [frame] = skewedSealed.fragment(
            FrameKind.Data,
            random.int(100),
            random.pick(corpus.batches).subarray(0, 300),
          );
          skewSeconds = skew;
          const outcome = feed(
            'sealed outside the replay window',
            sealedReceiver,
            skewedSealed.toDatagram(frame!),
          );
          assert.equal(outcome, skew < 0 ? 'stale' : 'future');
        },
      ],
      [
        'wrong mode',
        2000,
        () => {
          const sealed = random.next() < 0.5;
          const outcome = feed(
            'wrong mode',
            sealed ? clearReceiver : sealedReceiver,
            random.pick(sealed ? corpus.sealed : corpus.clear),
          );
          assert.equal(outcome, sealed ? 'sealed-without-key' : 'unsealed');
        },
      ],
      [
        'unmodified valid frames',
        6000,
        () => {
          const sealed = random.next() < 0.5;
          const outcome = feed(
            'unmodified valid frames',
            sealed ? sealedReceiver : clearReceiver,
            random.pick(sealed ? corpus.sealed : corpus.clear),
          );
          assert.equal(outcome, 'accepted');
        },
      ],
    ];

    // Interleave the generators so reassembly sees mixed traffic, with time passing.
    const schedule: number[] = [];
    generators.forEach(([, runs], index) => {
      for (let i = 0; i < runs; i++) schedule.push(index);
    });
    for (let i = schedule.length - 1; i > 0; i--) {
      const j = random.int(i + 1);
      [schedule[i], schedule[j]] = [schedule[j]!, schedule[i]!];
    }
    schedule.forEach((index, step) => {
      generators[index]![2]();
      if (step % 1000 === 999) {
        clearReceiver.tick();
        sealedReceiver.tick();
      }
    });

    const fed = [...perCategory.values()].reduce((a, b) => a + b, 0);
    assert.ok(fed >= 100_000, `fed ${fed}`);
    // Every datagram has exactly one frame outcome, from the documented set.
    assert.equal(clearReceiver.total + sealedReceiver.total, fed);
    for (const receiver of [clearReceiver, sealedReceiver]) {
      for (const outcome of receiver.frames.keys()) {
        assert.ok(outcome === 'accepted' || FRAME_DROP_REASONS.includes(outcome), outcome);
      }
      // Every whole message came out of reassembly and was either decoded or refused with a reason.
      assert.equal(receiver.messagesOut, receiver.reassembly.stats.completed);
      assert.equal(
        receiver.messages.ok + receiver.messages.decode + receiver.messages.shape,
        receiver.messagesOut,
      );
      assert.ok(receiver.maxHeldBytes <= 8 * 4 * 1024 * 1024);
    }

    // With a key: accepted exactly the unmodified valid datagrams, and all of those decode.
    assert.equal(sealedReceiver.total, sealedFed);
    assert.equal(sealedReceiver.frames.get('accepted') ?? 0, sealedUnmodifiedFed);
    assert.equal(sealedReceiver.acceptedMutated, 0);
    assert.equal(sealedReceiver.messages.decode + sealedReceiver.messages.shape, 0);
    assert.ok(sealedReceiver.messages.ok > 0);
    for (const reason of [
      'hmac',
      'malformed-token',
      'stale',
      'future',
      'magic',
      'cluster',
      'short',
      'unsealed',
    ] as const) {
      assert.ok((sealedReceiver.frames.get(reason) ?? 0) > 0, `sealed receiver never saw ${reason}`);
    }

    // Without a key: the prefix is always checked; garbage reached the decoder and was refused.
    assert.equal(clearPrefixFlipsAccepted, 0);
    for (const reason of [
      'short',
      'magic',
      'version',
      'flags',
      'cluster',
      'sealed-without-key',
      'header',
    ] as const) {
      assert.ok((clearReceiver.frames.get(reason) ?? 0) > 0, `clear receiver never saw ${reason}`);
    }
    assert.ok(clearReceiver.messages.decode > 0 && clearReceiver.messages.shape > 0);
    const stats = clearReceiver.reassembly.stats;
    assert.ok(stats.overBudget + stats.inconsistent + stats.timedOut > 0);

    console.log(
      JSON.stringify({
        fed,
        clear: Object.fromEntries(clearReceiver.frames),
        clearMessages: clearReceiver.messages,
        clearReassembly: clearReceiver.reassembly.stats,
        sealed: Object.fromEntries(sealedReceiver.frames),
        sealedMessages: sealedReceiver.messages,
      }),
    );
  });
});
