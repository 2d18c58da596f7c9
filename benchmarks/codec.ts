/**
 * The wire codec end to end: INS ops with 100-byte values, batched into datagrams.
 * - encode + frame: encodeEntry of each op, greedy batching up to maxFragmentPayload, fragment,
 *   toDatagram (clear, then sealed with Fernet);
 * - open + decode: fromDatagram of each datagram, decodeMessage of each payload into reused columns,
 *   as the engine does (strictly validated; keys and cache names become strings, values stay bytes).
 * Peers measured in the same run on the same ops: JSON.stringify/parse of one JSON array per
 * datagram-sized batch (value as base64, crc as hex: JSON has no bytes or u64), and raw cbor-x
 * encode/decode of the same op objects (default options, no framing, no validation).
 * Targets: >= 500k ops/s encode and decode without encryption; <= 50 us of crypto per datagram.
 *
 * Run: npx tsx benchmarks/codec.ts
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { Decoder, Encoder } from 'cbor-x';
import { Bench } from 'tinybench';
import { Fernet, generateFernetKey } from '../lib/wire/fernet.js';
import { FrameCodec, FrameKind } from '../lib/wire/frame.js';
import { DecodedMessage, decodeMessage, encodeEntry, Op, type WriteEntry } from '../lib/wire/ops.js';

const OPS = 2000;
const VALUE_BYTES = 100;
const MTU = 1472;
const TARGET_OPS_PER_SECOND = 500_000;
const TARGET_CRYPTO_US = 50;

const ops: WriteEntry[] = Array.from({ length: OPS }, (_, i) => ({
  op: Op.INS,
  cache: 'user-sessions',
  key: `session:${(0x9e3779b1 * (i + 1)) >>> 0}:profile`,
  tsm: 1_792_000_000_000_000 + i * 1024,
  writer: 0x7a3f19c2,
  crc: randomBytes(8).readBigUInt64BE(),
  value: randomBytes(VALUE_BYTES),
}));

const fernet = new Fernet(generateFernetKey());
const codecOptions = { clusterId: 0x12345678, mtu: MTU };
const clearSender = new FrameCodec({ ...codecOptions, sender: 0x7a3f19c2 });
const clearReceiver = new FrameCodec({ ...codecOptions, sender: 0x01010101 });
const sealedSender = new FrameCodec({ ...codecOptions, sender: 0x7a3f19c2, fernet });
const sealedReceiver = new FrameCodec({ ...codecOptions, sender: 0x01010101, fernet });

/** What the engine does: encode each op, fill a datagram greedily, frame and (maybe) seal it. */
function encodeAndFrame(codec: FrameCodec): Buffer[] {
  const datagrams: Buffer[] = [];
  const limit = codec.maxFragmentPayload;
  let parts: Uint8Array[] = [];
  let size = 0;
  let seq = 1;
  const flush = () => {
    const message = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
    for (const frame of codec.fragment(FrameKind.Data, seq, message)) {
      datagrams.push(codec.toDatagram(frame));
      seq++;
    }
    parts = [];
    size = 0;
  };
  for (const op of ops) {
    const bytes = encodeEntry(op);
    if (size + bytes.length > limit && parts.length > 0) flush();
    parts.push(bytes);
    size += bytes.length;
  }
  if (parts.length > 0) flush();
  return datagrams;
}

const decodedMessage = new DecodedMessage();
function openAndDecode(codec: FrameCodec, datagrams: readonly Buffer[]): number {
  let decoded = 0;
  for (const datagram of datagrams) {
    const frame = codec.fromDatagram(datagram);
    if (!frame.ok) throw new Error(`frame dropped: ${frame.reason}`);
    const rejection = decodeMessage(frame.payload, decodedMessage);
    if (rejection !== undefined) throw new Error(`payload refused: ${rejection}`);
    decoded += decodedMessage.count;
    decodedMessage.release();
  }
  return decoded;
}

// Peer 1: JSON, one array per batch of the same number of ops as our datagrams carry.
const clearDatagrams = encodeAndFrame(clearSender);
const sealedDatagrams = encodeAndFrame(sealedSender);
const opsPerClearDatagram = Math.floor(OPS / clearDatagrams.length);
const jsonOps = ops.map((op) => ({
  ...op,
  crc: op.crc.toString(16),
  value: Buffer.from(op.value).toString('base64'),
}));
function jsonEncode(): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < jsonOps.length; i += opsPerClearDatagram) {
    out.push(Buffer.from(JSON.stringify(jsonOps.slice(i, i + opsPerClearDatagram))));
  }
  return out;
}
const jsonBatches = jsonEncode();
function jsonDecode(): number {
  let decoded = 0;
  for (const batch of jsonBatches) {
    const parsed = JSON.parse(batch.toString()) as Array<{ value: string; crc: string }>;
    for (const op of parsed) {
      Buffer.from(op.value, 'base64');
      BigInt(`0x${op.crc}`);
    }
    decoded += parsed.length;
  }
  return decoded;
}

// Peer 2: raw cbor-x on the same op objects, default options, no framing and no validation.
const rawEncoder = new Encoder();
const rawDecoder = new Decoder();
const rawEncoded = ops.map((op) => rawEncoder.encode(op));

// Sanity: everything round-trips before anything is timed.
if (openAndDecode(clearReceiver, clearDatagrams) !== OPS) throw new Error('clear round trip lost ops');
if (openAndDecode(sealedReceiver, sealedDatagrams) !== OPS) throw new Error('sealed round trip lost ops');
if (jsonDecode() !== OPS) throw new Error('json peer lost ops');

let sink = 0;
const tasks: Record<string, () => void> = {
  'encode+frame, clear': () => {
    sink += encodeAndFrame(clearSender).length;
  },
  'encode+frame, Fernet': () => {
    sink += encodeAndFrame(sealedSender).length;
  },
  'peer: JSON.stringify batches': () => {
    sink += jsonEncode().length;
  },
  'peer: raw cbor-x encode': () => {
    for (const op of ops) sink += rawEncoder.encode(op).length;
  },
  'open+decode, clear': () => {
    sink += openAndDecode(clearReceiver, clearDatagrams);
  },
  'open+decode, Fernet': () => {
    sink += openAndDecode(sealedReceiver, sealedDatagrams);
  },
  'peer: JSON.parse batches': () => {
    sink += jsonDecode();
  },
  'peer: raw cbor-x decode': () => {
    for (const bytes of rawEncoded) sink += (rawDecoder.decode(bytes) as WriteEntry).tsm > 0 ? 1 : 0;
  },
};

// Other processes share this machine: keep each task's best round (median per iteration).
const ROUNDS = 3;
const bestMedianMs = new Map<string, number>();
for (let round = 0; round < ROUNDS; round++) {
  const bench = new Bench({ time: 400, warmup: true });
  for (const [name, run] of Object.entries(tasks)) bench.add(name, run);
  await bench.run();
  for (const task of bench.tasks) {
    const result = task.result;
    if (!('latency' in result)) throw new Error(`benchmark ${task.name} did not complete: ${result.state}`);
    const median = result.latency.p50;
    if (median < (bestMedianMs.get(task.name) ?? Number.POSITIVE_INFINITY))
      bestMedianMs.set(task.name, median);
  }
}

const opsPerSecond = (name: string): number => (OPS / bestMedianMs.get(name)!) * 1000;
const wireBytes = (datagrams: readonly Buffer[]) => datagrams.reduce((sum, d) => sum + d.length, 0);
const bytesPerOp: Record<string, number> = {
  'encode+frame, clear': wireBytes(clearDatagrams) / OPS,
  'encode+frame, Fernet': wireBytes(sealedDatagrams) / OPS,
  'peer: JSON.stringify batches': wireBytes(jsonBatches) / OPS,
  'peer: raw cbor-x encode': wireBytes(rawEncoded as Buffer[]) / OPS,
};
const peerOf: Record<string, string> = {
  'encode+frame, clear': 'peer: JSON.stringify batches',
  'encode+frame, Fernet': 'peer: JSON.stringify batches',
  'open+decode, clear': 'peer: JSON.parse batches',
  'open+decode, Fernet': 'peer: JSON.parse batches',
};

console.log(`wire codec: ${OPS} INS ops, ${VALUE_BYTES}-byte values, mtu ${MTU}`);
console.log(
  `node ${process.version}, ${cpus()[0]?.model ?? 'unknown cpu'} x${cpus().length}, ${new Date().toISOString()}`,
);
console.log(
  `${clearDatagrams.length} clear datagrams (${(OPS / clearDatagrams.length).toFixed(1)} ops each), ` +
    `${sealedDatagrams.length} sealed (${(OPS / sealedDatagrams.length).toFixed(1)} ops each)`,
);
console.log(`best of ${ROUNDS} rounds, median per iteration of ${OPS} ops`);
console.log('');
console.log(
  `${'task'.padEnd(32)} ${'ops/s'.padStart(11)} ${'bytes/op'.padStart(9)} ${'vs JSON'.padStart(8)}`,
);
for (const name of Object.keys(tasks)) {
  const peer = peerOf[name];
  const ratio = peer === undefined ? '' : `${(opsPerSecond(name) / opsPerSecond(peer)).toFixed(2)}x`;
  const bytes = bytesPerOp[name]?.toFixed(1) ?? '';
  console.log(
    `${name.padEnd(32)} ${Math.round(opsPerSecond(name)).toLocaleString('en').padStart(11)} ${bytes.padStart(9)} ${ratio.padStart(8)}`,
  );
}
const perDatagramUs = (name: string, datagrams: number) => (bestMedianMs.get(name)! * 1000) / datagrams;
const sealCost =
  perDatagramUs('encode+frame, Fernet', sealedDatagrams.length) -
  perDatagramUs('encode+frame, clear', clearDatagrams.length);
const openCost =
  perDatagramUs('open+decode, Fernet', sealedDatagrams.length) -
  perDatagramUs('open+decode, clear', clearDatagrams.length);
const averageSealed = wireBytes(sealedDatagrams) / sealedDatagrams.length;
console.log('');
console.log(
  `encryption cost per ${Math.round(averageSealed)}-byte datagram: seal +${sealCost.toFixed(1)} us, open +${openCost.toFixed(1)} us ` +
    `(target <= ${TARGET_CRYPTO_US} us each: ${sealCost <= TARGET_CRYPTO_US && openCost <= TARGET_CRYPTO_US ? 'met' : 'MISSED'})`,
);
const slowestClear = Math.min(opsPerSecond('encode+frame, clear'), opsPerSecond('open+decode, clear'));
console.log(
  `clear encode and decode: >= ${Math.round(slowestClear).toLocaleString('en')} ops/s ` +
    `(target >= ${TARGET_OPS_PER_SECOND.toLocaleString('en')}: ${slowestClear >= TARGET_OPS_PER_SECOND ? 'met' : 'MISSED'})`,
);
if (sink === 0) console.log('(sink)');
