import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../lib/clock.js';
import { Fernet, generateFernetKey } from '../lib/wire/fernet.js';
import {
  FRAME_DROP_REASONS,
  FrameCodec,
  type FrameCodecOptions,
  type FrameDropReason,
  FrameKind,
  INNER_HEADER_BYTES,
  MAX_MESSAGE_BYTES,
  MIN_MTU,
  maxFragmentPayload,
  PREFIX_BYTES,
  peekClusterId,
  peekSender,
} from '../lib/wire/frame.js';
import { Reassembly } from '../lib/wire/reassembly.js';

const CLUSTER = 0x11223344;
const SENDER = 0xaabbccdd;
const NOW = 1_750_000_000;
const KEY = generateFernetKey();

function codec(overrides: Partial<FrameCodecOptions> = {}): FrameCodec {
  return new FrameCodec({
    clusterId: CLUSTER,
    sender: SENDER,
    mtu: 1472,
    nowSeconds: () => NOW,
    ...overrides,
  });
}

interface RawInner {
  clusterId?: number;
  sender?: number;
  kind?: number;
  reserved?: number;
  fragmentIndex?: number;
  fragmentCount?: number;
  payloadLength?: number;
  seq?: number;
  messageLength?: number;
  payload?: Uint8Array;
}

/** An inner frame written byte by byte from the documented layout, independent of FrameCodec. */
function rawInner(fields: RawInner = {}): Buffer {
  const payload = fields.payload ?? Buffer.from('hello');
  const frame = Buffer.alloc(INNER_HEADER_BYTES + payload.length);
  frame.writeUInt32BE(fields.clusterId ?? CLUSTER, 0);
  frame.writeUInt32BE(fields.sender ?? SENDER, 4);
  frame.writeUInt8(fields.kind ?? FrameKind.Data, 8);
  frame.writeUInt8(fields.reserved ?? 0, 9);
  frame.writeUInt16BE(fields.fragmentIndex ?? 0, 10);
  frame.writeUInt16BE(fields.fragmentCount ?? 1, 12);
  frame.writeUInt16BE(fields.payloadLength ?? payload.length, 14);
  frame.writeUInt32BE(fields.seq ?? 7, 16);
  frame.writeUInt32BE(fields.messageLength ?? payload.length, 20);
  Buffer.from(payload).copy(frame, INNER_HEADER_BYTES);
  return frame;
}

function dropReason(receiver: FrameCodec, datagram: Uint8Array): FrameDropReason | 'accepted' {
  const result = receiver.fromDatagram(datagram);
  return result.ok ? 'accepted' : result.reason;
}

function reassembly(): Reassembly {
  return new Reassembly({
    clock: new ManualClock(),
    timeoutMs: 10_000,
    maxMessagesPerSender: 16,
    maxBytesPerSender: 64 * 1024 * 1024,
    maxSenders: 16,
  });
}

describe('frame byte layout', () => {
  test('prefix and inner header sit at the documented offsets, big-endian', () => {
    const sender = codec();
    const message = Buffer.from('0123456789');
    const [frame] = sender.fragment(FrameKind.Control, 0x01020304, message);
    const datagram = sender.toDatagram(frame!);
    assert.equal(datagram.length, PREFIX_BYTES + INNER_HEADER_BYTES + message.length);
    assert.equal(datagram.subarray(0, 12).toString('hex'), '4d43' + '01' + '00' + '11223344' + 'aabbccdd');
    assert.equal(
      datagram.subarray(12, 36).toString('hex'),
      '11223344' + 'aabbccdd' + '02' + '00' + '0000' + '0001' + '000a' + '01020304' + '0000000a',
    );
    assert.deepEqual(datagram.subarray(36), message);
    assert.equal(peekSender(datagram), SENDER);
    assert.equal(peekClusterId(datagram), CLUSTER);
    assert.equal(peekSender(datagram.subarray(0, 11)), undefined);
  });

  test('a sealed datagram is the clear prefix with the SEALED flag, then a binary Fernet token', () => {
    const sender = codec({ fernet: new Fernet(KEY) });
    const payload = Buffer.from('secret payload that must not travel in clear');
    const [frame] = sender.fragment(FrameKind.Data, 1, payload);
    const datagram = sender.toDatagram(frame!);
    assert.equal(datagram.subarray(0, 12).toString('hex'), '4d43' + '01' + '01' + '11223344' + 'aabbccdd');
    const token = datagram.subarray(PREFIX_BYTES);
    assert.equal(token[0], 0x80);
    assert.equal(token.readUInt32BE(1) * 2 ** 32 + token.readUInt32BE(5), NOW);
    assert.equal(token.length, Fernet.sealedLength(INNER_HEADER_BYTES + payload.length));
    assert.equal(datagram.indexOf(payload), -1);
    assert.equal(datagram.indexOf(Buffer.from('secret')), -1);
  });

  test('fragment payload sizes follow the mtu: mtu - 36 in clear, Fernet.maxPlaintext(mtu - 12) - 24 sealed', () => {
    assert.equal(maxFragmentPayload(1472, false), 1436);
    assert.equal(maxFragmentPayload(1472, true), 1367);
    assert.equal(maxFragmentPayload(MIN_MTU, false), 1164);
    assert.equal(maxFragmentPayload(MIN_MTU, true), 1095);
    assert.throws(() => maxFragmentPayload(MIN_MTU - 1, false), RangeError);
    assert.throws(() => maxFragmentPayload(65_508, false), RangeError);
    for (const mtu of [MIN_MTU, MIN_MTU + 1, 1472, 1500, 9000, 65_507]) {
      for (const fernet of [undefined, new Fernet(KEY)]) {
        const sender = codec({ mtu, fernet });
        const [full] = sender.fragment(FrameKind.Data, 0, Buffer.alloc(sender.maxFragmentPayload * 2));
        const datagram = sender.toDatagram(full!);
        assert.ok(datagram.length <= mtu, `mtu ${mtu} sealed ${fernet !== undefined}: ${datagram.length}`);
        // A clear full fragment fills the datagram exactly; sealed, PKCS7 may waste up to 15 bytes.
        assert.ok(datagram.length > mtu - 16);
      }
    }
  });

  test('the largest message fits the u16 fragment count at the smallest mtu with encryption', () => {
    const sender = codec({ mtu: MIN_MTU, fernet: new Fernet(KEY) });
    assert.ok(sender.fragmentCount(MAX_MESSAGE_BYTES) <= 0xffff);
    assert.throws(
      () => sender.fragment(FrameKind.Data, 0, new Uint8Array(MAX_MESSAGE_BYTES + 1)),
      RangeError,
    );
  });
});

describe('frame round trips', () => {
  for (const sealed of [false, true]) {
    test(`a ${sealed ? 'sealed' : 'clear'} frame parses back to its header and payload`, () => {
      const fernet = sealed ? new Fernet(KEY) : undefined;
      const sender = codec({ fernet });
      const receiver = codec({ fernet, sender: 99 });
      const message = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
      const frames = sender.fragment(FrameKind.Data, 0xfffffffe, message);
      assert.equal(frames.length, 3);
      const parsed = frames.map((frame) => receiver.fromDatagram(sender.toDatagram(frame)));
      const f = sender.maxFragmentPayload;
      parsed.forEach((result, index) => {
        assert.ok(result.ok);
        assert.deepEqual(result.header, {
          clusterId: CLUSTER,
          sender: SENDER,
          kind: FrameKind.Data,
          fragmentIndex: index,
          fragmentCount: 3,
          seq: (0xfffffffe + index) >>> 0, // seqs wrap mod 2^32
          messageLength: message.length,
        });
        assert.deepEqual(
          result.payload,
          message.subarray(index * f, Math.min((index + 1) * f, message.length)),
        );
      });
    });
  }

  test('a clear datagram is the same bytes whether the frame came from fragment() or is a copy', () => {
    const sender = codec();
    const message = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) % 256));
    for (const frame of sender.fragment(FrameKind.Data, 40, message)) {
      const inPlace = sender.toDatagram(frame);
      const fromCopy = sender.toDatagram(Uint8Array.from(frame));
      assert.deepEqual(Buffer.from(inPlace), Buffer.from(fromCopy));
      assert.equal(inPlace.length, PREFIX_BYTES + frame.length);
      // From fragment(), the datagram is a view over the prefix already in front of the frame: no copy.
      assert.ok(inPlace.buffer === frame.buffer && inPlace.byteOffset === frame.byteOffset - PREFIX_BYTES);
      // A frame elsewhere in a buffer, with other bytes in front of it, gets its own prefix too.
      const shifted = Buffer.concat([Buffer.alloc(PREFIX_BYTES, 0xee), frame]).subarray(PREFIX_BYTES);
      assert.deepEqual(Buffer.from(sender.toDatagram(shifted)), Buffer.from(inPlace));
    }
  });

  test('a retransmitted frame gets a fresh token timestamp', () => {
    let now = NOW;
    const sender = codec({ fernet: new Fernet(KEY), nowSeconds: () => now });
    const [frame] = sender.fragment(FrameKind.Data, 1, Buffer.from('x'));
    const first = sender.toDatagram(frame!);
    now += 45;
    const second = sender.toDatagram(frame!);
    assert.equal(second.readUInt32BE(PREFIX_BYTES + 5) - first.readUInt32BE(PREFIX_BYTES + 5), 45);
    const receiver = codec({ fernet: new Fernet(KEY), nowSeconds: () => now + 30 });
    assert.equal(dropReason(receiver, first), 'stale');
    assert.equal(dropReason(receiver, second), 'accepted');
  });

  test('a receiver with any of the rotated keys opens a frame sealed with the first', () => {
    const oldKey = generateFernetKey();
    const sender = codec({ fernet: new Fernet([KEY, oldKey]) });
    const [frame] = sender.fragment(FrameKind.Control, 1, Buffer.from('rotating'));
    const datagram = sender.toDatagram(frame!);
    assert.equal(dropReason(codec({ fernet: new Fernet([oldKey, KEY]) }), datagram), 'accepted');
    assert.equal(dropReason(codec({ fernet: new Fernet(KEY) }), datagram), 'accepted');
    assert.equal(dropReason(codec({ fernet: new Fernet(oldKey) }), datagram), 'hmac');
  });
});

describe('every drop reason is reachable', () => {
  const clear = codec();
  const sealed = codec({ fernet: new Fernet(KEY) });
  const clearDatagram = clear.toDatagram(rawInner());
  const sealedDatagram = sealed.toDatagram(rawInner());
  const withByte = (datagram: Buffer, offset: number, value: number): Buffer => {
    const copy = Buffer.from(datagram);
    copy[offset] = value;
    return copy;
  };
  const cases: Array<[FrameDropReason, FrameCodec, () => Uint8Array]> = [
    ['short', clear, () => clearDatagram.subarray(0, PREFIX_BYTES - 1)],
    ['magic', clear, () => withByte(clearDatagram, 1, 0x44)],
    ['version', clear, () => withByte(clearDatagram, 2, 2)],
    ['flags', clear, () => withByte(clearDatagram, 3, 0x02)],
    ['cluster', clear, () => codec({ clusterId: 5 }).toDatagram(rawInner({ clusterId: 5 }))],
    ['unsealed', sealed, () => clearDatagram],
    ['sealed-without-key', clear, () => sealedDatagram],
    ['hmac', sealed, () => codec({ fernet: new Fernet(generateFernetKey()) }).toDatagram(rawInner())],
    ['malformed-token', sealed, () => sealedDatagram.subarray(0, PREFIX_BYTES + 40)],
    [
      'stale',
      sealed,
      () => codec({ fernet: new Fernet(KEY), nowSeconds: () => NOW - 61 }).toDatagram(rawInner()),
    ],
    [
      'future',
      sealed,
      () => codec({ fernet: new Fernet(KEY), nowSeconds: () => NOW + 61 }).toDatagram(rawInner()),
    ],
    ['header', clear, () => clear.toDatagram(rawInner({ kind: 3 }))],
  ];
  assert.deepEqual(cases.map(([reason]) => reason).sort(), [...FRAME_DROP_REASONS].sort());
  for (const [reason, receiver, make] of cases) {
    test(reason, () => {
      assert.equal(dropReason(receiver, make()), reason);
    });
  }

  test('a flipped bit anywhere in a sealed token fails the HMAC', () => {
    for (let offset = PREFIX_BYTES; offset < sealedDatagram.length; offset++) {
      const flipped = withByte(sealedDatagram, offset, sealedDatagram[offset]! ^ 0x10);
      const reason = dropReason(sealed, flipped);
      assert.equal(reason, offset === PREFIX_BYTES ? 'malformed-token' : 'hmac', `offset ${offset}`);
    }
  });

  test('the inner header is checked after the token opens', () => {
    assert.equal(dropReason(sealed, sealed.toDatagram(rawInner({ reserved: 1 }))), 'header');
    assert.equal(dropReason(sealed, sealed.toDatagram(rawInner({ sender: 1 }))), 'header');
  });

  test('the replay window is inclusive at 60 s both ways', () => {
    const at = (seconds: number) => codec({ fernet: new Fernet(KEY), nowSeconds: () => seconds });
    assert.equal(dropReason(sealed, at(NOW - 60).toDatagram(rawInner())), 'accepted');
    assert.equal(dropReason(sealed, at(NOW + 60).toDatagram(rawInner())), 'accepted');
    const narrow = codec({ fernet: new Fernet(KEY), replayWindowSeconds: 5 });
    assert.equal(dropReason(narrow, at(NOW - 5).toDatagram(rawInner())), 'accepted');
    assert.equal(dropReason(narrow, at(NOW - 6).toDatagram(rawInner())), 'stale');
    assert.equal(dropReason(narrow, at(NOW + 6).toDatagram(rawInner())), 'future');
  });

  const badHeaders: Array<[string, RawInner | Buffer]> = [
    ['the inner cluster id differs from the prefix', { clusterId: CLUSTER + 1 }],
    ['the inner sender differs from the prefix', { sender: SENDER - 1 }],
    ['the kind is neither DATA nor CONTROL', { kind: 0 }],
    ['the reserved byte is set', { reserved: 0x80 }],
    ['the fragment count is 0', { fragmentCount: 0, fragmentIndex: 0 }],
    ['the fragment index is not below the count', { fragmentCount: 2, fragmentIndex: 2, messageLength: 10 }],
    ['the payload length claims more than is there', { payloadLength: 6 }],
    ['the payload length claims less than is there', { payloadLength: 4 }],
    ['a lone fragment whose message length differs', { messageLength: 6 }],
    ['the message length exceeds the limit', { fragmentCount: 2, messageLength: MAX_MESSAGE_BYTES + 1 }],
    [
      'a first fragment that leaves more than one fragment for the last',
      { fragmentCount: 2, messageLength: 11 },
    ],
    ['a first fragment that leaves nothing for the last', { fragmentCount: 2, messageLength: 5 }],
    [
      'a last fragment whose predecessors cannot all be one size',
      { fragmentCount: 3, fragmentIndex: 2, messageLength: 10 },
    ],
    ['a last fragment larger than the others', { fragmentCount: 2, fragmentIndex: 1, messageLength: 9 }],
    [
      'an empty fragment of a fragmented message',
      { fragmentCount: 2, payload: new Uint8Array(0), messageLength: 0 },
    ],
    ['an inner frame shorter than its header', rawInner().subarray(0, INNER_HEADER_BYTES - 1)],
  ];
  for (const [name, fields] of badHeaders) {
    test(`header: ${name}`, () => {
      const inner = Buffer.isBuffer(fields) ? fields : rawInner(fields);
      assert.equal(dropReason(clear, clear.toDatagram(inner)), 'header');
    });
  }

  test('a sender id of 0 is refused', () => {
    const forged = Buffer.from(clear.toDatagram(rawInner({ sender: 0 })));
    forged.writeUInt32BE(0, 8);
    assert.equal(dropReason(clear, forged), 'header');
  });
});

describe('fragment geometry', () => {
  test('a message of exactly k fragments has no empty trailing fragment', () => {
    const sender = codec();
    const receiver = codec({ sender: 2 });
    const f = sender.maxFragmentPayload;
    for (const k of [1, 2, 3, 7]) {
      const message = Buffer.alloc(k * f, k);
      const frames = sender.fragment(FrameKind.Data, 100, message);
      assert.equal(frames.length, k);
      assert.equal(sender.fragmentCount(message.length), k);
      for (const frame of frames) assert.equal(frame.length, INNER_HEADER_BYTES + f);
      const joined = reassembly();
      const results = frames.map((frame) => {
        const parsed = receiver.fromDatagram(sender.toDatagram(frame));
        assert.ok(parsed.ok);
        return joined.add(parsed.header, parsed.payload);
      });
      assert.deepEqual(results.at(-1), message);
      assert.deepEqual(
        sender.fragment(FrameKind.Data, 0, Buffer.alloc(k * f + 1)).at(-1)?.length,
        INNER_HEADER_BYTES + 1,
      );
    }
  });

  test('an empty message is one fragment of 0 bytes', () => {
    const sender = codec();
    const frames = sender.fragment(FrameKind.Control, 5, new Uint8Array(0));
    assert.equal(frames.length, 1);
    const parsed = codec({ sender: 2 }).fromDatagram(sender.toDatagram(frames[0]!));
    assert.ok(parsed.ok);
    assert.equal(parsed.payload.length, 0);
    assert.equal(parsed.header.messageLength, 0);
  });

  test('a 16 MiB message fragments, travels and reassembles intact', () => {
    const sender = codec();
    const receiver = codec({ sender: 2 });
    const message = Buffer.allocUnsafe(16 * 1024 * 1024);
    for (let i = 0; i < message.length; i += 4) message.writeUInt32LE((i * 2_654_435_761) >>> 0, i);
    const frames = sender.fragment(FrameKind.Data, 1, message);
    assert.equal(frames.length, Math.ceil(message.length / 1436));
    const joined = reassembly();
    let whole: Buffer | undefined;
    for (let i = frames.length - 1; i >= 0; i--) {
      const parsed = receiver.fromDatagram(sender.toDatagram(frames[i]!));
      assert.ok(parsed.ok);
      whole = joined.add(parsed.header, parsed.payload);
      assert.equal(whole === undefined, i > 0);
    }
    assert.ok(whole?.equals(message));
    assert.equal(joined.heldBytes, 0);
  });

  test('the geometry check does not depend on the receiver mtu', () => {
    const sender = codec({ mtu: 9000 });
    const receiver = codec({ mtu: MIN_MTU, sender: 2 });
    const message = Buffer.alloc(20_000, 3);
    const joined = reassembly();
    let whole: Buffer | undefined;
    for (const frame of sender.fragment(FrameKind.Data, 1, message)) {
      const parsed = receiver.fromDatagram(sender.toDatagram(frame));
      assert.ok(parsed.ok);
      whole = joined.add(parsed.header, parsed.payload) ?? whole;
    }
    assert.deepEqual(whole, message);
  });

  test('fragment then reassemble recovers the message for any order and any duplication', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 6000 }),
        fc.integer({ min: MIN_MTU, max: 1600 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.infiniteStream(fc.nat()),
        (message, mtu, sealed, firstSeq, duplicatePicks, shuffle) => {
          const fernet = sealed ? new Fernet(KEY) : undefined;
          const sender = codec({ mtu, fernet });
          const receiver = codec({ mtu, fernet, sender: 2 });
          const datagrams = sender
            .fragment(FrameKind.Data, firstSeq, message)
            .map((f) => sender.toDatagram(f));
          const order = [...datagrams, ...duplicatePicks.map((pick) => datagrams[pick % datagrams.length]!)];
          const picks = shuffle[Symbol.iterator]();
          for (let i = order.length - 1; i > 0; i--) {
            const j = picks.next().value % (i + 1);
            [order[i], order[j]] = [order[j]!, order[i]!];
          }
          const joined = reassembly();
          const delivered: Buffer[] = [];
          for (const datagram of order) {
            const parsed = receiver.fromDatagram(datagram);
            assert.ok(parsed.ok);
            const whole = joined.add(parsed.header, parsed.payload);
            if (whole !== undefined) delivered.push(whole);
          }
          if (datagrams.length === 1) {
            assert.equal(delivered.length, order.length); // single fragments are never held
          } else {
            assert.equal(delivered.length, 1);
            assert.equal(joined.stats.duplicates, duplicatePicks.length);
          }
          assert.deepEqual(delivered[0], Buffer.from(message));
          assert.equal(joined.heldMessages, 0);
        },
      ),
      { seed: 424_242, numRuns: 300 },
    );
  });
});
