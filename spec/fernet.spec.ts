import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { describe, type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { FernetOpenResult } from '../lib/wire/fernet.js';

// The `fernet` npm package adds a method to String.prototype; take the snapshot before ours loads.
const prototypeNamesBefore = {
  String: Object.getOwnPropertyNames(String.prototype).sort(),
  Object: Object.getOwnPropertyNames(Object.prototype).sort(),
  Array: Object.getOwnPropertyNames(Array.prototype).sort(),
  Uint8Array: Object.getOwnPropertyNames(Uint8Array.prototype).sort(),
  Buffer: Object.getOwnPropertyNames(Buffer.prototype).sort(),
};
const { Fernet, FernetError, generateFernetKey } = await import('../lib/wire/fernet.js');

const FAST_CHECK_SEED = 0x5eed_fe27;

interface GenerateVector {
  token: string;
  now: string;
  iv: number[];
  src: string;
  secret: string;
}
interface VerifyVector {
  token: string;
  now: string;
  ttl_sec: number;
  src: string;
  secret: string;
}
interface InvalidVector {
  desc: string;
  token: string;
  now: string;
  ttl_sec: number;
  secret: string;
}

function readFixture<T>(name: string): T[] {
  return JSON.parse(readFileSync(new URL(`./fixtures/fernet/${name}`, import.meta.url), 'utf8')) as T[];
}
const generateVectors = readFixture<GenerateVector>('generate.json');
const verifyVectors = readFixture<VerifyVector>('verify.json');
const invalidVectors = readFixture<InvalidVector>('invalid.json');

function seconds(isoTime: string): number {
  return Date.parse(isoTime) / 1000;
}

/** Deterministic pseudo-random bytes (xorshift32), so payloads are reproducible without storing them. */
function seededBytes(length: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let state = seed | 0 || 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

// Keys written out so that the tests do not depend on random keys.
const KEY_A = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
const KEY_B = `${Buffer.from(seededBytes(32, 2)).toString('base64url')}=`;
const KEY_C = `${Buffer.from(seededBytes(32, 3)).toString('base64url')}=`;
const T0 = 1_700_000_000;

/**
 * A token built by hand from its parts and signed with the key's real signing half, to reach the
 * checks that come after the HMAC (padding, block size, IV length) with an authentic token.
 */
function signedToken(
  secret: string,
  parts: { timestamp: number; iv: Uint8Array; ciphertext: Uint8Array; version?: number },
): Buffer {
  const key = Buffer.from(secret, 'base64url');
  const header = Buffer.alloc(9);
  header[0] = parts.version ?? 0x80;
  header.writeBigUInt64BE(BigInt(parts.timestamp), 1);
  const signed = Buffer.concat([header, parts.iv, parts.ciphertext]);
  return Buffer.concat([signed, createHmac('sha256', key.subarray(0, 16)).update(signed).digest()]);
}

/** AES-128-CBC of already padded blocks with the key's encryption half (no padding added). */
function encryptBlocks(secret: string, iv: Uint8Array, blocks: Uint8Array): Buffer {
  const cipher = createCipheriv('aes-128-cbc', Buffer.from(secret, 'base64url').subarray(16), iv);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(blocks), cipher.final()]);
}

function paddedWith(tail: number[]): Buffer {
  const block = seededBytes(32, 7);
  block.set(tail, 32 - tail.length);
  return block;
}

const IV = seededBytes(16, 11);

/** Authentic tokens that the spec says to reject after the HMAC, and the reason open gives. */
const authenticButInvalid: { name: string; token: Buffer; reason: string }[] = [
  { name: 'padding byte 0', token: tokenOf(paddedWith([0])), reason: 'padding' },
  { name: 'padding byte 17', token: tokenOf(paddedWith([17])), reason: 'padding' },
  { name: 'padding bytes that disagree', token: tokenOf(paddedWith([9, 3, 3])), reason: 'padding' },
  {
    name: 'padding of 16 that disagree',
    token: tokenOf(paddedWith([...Array(15).fill(16), 15, 16])),
    reason: 'padding',
  },
  {
    name: 'ciphertext of 15 bytes',
    token: signedToken(KEY_A, { timestamp: T0, iv: IV, ciphertext: seededBytes(15, 1) }),
    reason: 'padding',
  },
  {
    name: 'ciphertext of 17 bytes',
    token: signedToken(KEY_A, { timestamp: T0, iv: IV, ciphertext: seededBytes(17, 1) }),
    reason: 'padding',
  },
  {
    name: 'empty ciphertext',
    token: signedToken(KEY_A, { timestamp: T0, iv: IV, ciphertext: new Uint8Array(0) }),
    reason: 'padding',
  },
  {
    name: 'IV of 8 bytes',
    token: signedToken(KEY_A, { timestamp: T0, iv: IV.subarray(0, 8), ciphertext: tokenCiphertext() }),
    reason: 'padding',
  },
  {
    name: 'IV of 24 bytes',
    token: signedToken(KEY_A, { timestamp: T0, iv: seededBytes(24, 5), ciphertext: tokenCiphertext() }),
    reason: 'padding',
  },
  {
    name: 'version 0x81',
    token: signedToken(KEY_A, { timestamp: T0, iv: IV, ciphertext: tokenCiphertext(), version: 0x81 }),
    reason: 'version',
  },
];

function tokenOf(blocks: Buffer): Buffer {
  return signedToken(KEY_A, { timestamp: T0, iv: IV, ciphertext: encryptBlocks(KEY_A, IV, blocks) });
}

function tokenCiphertext(): Buffer {
  return encryptBlocks(KEY_A, IV, paddedWith([2, 2]));
}

/** The spec's text form of a binary token: url-safe base64 with padding, as Python writes it. */
function toUrlSafeToken(binary: Buffer): string {
  const text = binary.toString('base64url');
  return text + '='.repeat((4 - (text.length % 4)) % 4);
}

function assertRejected(result: FernetOpenResult, reason: string): void {
  assert.deepEqual(result, { ok: false, reason });
}

function assertOpens(result: FernetOpenResult, plaintext: Uint8Array, timestamp: number): void {
  assert.ok(result.ok, `expected the token to open, got ${JSON.stringify(result)}`);
  assert.deepEqual(result.plaintext, Buffer.from(plaintext));
  assert.equal(result.timestamp, timestamp);
}

function decryptFailure(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof FernetError, `expected a FernetError, got ${String(error)}`);
    return error.reason;
  }
  assert.fail('expected decrypt to throw a FernetError');
}

const INVALID_VECTOR_REASONS: Record<string, string> = {
  'incorrect mac': 'hmac',
  'too short': 'malformed',
  'invalid base64': 'malformed',
  'payload size not multiple of block size': 'padding',
  'payload padding error': 'padding',
  'far-future TS (unacceptable clock skew)': 'future',
  'expired TTL': 'expired',
  'incorrect IV (causes padding error)': 'padding',
};

describe('Fernet spec vectors', () => {
  test('every generate vector produces exactly the expected token', () => {
    assert.ok(generateVectors.length > 0);
    for (const vector of generateVectors) {
      const token = new Fernet(vector.secret).encrypt(
        vector.src,
        seconds(vector.now),
        Uint8Array.from(vector.iv),
      );
      assert.equal(token, vector.token);
    }
  });

  test('every verify vector decrypts, through the string API and the binary one', () => {
    assert.ok(verifyVectors.length > 0);
    for (const vector of verifyVectors) {
      const fernet = new Fernet(vector.secret);
      const now = seconds(vector.now);
      assert.equal(fernet.decrypt(vector.token, vector.ttl_sec, now).toString('utf8'), vector.src);
      const binary = Buffer.from(vector.token, 'base64url');
      const result = fernet.open(binary, {
        nowSeconds: now,
        maxAgeSeconds: vector.ttl_sec,
        maxFutureSeconds: 60,
      });
      assertOpens(result, Buffer.from(vector.src), binary.readUInt32BE(5));
    }
  });

  test('every invalid vector is rejected with its reason, through the string API and the binary one', () => {
    assert.deepEqual(
      invalidVectors.map((vector) => vector.desc).sort(),
      Object.keys(INVALID_VECTOR_REASONS).sort(),
    );
    for (const vector of invalidVectors) {
      const fernet = new Fernet(vector.secret);
      const now = seconds(vector.now);
      const expected = INVALID_VECTOR_REASONS[vector.desc];
      assert.equal(
        decryptFailure(() => fernet.decrypt(vector.token, vector.ttl_sec, now)),
        expected,
        vector.desc,
      );
      // Node's base64 decoder skips the characters it does not know; the binary path must refuse the rest anyway.
      const binary = Buffer.from(vector.token, 'base64url');
      const result = fernet.open(binary, {
        nowSeconds: now,
        maxAgeSeconds: vector.ttl_sec,
        maxFutureSeconds: 60,
      });
      assert.equal(result.ok, false, vector.desc);
    }
  });

  test('without a ttl, decrypt checks no time at all, as Python does', () => {
    const fernet = new Fernet(KEY_A);
    const farFuture = fernet.encrypt('later', T0 + 10 * 365 * 86_400);
    const ancient = fernet.encrypt('earlier', 1);
    assert.equal(fernet.decrypt(farFuture).toString(), 'later');
    assert.equal(fernet.decrypt(ancient).toString(), 'earlier');
    assert.equal(
      decryptFailure(() => fernet.decrypt(farFuture, 60, T0)),
      'future',
    );
    assert.equal(
      decryptFailure(() => fernet.decrypt(ancient, 60, T0)),
      'expired',
    );
  });

  test('decrypt accepts only padded url-safe base64', () => {
    const fernet = new Fernet(KEY_A);
    const token = fernet.encrypt(seededBytes(20, 9), T0, IV);
    assert.equal(fernet.decrypt(token).length, 20);
    assert.match(token, /=$/, 'the sample token must carry padding');
    const standardAlphabet = Buffer.from(Buffer.from(token, 'base64url')).toString('base64');
    assert.notEqual(standardAlphabet, token, 'the sample token must contain + or /');
    for (const bad of [
      token.replace(/=+$/, ''),
      standardAlphabet,
      ` ${token}`,
      `${token}\n`,
      `${token}====`,
      '',
    ]) {
      assert.equal(
        decryptFailure(() => fernet.decrypt(bad)),
        'malformed',
        JSON.stringify(bad),
      );
    }
  });
});

describe('binary seal and open', () => {
  const fernet = new Fernet(KEY_A);

  test('a token is version, big-endian u64 timestamp, IV, ciphertext and HMAC', () => {
    const timestamp = 2 ** 40 + 5;
    const token = fernet.seal(Buffer.from('hello'), timestamp);
    assert.equal(token.length, 1 + 8 + 16 + 16 + 32);
    assert.equal(token[0], 0x80);
    assert.equal(token.readBigUInt64BE(1), BigInt(timestamp));
    const mac = createHmac('sha256', Buffer.from(KEY_A, 'base64url').subarray(0, 16))
      .update(token.subarray(0, token.length - 32))
      .digest();
    assert.deepEqual(token.subarray(token.length - 32), mac);
    assertOpens(fernet.open(token), Buffer.from('hello'), timestamp);
  });

  test('round-trips arbitrary bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 4096 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        (plaintext, now) => {
          const token = fernet.seal(plaintext, now);
          assert.equal(token.length, Fernet.sealedLength(plaintext.length));
          assertOpens(fernet.open(token), plaintext, now);
        },
      ),
      { seed: FAST_CHECK_SEED, numRuns: 300 },
    );
  });

  test('round-trips payloads of every size class from empty to 64 KiB', () => {
    const edges = [0, 1, 15, 16, 17, 31, 32, 33, 1399, 1400, 1407, 1408, 65_535, 65_536];
    for (const length of edges) {
      const plaintext = seededBytes(length, length + 1);
      assertOpens(fernet.open(fernet.seal(plaintext, T0)), plaintext, T0);
    }
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 65_536 }), fc.integer(), (length, seed) => {
        const plaintext = seededBytes(length, seed);
        const token = fernet.seal(plaintext, T0);
        assert.equal(token.length, Fernet.sealedLength(length));
        assertOpens(fernet.open(token), plaintext, T0);
      }),
      { seed: FAST_CHECK_SEED, numRuns: 100 },
    );
  });

  test('opens a token held in a Uint8Array view at an offset, and one built by the string API', () => {
    const token = fernet.seal(Buffer.from('in a view'), T0);
    const backing = new Uint8Array(token.length + 7);
    backing.set(token, 7);
    assertOpens(fernet.open(backing.subarray(7)), Buffer.from('in a view'), T0);
    const fromString = Buffer.from(fernet.encrypt(new Uint8Array([0, 255, 128]), T0), 'base64url');
    assertOpens(fernet.open(fromString), Uint8Array.from([0, 255, 128]), T0);
  });

  test('draws a fresh IV for every seal, across refills of the IV pool', () => {
    const ivs = new Set<string>();
    for (let count = 0; count < 1000; count++) {
      ivs.add(fernet.seal(new Uint8Array(0), T0).subarray(9, 25).toString('hex'));
    }
    assert.equal(ivs.size, 1000);
  });

  test('sealedLength and maxPlaintext agree with real tokens', () => {
    assert.equal(Fernet.sealedLength(0), 73);
    assert.equal(Fernet.sealedLength(15), 73);
    assert.equal(Fernet.sealedLength(16), 89);
    assert.equal(Fernet.maxPlaintext(1472), 1407);
    assert.equal(fernet.seal(new Uint8Array(1407), T0).length, 1465);
    assert.equal(fernet.seal(new Uint8Array(1408), T0).length, 1481);
    assert.throws(() => Fernet.maxPlaintext(72), RangeError);
    fc.assert(
      fc.property(fc.integer({ min: 73, max: 100_000 }), (budget) => {
        const largest = Fernet.maxPlaintext(budget);
        assert.ok(Fernet.sealedLength(largest) <= budget);
        assert.ok(Fernet.sealedLength(largest + 1) > budget);
      }),
      { seed: FAST_CHECK_SEED, numRuns: 500 },
    );
  });

  test('changing any single byte of a token makes it fail', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (plaintext, position, flip) => {
          const token = fernet.seal(plaintext, T0);
          const index = position % token.length;
          token[index]! ^= flip;
          assertRejected(fernet.open(token), index === 0 ? 'version' : 'hmac');
        },
      ),
      { seed: FAST_CHECK_SEED, numRuns: 2000 },
    );
  });

  test('a truncated or extended token fails', () => {
    const token = fernet.seal(seededBytes(100, 3), T0);
    for (let length = 0; length < token.length; length++) {
      const result = fernet.open(token.subarray(0, length));
      assert.equal(result.ok, false, `truncated to ${length}`);
    }
    assert.equal(fernet.open(Buffer.concat([token, Buffer.alloc(16)])).ok, false);
    assert.equal(fernet.open(Buffer.concat([Buffer.from([0x80]), token])).ok, false);
  });

  test('never throws on garbage, whatever its type', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (garbage, withVersion) => {
        if (withVersion && garbage.length > 0) garbage[0] = 0x80;
        assert.equal(fernet.open(garbage).ok, false);
      }),
      { seed: FAST_CHECK_SEED, numRuns: 2000 },
    );
    for (const notBytes of [undefined, null, 'gAAAA', 42, {}, [0x80, 0, 0], new ArrayBuffer(100)]) {
      assertRejected(fernet.open(notBytes as unknown as Uint8Array), 'malformed');
    }
  });

  test('authentic tokens with bad padding, a broken block size or a wrong IV length are refused', () => {
    for (const { name, token, reason } of authenticButInvalid) {
      assertRejected(fernet.open(token), reason);
      assert.equal(
        decryptFailure(() => fernet.decrypt(toUrlSafeToken(token))),
        reason,
        name,
      );
    }
    // The same construction with correct padding opens, so the refusals above are about the padding.
    const wellPadded = tokenOf(paddedWith([4, 4, 4, 4]));
    assertOpens(fernet.open(wellPadded), seededBytes(32, 7).subarray(0, 28), T0);
  });
});

describe('keys', () => {
  test('a token sealed with key A fails under key B', () => {
    const token = new Fernet(KEY_A).seal(Buffer.from('secret'), T0);
    assertRejected(new Fernet(KEY_B).open(token), 'hmac');
    assert.equal(
      decryptFailure(() => new Fernet(KEY_B).decrypt(new Fernet(KEY_A).encrypt('secret', T0))),
      'hmac',
    );
  });

  test('with [new, old], both keys open and the new one seals (MultiFernet)', () => {
    const rotating = new Fernet([KEY_B, KEY_A]);
    const fromOld = new Fernet(KEY_A).seal(Buffer.from('old'), T0);
    const fromNew = new Fernet(KEY_B).seal(Buffer.from('new'), T0);
    assertOpens(rotating.open(fromOld), Buffer.from('old'), T0);
    assertOpens(rotating.open(fromNew), Buffer.from('new'), T0);
    const sealed = rotating.seal(Buffer.from('rotated'), T0);
    assertOpens(new Fernet(KEY_B).open(sealed), Buffer.from('rotated'), T0);
    assertRejected(new Fernet(KEY_A).open(sealed), 'hmac');
    assertRejected(rotating.open(new Fernet(KEY_C).seal(Buffer.from('stranger'), T0)), 'hmac');
    assert.equal(
      rotating.decrypt(new Fernet(KEY_A).encrypt('old by string', T0)).toString(),
      'old by string',
    );
  });

  test('generateFernetKey makes 32 random bytes in the form Python prints', () => {
    const keys = new Set(Array.from({ length: 50 }, () => generateFernetKey()));
    assert.equal(keys.size, 50);
    for (const key of keys) {
      assert.match(key, /^[A-Za-z0-9_-]{43}=$/);
      assert.equal(Buffer.from(key, 'base64url').length, 32);
      assertOpens(new Fernet(key).open(new Fernet(key).seal(Buffer.from('x'), T0)), Buffer.from('x'), T0);
    }
  });

  test('a malformed key is refused with a TypeError that says what is expected and never shows the key', () => {
    const short = Buffer.from(seededBytes(31, 4)).toString('base64url');
    const long = Buffer.from(seededBytes(33, 4)).toString('base64url');
    const standardAlphabet = Buffer.from(seededBytes(32, 8)).toString('base64');
    assert.match(standardAlphabet, /[+/]/, 'the sample key must use + or /');
    const bad = [short, long, KEY_A.slice(0, -1), standardAlphabet, `${KEY_A} `, KEY_A.replace('c', '%'), ''];
    for (const key of bad) {
      assert.throws(
        () => new Fernet(key),
        (error: unknown) =>
          error instanceof TypeError &&
          /32 bytes in url-safe base64/.test(error.message) &&
          (key.length < 8 || !error.message.includes(key.slice(0, 8))),
      );
    }
    assert.throws(() => new Fernet([KEY_A, short]), /key #2 of 2/);
    assert.throws(() => new Fernet([]), /at least one key/);
    assert.throws(() => new Fernet(42 as unknown as string), TypeError);
  });

  test('encrypt refuses an IV that is not 16 bytes and a timestamp that is not whole seconds', () => {
    const fernet = new Fernet(KEY_A);
    assert.throws(() => fernet.encrypt('x', T0, new Uint8Array(15)), /16 bytes/);
    assert.throws(() => fernet.encrypt('x', T0, new Uint8Array(17)), /16 bytes/);
    assert.throws(() => fernet.seal(new Uint8Array(1), -1), RangeError);
    assert.throws(() => fernet.seal(new Uint8Array(1), 1.5), RangeError);
  });
});

describe('timestamp window', () => {
  const fernet = new Fernet(KEY_A);
  const token = fernet.seal(Buffer.from('timed'), T0);

  test('a token exactly maxAgeSeconds old opens; one second older is expired', () => {
    assertOpens(fernet.open(token, { nowSeconds: T0 + 30, maxAgeSeconds: 30 }), Buffer.from('timed'), T0);
    assertRejected(fernet.open(token, { nowSeconds: T0 + 31, maxAgeSeconds: 30 }), 'expired');
  });

  test('a token exactly maxFutureSeconds ahead opens; one second further is from the future', () => {
    assertOpens(fernet.open(token, { nowSeconds: T0 - 5, maxFutureSeconds: 5 }), Buffer.from('timed'), T0);
    assertRejected(fernet.open(token, { nowSeconds: T0 - 6, maxFutureSeconds: 5 }), 'future');
  });

  test('a window left out is not checked', () => {
    assertOpens(fernet.open(token, { nowSeconds: T0 + 1e9, maxFutureSeconds: 5 }), Buffer.from('timed'), T0);
    assertOpens(fernet.open(token, { nowSeconds: 0, maxAgeSeconds: 5 }), Buffer.from('timed'), T0);
    assertOpens(fernet.open(token, { nowSeconds: 0 }), Buffer.from('timed'), T0);
  });

  test('without nowSeconds the window is measured from the system clock', () => {
    const fresh = fernet.seal(Buffer.from('now'));
    const stale = fernet.seal(Buffer.from('then'), 1000);
    assert.equal(fernet.open(fresh, { maxAgeSeconds: 3600, maxFutureSeconds: 3600 }).ok, true);
    assertRejected(fernet.open(stale, { maxAgeSeconds: 3600 }), 'expired');
  });

  test('the time of a forged token is never looked at: it fails the HMAC', () => {
    const forged = Buffer.from(token);
    forged.writeUInt32BE(7, 5);
    assertRejected(fernet.open(forged, { nowSeconds: T0, maxAgeSeconds: 30, maxFutureSeconds: 30 }), 'hmac');
  });
});

describe('none of the faults measured in the fernet npm package', () => {
  test('loading the module adds nothing to String, Object, Array, Uint8Array or Buffer prototypes', () => {
    assert.deepEqual(Object.getOwnPropertyNames(String.prototype).sort(), prototypeNamesBefore.String);
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeNamesBefore.Object);
    assert.deepEqual(Object.getOwnPropertyNames(Array.prototype).sort(), prototypeNamesBefore.Array);
    assert.deepEqual(
      Object.getOwnPropertyNames(Uint8Array.prototype).sort(),
      prototypeNamesBefore.Uint8Array,
    );
    assert.deepEqual(Object.getOwnPropertyNames(Buffer.prototype).sort(), prototypeNamesBefore.Buffer);
  });

  test('carries every byte value, including invalid UTF-8, through both APIs', () => {
    const fernet = new Fernet(KEY_A);
    const everyByte = Uint8Array.from({ length: 512 }, (_, index) => 255 - (index % 256));
    assertOpens(fernet.open(fernet.seal(everyByte, T0)), everyByte, T0);
    assert.deepEqual(fernet.decrypt(fernet.encrypt(everyByte, T0)), Buffer.from(everyByte));
  });

  test('refuses bad padding, a wrong block size and a wrong IV length', () => {
    const fernet = new Fernet(KEY_A);
    const names = authenticButInvalid.map((entry) => entry.name);
    for (const needed of ['padding byte 0', 'ciphertext of 17 bytes', 'IV of 8 bytes'])
      assert.ok(names.includes(needed));
    for (const { name, token } of authenticButInvalid) assert.equal(fernet.open(token).ok, false, name);
  });
});

// ---------------------------------------------------------------------------------------------------
// Interoperability with the reference implementation, Python's cryptography.fernet.

const PYTHON = '/usr/bin/python3';
const INTEROP_SCRIPT = fileURLToPath(new URL('./fixtures/fernet_interop.py', import.meta.url));
const PYTHON_DEADLINE_MS = 30_000;
const INSTALL_HINT = 'python3-cryptography not installed: apt-get install python3-cryptography';

const pythonHasCryptography =
  existsSync(PYTHON) &&
  spawnSync(PYTHON, ['-c', 'import cryptography.fernet'], { timeout: PYTHON_DEADLINE_MS, stdio: 'ignore' })
    .status === 0;
// In CI, or as root where apt-get could install it, a missing reference must fail rather than skip.
const referenceRequired =
  Boolean(process.env.CI) || (process.getuid?.() === 0 && existsSync('/usr/bin/apt-get'));

/** Runs the body against Python, or marks the test skipped (visibly) or failed when Python is missing. */
function withPython(t: TestContext, body: () => void): void {
  if (pythonHasCryptography) {
    body();
    return;
  }
  if (referenceRequired) assert.fail(`${INSTALL_HINT} (${PYTHON} cannot import cryptography.fernet)`);
  t.skip(INSTALL_HINT);
}

function python<T>(request: object): T {
  const output = execFileSync(PYTHON, [INTEROP_SCRIPT], {
    input: JSON.stringify(request),
    encoding: 'utf8',
    timeout: PYTHON_DEADLINE_MS,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(output) as T;
}

interface PythonDecryptResult {
  ok: boolean;
  plaintext?: string;
  error?: string;
}

function pythonDecrypt(
  items: { keys: string[]; token: string; ttl?: number | undefined; now?: number | undefined }[],
): PythonDecryptResult[] {
  return python<{ results: PythonDecryptResult[] }>({ op: 'decrypt', items }).results;
}

function pythonEncrypt(
  items: { keys: string[]; plaintext: Uint8Array; now: number; iv?: Uint8Array }[],
): string[] {
  const encoded = items.map(({ keys, plaintext, now, iv }) => ({
    keys,
    plaintext: Buffer.from(plaintext).toString('base64'),
    now,
    ...(iv === undefined ? {} : { iv: Buffer.from(iv).toString('base64') }),
  }));
  return python<{ tokens: string[] }>({ op: 'encrypt', items: encoded }).tokens;
}

const interopPayloads = [
  new Uint8Array(0),
  Buffer.from('hello'),
  Buffer.from('héllo wörld, ünïcode ✓'),
  Uint8Array.from({ length: 256 }, (_, index) => index),
  seededBytes(15, 21),
  seededBytes(16, 22),
  seededBytes(1400, 23),
  seededBytes(70_000, 24),
];

describe('interoperability with Python cryptography.fernet', () => {
  test('keys from Python Fernet.generate_key() are accepted', (t) =>
    withPython(t, () => {
      const { keys } = python<{ keys: string[] }>({ op: 'generate_keys', count: 5 });
      assert.equal(keys.length, 5);
      for (const key of keys) {
        const fernet = new Fernet(key);
        assertOpens(fernet.open(fernet.seal(Buffer.from('k'), T0)), Buffer.from('k'), T0);
      }
    }));

  test('tokens Python makes decrypt here, by string and as binary', (t) =>
    withPython(t, () => {
      const fernet = new Fernet(KEY_A);
      const tokens = pythonEncrypt(
        interopPayloads.map((plaintext, index) => ({ keys: [KEY_A], plaintext, now: T0 + index })),
      );
      tokens.forEach((token, index) => {
        const plaintext = interopPayloads[index]!;
        assert.deepEqual(fernet.decrypt(token, 60, T0 + index), Buffer.from(plaintext));
        assertOpens(fernet.open(Buffer.from(token, 'base64url')), plaintext, T0 + index);
      });
    }));

  test('tokens made here decrypt in Python', (t) =>
    withPython(t, () => {
      const fernet = new Fernet(KEY_A);
      const items = interopPayloads.flatMap((plaintext, index) => [
        { keys: [KEY_A], token: fernet.encrypt(plaintext, T0 + index), ttl: 60, now: T0 + index },
        {
          keys: [KEY_A],
          token: toUrlSafeToken(fernet.seal(plaintext, T0 + index)),
          ttl: 60,
          now: T0 + index,
        },
      ]);
      const results = pythonDecrypt(items);
      results.forEach((result, index) => {
        const plaintext = interopPayloads[Math.floor(index / 2)]!;
        assert.deepEqual(result, { ok: true, plaintext: Buffer.from(plaintext).toString('base64') });
      });
    }));

  test('with the same IV and time, Python and this module make the same bytes', (t) =>
    withPython(t, () => {
      const fernet = new Fernet(KEY_B);
      const items = interopPayloads.map((plaintext, index) => ({
        keys: [KEY_B],
        plaintext,
        now: T0 + index * 1000,
        iv: seededBytes(16, 100 + index),
      }));
      const tokens = pythonEncrypt(items);
      items.forEach(({ plaintext, now, iv }, index) => {
        assert.equal(fernet.encrypt(plaintext, now, iv), tokens[index]);
      });
    }));

  test('MultiFernet in both directions: [new, old] here and there', (t) =>
    withPython(t, () => {
      const rotating = new Fernet([KEY_B, KEY_A]);
      const plaintext = seededBytes(500, 31);
      // Python's MultiFernet([new, old]) seals with new; both of its tokens and single-key ones open here.
      const [fromPythonMulti, fromPythonOld] = pythonEncrypt([
        { keys: [KEY_B, KEY_A], plaintext, now: T0 },
        { keys: [KEY_A], plaintext, now: T0 },
      ]);
      assert.deepEqual(rotating.decrypt(fromPythonMulti!, 60, T0), plaintext);
      assert.deepEqual(rotating.decrypt(fromPythonOld!, 60, T0), plaintext);
      assert.deepEqual(new Fernet(KEY_B).decrypt(fromPythonMulti!, 60, T0), plaintext);
      assert.equal(
        decryptFailure(() => new Fernet(KEY_A).decrypt(fromPythonMulti!, 60, T0)),
        'hmac',
      );
      // Ours sealed with [new, old] opens in Python's MultiFernet and with new alone, not with old alone.
      const ours = rotating.encrypt(plaintext, T0);
      const oursOld = new Fernet(KEY_A).encrypt(plaintext, T0);
      const results = pythonDecrypt([
        { keys: [KEY_B, KEY_A], token: ours, ttl: 60, now: T0 },
        { keys: [KEY_B, KEY_A], token: oursOld, ttl: 60, now: T0 },
        { keys: [KEY_B], token: ours, ttl: 60, now: T0 },
        { keys: [KEY_A], token: ours, ttl: 60, now: T0 },
      ]);
      const expected = Buffer.from(plaintext).toString('base64');
      assert.deepEqual(results, [
        { ok: true, plaintext: expected },
        { ok: true, plaintext: expected },
        { ok: true, plaintext: expected },
        { ok: false, error: 'InvalidToken' },
      ]);
    }));

  test('Python and this module give the same verdict on edge and hostile tokens', (t) =>
    withPython(t, () => {
      const fernet = new Fernet(KEY_A);
      const sealed = fernet.seal(seededBytes(48, 41), T0);
      const cases: { name: string; token: string; ttl?: number; now?: number }[] = [
        ...authenticButInvalid.map(({ name, token }) => ({ name, token: toUrlSafeToken(token) })),
        ...invalidVectors.map((vector) => ({
          name: vector.desc,
          token: vector.token,
          ttl: vector.ttl_sec,
          now: seconds(vector.now),
        })),
        ...invalidVectors.map((vector) => ({ name: `${vector.desc}, no ttl`, token: vector.token })),
        { name: 'exactly ttl old', token: toUrlSafeToken(sealed), ttl: 60, now: T0 + 60 },
        { name: 'ttl + 1 old', token: toUrlSafeToken(sealed), ttl: 60, now: T0 + 61 },
        { name: '60 s ahead', token: toUrlSafeToken(sealed), ttl: 60, now: T0 - 60 },
        { name: '61 s ahead', token: toUrlSafeToken(sealed), ttl: 60, now: T0 - 61 },
        {
          name: 'a year ahead, no ttl',
          token: toUrlSafeToken(fernet.seal(Buffer.from('x'), T0 + 31_536_000)),
        },
        { name: 'ttl 0, same second', token: toUrlSafeToken(sealed), ttl: 0, now: T0 },
      ];
      for (let index = 0; index < sealed.length; index += 7) {
        const tampered = Buffer.from(sealed);
        tampered[index]! ^= 0x01;
        cases.push({ name: `bit flipped at ${index}`, token: toUrlSafeToken(tampered) });
      }
      const theirs = pythonDecrypt(cases.map(({ token, ttl, now }) => ({ keys: [KEY_A], token, ttl, now })));
      cases.forEach(({ name, token, ttl, now }, index) => {
        let ours: { ok: boolean; plaintext?: string };
        try {
          ours = { ok: true, plaintext: fernet.decrypt(token, ttl, now).toString('base64') };
        } catch (error) {
          assert.ok(error instanceof FernetError, name);
          ours = { ok: false };
        }
        const reference = theirs[index]!;
        assert.equal(ours.ok, reference.ok, `${name}: python says ${JSON.stringify(reference)}`);
        if (ours.ok) assert.equal(ours.plaintext, reference.plaintext, name);
      });
    }));
});
