/**
 * Fernet cost per datagram: seal and open of a 1400-byte payload, against a bare node:crypto peer
 * (createCipheriv AES-128-CBC + createHmac SHA-256 over the same bytes, no token framing, fixed IV)
 * measured in the same run. Target: at most 50 us of crypto per 1400-byte datagram.
 *
 * Run: npx tsx benchmarks/fernet.ts
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import { cpus } from 'node:os';
import { Bench } from 'tinybench';
import { Fernet, generateFernetKey } from '../lib/wire/fernet.js';

const DATAGRAM_BYTES = 1400;
const TARGET_US = 50;
const NOW = Math.floor(Date.now() / 1000);

const key = generateFernetKey();
const fernet = new Fernet(key);
const rotating = new Fernet([generateFernetKey(), key]);
const payload = randomBytes(DATAGRAM_BYTES);
const token = fernet.seal(payload, NOW);
const window = { nowSeconds: NOW, maxAgeSeconds: 120, maxFutureSeconds: 60 };

const keyBytes = Buffer.from(key, 'base64url');
const signingKey = createSecretKey(keyBytes.subarray(0, 16));
const encryptionKey = createSecretKey(keyBytes.subarray(16));
const fixedIv = randomBytes(16);
const peerCiphertext = (() => {
  const cipher = createCipheriv('aes-128-cbc', encryptionKey, fixedIv);
  return Buffer.concat([cipher.update(payload), cipher.final()]);
})();
const peerMac = createHmac('sha256', signingKey).update(peerCiphertext).digest();

// Results are kept so that no call can be optimised away.
let sink = 0;

function buildBench(): Bench {
  const bench = new Bench({ time: 500, warmup: true });
  bench
    .add('peer: AES-128-CBC encrypt + HMAC-SHA256', () => {
      const cipher = createCipheriv('aes-128-cbc', encryptionKey, fixedIv);
      const body = cipher.update(payload);
      const tail = cipher.final();
      sink += createHmac('sha256', signingKey).update(body).update(tail).digest()[0]! + tail.length;
    })
    .add('Fernet.seal', () => {
      sink += fernet.seal(payload, NOW).length;
    })
    .add('peer: HMAC-SHA256 verify + AES-128-CBC decrypt', () => {
      const mac = createHmac('sha256', signingKey).update(peerCiphertext).digest();
      if (!timingSafeEqual(mac, peerMac)) throw new Error('peer MAC mismatch');
      const decipher = createDecipheriv('aes-128-cbc', encryptionKey, fixedIv);
      sink += decipher.update(peerCiphertext).length + decipher.final().length;
    })
    .add('Fernet.open (with time window)', () => {
      const result = fernet.open(token, window);
      if (!result.ok) throw new Error(`open failed: ${result.reason}`);
      sink += result.plaintext.length;
    })
    .add('Fernet.open, [new, old] keys, token under old', () => {
      const result = rotating.open(token, window);
      if (!result.ok) throw new Error(`open failed: ${result.reason}`);
      sink += result.plaintext.length;
    })
    .add('Fernet.open of a forged token (dropped at HMAC)', () => {
      token[40]! ^= 1;
      const result = fernet.open(token, window);
      token[40]! ^= 1;
      if (result.ok) throw new Error('forged token opened');
      sink += 1;
    });
  return bench;
}

// Other processes share this machine: each round measures every task, and each task keeps its best
// round (median latency per op), which is the least disturbed by preemption.
const ROUNDS = 3;
const bestMedianMicros = new Map<string, number>();
const meanMicrosOfBest = new Map<string, number>();
for (let round = 0; round < ROUNDS; round++) {
  const bench = buildBench();
  await bench.run();
  for (const task of bench.tasks) {
    const result = task.result;
    if (!('latency' in result)) throw new Error(`benchmark ${task.name} did not complete: ${result.state}`);
    const median = result.latency.p50 * 1000;
    if (median < (bestMedianMicros.get(task.name) ?? Number.POSITIVE_INFINITY)) {
      bestMedianMicros.set(task.name, median);
      meanMicrosOfBest.set(task.name, result.latency.mean * 1000);
    }
  }
}

function micros(name: string): number {
  const value = bestMedianMicros.get(name);
  if (value === undefined) throw new Error(`no result for ${name}`);
  return value;
}

const peers: Record<string, string> = {
  'Fernet.seal': 'peer: AES-128-CBC encrypt + HMAC-SHA256',
  'Fernet.open (with time window)': 'peer: HMAC-SHA256 verify + AES-128-CBC decrypt',
  'Fernet.open, [new, old] keys, token under old': 'peer: HMAC-SHA256 verify + AES-128-CBC decrypt',
  'Fernet.open of a forged token (dropped at HMAC)': 'peer: HMAC-SHA256 verify + AES-128-CBC decrypt',
};

console.log(`Fernet, ${DATAGRAM_BYTES}-byte datagram (token ${token.length} bytes)`);
console.log(
  `node ${process.version}, ${cpus()[0]?.model ?? 'unknown cpu'} x${cpus().length}, ${new Date().toISOString()}`,
);
console.log(`median latency per op, best of ${ROUNDS} rounds (mean of that round in brackets)`);
console.log('');
console.log(
  `${'task'.padEnd(50)} ${'us/op'.padStart(8)} ${'(mean)'.padStart(8)} ${'ops/s'.padStart(10)} ${'vs peer'.padStart(8)}`,
);
for (const [name, median] of bestMedianMicros) {
  const peer = peers[name];
  const ratio = peer === undefined ? '' : `${(median / micros(peer)).toFixed(2)}x`;
  const mean = `(${meanMicrosOfBest.get(name)!.toFixed(1)})`;
  const opsPerSecond = Math.round(1e6 / median).toString();
  console.log(
    `${name.padEnd(50)} ${median.toFixed(2).padStart(8)} ${mean.padStart(8)} ${opsPerSecond.padStart(10)} ${ratio.padStart(8)}`,
  );
}
const perDatagram = micros('Fernet.seal') + micros('Fernet.open (with time window)');
const verdict = perDatagram <= TARGET_US ? 'met' : 'MISSED';
console.log('');
console.log(`seal + open per datagram: ${perDatagram.toFixed(2)} us (target <= ${TARGET_US} us: ${verdict})`);
if (sink === 0) console.log('(sink)');
