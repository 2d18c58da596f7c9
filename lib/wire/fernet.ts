/**
 * Fernet (https://github.com/fernet/spec) on node:crypto: AES-128-CBC with PKCS7 padding, then
 * HMAC-SHA256 over everything before the MAC. A token is
 *
 *   version 0x80 (1) | timestamp, big-endian u64 seconds (8) | IV (16) | ciphertext (16*k, k >= 1) | HMAC (32)
 *
 * The wire carries this token in binary ({@link Fernet.seal} / {@link Fernet.open}); the url-safe base64
 * form of the spec ({@link Fernet.encrypt} / {@link Fernet.decrypt}) exists for the spec vectors and for
 * interoperability with Python's `cryptography.fernet`.
 *
 * Keys are Python's `Fernet.generate_key()`: 32 bytes in url-safe base64, the first 16 sign, the last 16
 * encrypt. Several keys behave like Python's MultiFernet: the first seals, any of them opens.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  type KeyObject,
  randomBytes,
  randomFillSync,
  timingSafeEqual,
} from 'node:crypto';

const VERSION = 0x80;
const TIMESTAMP_OFFSET = 1;
const IV_OFFSET = 9;
const IV_BYTES = 16;
const CIPHERTEXT_OFFSET = IV_OFFSET + IV_BYTES;
const BLOCK_BYTES = 16;
const HMAC_BYTES = 32;
/** Version, timestamp, IV and HMAC: everything but the ciphertext. */
const OVERHEAD_BYTES = CIPHERTEXT_OFFSET + HMAC_BYTES;
const KEY_BYTES = 32;
const CIPHER = 'aes-128-cbc';
const TWO_POW_32 = 0x1_0000_0000;
/** Python's `cryptography.fernet._MAX_CLOCK_SKEW`: how far in the future a token may claim to be. */
const PYTHON_MAX_CLOCK_SKEW_SECONDS = 60;

/** 32 bytes in url-safe base64 with its one padding character, exactly what `Fernet.generate_key()` prints. */
const KEY_PATTERN = /^[A-Za-z0-9_-]{43}=$/;
/** Url-safe base64 with correct padding (the length is checked separately), as Python emits tokens. */
const TOKEN_PATTERN = /^[A-Za-z0-9_-]*={0,2}$/;

/** A Fernet key: 32 bytes in url-safe base64 (Python's Fernet.generate_key()). */
export function generateFernetKey(): string {
  return `${randomBytes(KEY_BYTES).toString('base64url')}=`;
}

/** Why a token was refused. */
export type FernetOpenFailure = 'malformed' | 'version' | 'hmac' | 'padding' | 'expired' | 'future';

/** Thrown by the spec-style string API ({@link Fernet.decrypt}) when a token is refused. */
export class FernetError extends Error {
  override name = 'FernetError';
  /** Why the token was refused. */
  readonly reason: FernetOpenFailure;

  constructor(reason: FernetOpenFailure) {
    super(`invalid Fernet token (${reason})`);
    this.reason = reason;
  }
}

/** The outcome of {@link Fernet.open}: the plaintext and the token's timestamp, or why it was refused. */
export type FernetOpenResult =
  | { ok: true; plaintext: Buffer; timestamp: number } // timestamp in seconds from the token
  | { ok: false; reason: FernetOpenFailure };

/**
 * The timestamp window of {@link Fernet.open}. A window left out is not checked.
 * - `maxAgeSeconds`: refuse ('expired') a token whose timestamp + maxAgeSeconds < now.
 * - `maxFutureSeconds`: refuse ('future') a token whose timestamp > now + maxFutureSeconds.
 * - `nowSeconds`: the current time in seconds (default: the system clock).
 */
export interface FernetOpenOptions {
  nowSeconds?: number;
  maxAgeSeconds?: number;
  maxFutureSeconds?: number;
}

interface FernetKeyPair {
  signing: KeyObject;
  encryption: KeyObject;
}

function parseKey(key: unknown, position: string): FernetKeyPair {
  // Never put the key itself in a message: it ends up in logs.
  if (typeof key !== 'string') {
    throw new TypeError(
      `Fernet key${position} must be a string of 32 bytes in url-safe base64 (as Fernet.generate_key() makes); got ${typeof key}`,
    );
  }
  if (!KEY_PATTERN.test(key)) {
    throw new TypeError(
      `Fernet key${position} must be 32 bytes in url-safe base64: 44 characters from A-Z a-z 0-9 - _ ending in '=' ` +
        `(as Fernet.generate_key() makes); got ${key.length} characters that do not match`,
    );
  }
  const bytes = Buffer.from(key, 'base64url');
  const pair = {
    signing: createSecretKey(bytes.subarray(0, 16)),
    encryption: createSecretKey(bytes.subarray(16)),
  };
  bytes.fill(0);
  return pair;
}

/**
 * Random IVs drawn from one pooled buffer: randomBytes(16) per datagram costs about 4 us, while one
 * randomFillSync of the whole pool costs about the same and serves 256 datagrams. Each IV is used once.
 */
const IV_POOL_BYTES = IV_BYTES * 256;
const ivPool = Buffer.allocUnsafe(IV_POOL_BYTES);
let ivPoolOffset = IV_POOL_BYTES;

function takePooledIv(target: Buffer, targetOffset: number): void {
  if (ivPoolOffset === IV_POOL_BYTES) {
    randomFillSync(ivPool);
    ivPoolOffset = 0;
  }
  ivPool.copy(target, targetOffset, ivPoolOffset, ivPoolOffset + IV_BYTES);
  ivPoolOffset += IV_BYTES;
}

function currentSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function checkSeconds(nowSeconds: number): number {
  if (!Number.isSafeInteger(nowSeconds) || nowSeconds < 0) {
    throw new RangeError(
      `Fernet timestamp must be a non-negative integer number of seconds; got ${nowSeconds}`,
    );
  }
  return nowSeconds;
}

/** Reads the u64 timestamp; exact below 2^53 seconds, which covers every time a clock can show. */
function readTimestamp(token: Uint8Array): number {
  let high = 0;
  let low = 0;
  for (let index = 0; index < 4; index++) {
    high = high * 256 + token[TIMESTAMP_OFFSET + index]!;
    low = low * 256 + token[TIMESTAMP_OFFSET + 4 + index]!;
  }
  return high * TWO_POW_32 + low;
}

/** Strict url-safe base64 with padding (Python emits exactly this); anything else is malformed. */
function decodeToken(token: string): Buffer | undefined {
  if (token.length % 4 !== 0 || !TOKEN_PATTERN.test(token)) return undefined;
  return Buffer.from(token, 'base64url');
}

function encodeToken(token: Buffer): string {
  const text = token.toString('base64url');
  // Node leaves out the padding; Python's urlsafe_b64decode requires it.
  return text.length % 4 === 0 ? text : text + '='.repeat(4 - (text.length % 4));
}

/**
 * Fernet with one key or several (MultiFernet). Keys are parsed once at construction; sealing and
 * opening allocate the token or plaintext and the node:crypto contexts, nothing else.
 */
export class Fernet {
  readonly #keys: readonly FernetKeyPair[];
  readonly #sealingKey: FernetKeyPair;

  /**
   * One key or several (MultiFernet semantics: the first encrypts, every key is tried to decrypt).
   * Throws a TypeError that says what a key must look like (never the key itself) for a malformed key.
   */
  constructor(keys: string | readonly string[]) {
    const list: readonly unknown[] = typeof keys === 'string' ? [keys] : Array.isArray(keys) ? keys : [keys];
    if (list.length === 0) {
      throw new TypeError(
        'Fernet needs at least one key: 32 bytes in url-safe base64 (as Fernet.generate_key() makes)',
      );
    }
    this.#keys = list.map((key, index) =>
      parseKey(key, list.length === 1 ? '' : ` #${index + 1} of ${list.length}`),
    );
    this.#sealingKey = this.#keys[0]!;
  }

  /** Bytes of a sealed token for a plaintext of n bytes (57 + 16*(floor(n/16)+1)). */
  static sealedLength(plaintextLength: number): number {
    return OVERHEAD_BYTES + BLOCK_BYTES * (Math.floor(plaintextLength / BLOCK_BYTES) + 1);
  }

  /**
   * The largest plaintext whose sealed token fits in `tokenBudget` bytes. Throws a RangeError when even
   * an empty plaintext does not fit (a budget under 73 bytes).
   */
  static maxPlaintext(tokenBudget: number): number {
    const blocks = Math.floor((tokenBudget - OVERHEAD_BYTES) / BLOCK_BYTES);
    if (!(blocks >= 1)) {
      throw new RangeError(
        `a Fernet token needs at least ${OVERHEAD_BYTES + BLOCK_BYTES} bytes; a budget of ${tokenBudget} holds none`,
      );
    }
    // PKCS7 always adds at least one byte, so a full last block costs a whole extra block.
    return blocks * BLOCK_BYTES - 1;
  }

  /**
   * Seals plaintext into a binary token (version | timestamp | IV | ciphertext | HMAC, no base64),
   * stamped with `nowSeconds` (default: the system clock). The IV comes from a pooled random buffer.
   */
  seal(plaintext: Uint8Array, nowSeconds?: number): Buffer {
    return this.#seal(
      plaintext,
      nowSeconds === undefined ? currentSeconds() : checkSeconds(nowSeconds),
      undefined,
      0,
    );
  }

  /**
   * {@link seal}, with the token written after `headroom` bytes left free in front of it: the caller
   * fills them (a datagram prefix) and sends the whole buffer without copying the token again.
   */
  sealWithHeadroom(plaintext: Uint8Array, nowSeconds: number, headroom: number): Buffer {
    return this.#seal(plaintext, checkSeconds(nowSeconds), undefined, headroom);
  }

  #seal(plaintext: Uint8Array, nowSeconds: number, iv: Uint8Array | undefined, headroom: number): Buffer {
    const { signing, encryption } = this.#sealingKey;
    const sealedBytes = Fernet.sealedLength(plaintext.length);
    const whole = Buffer.allocUnsafe(headroom + sealedBytes);
    const token = headroom === 0 ? whole : whole.subarray(headroom);
    token[0] = VERSION;
    token.writeUInt32BE(Math.floor(nowSeconds / TWO_POW_32), TIMESTAMP_OFFSET);
    token.writeUInt32BE(nowSeconds >>> 0, TIMESTAMP_OFFSET + 4);
    if (iv === undefined) takePooledIv(token, IV_OFFSET);
    else token.set(iv, IV_OFFSET);

    const cipher = createCipheriv(CIPHER, encryption, token.subarray(IV_OFFSET, CIPHERTEXT_OFFSET));
    // node:crypto cannot encrypt into a caller's buffer, so each part is copied into the token once.
    const body = cipher.update(plaintext);
    body.copy(token, CIPHERTEXT_OFFSET);
    const tail = cipher.final();
    tail.copy(token, CIPHERTEXT_OFFSET + body.length);

    const macOffset = token.length - HMAC_BYTES;
    createHmac('sha256', signing).update(token.subarray(0, macOffset)).digest().copy(token, macOffset);
    return whole;
  }

  /**
   * Opens a binary token; never throws, whatever the input. In order: the length ('malformed') and the
   * version byte ('version'); the HMAC, compared in constant time before anything is decrypted ('hmac',
   * only when no key verifies it); whole AES blocks ('padding'); the timestamp window of `options`
   * ('expired', 'future'), checked before decrypting so a replayed token costs no AES; the PKCS7 padding
   * ('padding').
   */
  open(token: Uint8Array, options?: FernetOpenOptions): FernetOpenResult {
    if (!(token instanceof Uint8Array) || token.length < OVERHEAD_BYTES)
      return { ok: false, reason: 'malformed' };
    if (token[0] !== VERSION) return { ok: false, reason: 'version' };

    const macOffset = token.length - HMAC_BYTES;
    const signed = token.subarray(0, macOffset);
    const mac = token.subarray(macOffset);
    let key: FernetKeyPair | undefined;
    for (const candidate of this.#keys) {
      if (timingSafeEqual(createHmac('sha256', candidate.signing).update(signed).digest(), mac)) {
        key = candidate;
        break;
      }
    }
    if (key === undefined) return { ok: false, reason: 'hmac' };

    // Authenticated from here on, so the checks below are no oracle for a forger.
    const ciphertextLength = macOffset - CIPHERTEXT_OFFSET;
    if (ciphertextLength === 0 || ciphertextLength % BLOCK_BYTES !== 0)
      return { ok: false, reason: 'padding' };

    const timestamp = readTimestamp(token);
    if (options !== undefined) {
      const { maxAgeSeconds, maxFutureSeconds } = options;
      if (maxAgeSeconds !== undefined || maxFutureSeconds !== undefined) {
        const now = options.nowSeconds ?? currentSeconds();
        // Checked before decrypting, so replayed old datagrams cost an HMAC and no AES.
        if (maxAgeSeconds !== undefined && timestamp + maxAgeSeconds < now)
          return { ok: false, reason: 'expired' };
        if (maxFutureSeconds !== undefined && now + maxFutureSeconds < timestamp) {
          return { ok: false, reason: 'future' };
        }
      }
    }

    let padded: Buffer;
    try {
      const decipher = createDecipheriv(CIPHER, key.encryption, token.subarray(IV_OFFSET, CIPHERTEXT_OFFSET));
      // The padding is checked below, where a bad one is a result and not an exception.
      decipher.setAutoPadding(false);
      padded = decipher.update(token.subarray(CIPHERTEXT_OFFSET, macOffset));
    } catch {
      return { ok: false, reason: 'malformed' };
    }
    const padLength = padded[padded.length - 1]!;
    if (padLength === 0 || padLength > BLOCK_BYTES) return { ok: false, reason: 'padding' };
    for (let index = padded.length - padLength; index < padded.length - 1; index++) {
      if (padded[index] !== padLength) return { ok: false, reason: 'padding' };
    }
    return { ok: true, plaintext: padded.subarray(0, padded.length - padLength), timestamp };
  }

  /** Spec-style string API (url-safe base64 tokens), used for the spec vectors and Python interop. */
  encrypt(plaintext: Uint8Array | string, nowSeconds?: number, iv?: Uint8Array): string {
    if (iv !== undefined && (!(iv instanceof Uint8Array) || iv.length !== IV_BYTES)) {
      throw new TypeError(
        `a Fernet IV must be ${IV_BYTES} bytes; got ${iv instanceof Uint8Array ? iv.length : typeof iv}`,
      );
    }
    const bytes = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
    const seconds = nowSeconds === undefined ? currentSeconds() : checkSeconds(nowSeconds);
    return encodeToken(this.#seal(bytes, seconds, iv, 0));
  }

  /**
   * Decrypts a url-safe base64 token exactly as Python's `Fernet.decrypt_at_time(token, ttl, now)` does:
   * with `ttlSeconds`, a token older than ttl or more than 60 s in the future is refused; without it the
   * time is not checked at all. Throws {@link FernetError} (with its `reason`) for any refused token.
   */
  decrypt(token: string, ttlSeconds?: number, nowSeconds?: number): Buffer {
    if (typeof token !== 'string')
      throw new TypeError(`a Fernet token must be a string; got ${typeof token}`);
    const bytes = decodeToken(token);
    if (bytes === undefined) throw new FernetError('malformed');
    const result = this.open(
      bytes,
      ttlSeconds === undefined
        ? undefined
        : {
            nowSeconds: nowSeconds ?? currentSeconds(),
            maxAgeSeconds: ttlSeconds,
            maxFutureSeconds: PYTHON_MAX_CLOCK_SKEW_SECONDS,
          },
    );
    if (!result.ok) throw new FernetError(result.reason);
    return result.plaintext;
  }
}
