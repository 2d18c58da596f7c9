/**
 * Configuration: defaults, the `"mccache"` section of ./package.json, MCCACHE_* environment
 * variables and per-cache options, validated once by one zod schema.
 *
 * Precedence, lowest first: {@link DEFAULTS} < package.json < environment < getCache options.
 */
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';

/** Callback context, fired when a recently read key is changed by another writer. */
export interface CallbackContext {
  /** `update`, `delete`, or `incoherent` (a pulse repaired the key). */
  type: 'update' | 'delete' | 'incoherent';
  /** The cache name. */
  namespace: string;
  /** The key that changed. */
  key: string;
  /** Wall-clock ms of the last local read. */
  lkp: number;
  /** HLC timestamp of the change. */
  tsm: number;
  /** Milliseconds between the last read and the change. */
  elapsed: number;
  /** crc before the change (undefined if the key was absent). */
  prvcrc: string | undefined;
  /** crc after the change (undefined if the key was deleted). */
  newcrc: string | undefined;
}

/** The per-cache settings (seed names). */
export interface CacheSettings {
  /** Seconds an entry lives after its last write; 0 means forever. */
  ttl: number;
  /** Maximum number of entries. */
  max: number;
  /** Maximum bytes of encoded keys and values. */
  size: number;
  /** 1: every member holds every key. 0: members apply updates only for keys they already hold. */
  mode: 0 | 1;
  /** Seconds after a read during which a remote change fires `callback`. */
  callbackWin: number;
  /** Called when a key read within `callbackWin` is changed by another member. */
  callback: ((ctx: CallbackContext) => void) | undefined;
  /** Deep-freeze stored values, so that in-place mutation (which never replicates) throws. */
  freeze: boolean;
}

/** The process-wide settings. */
export interface ClusterSettings {
  /** Cluster name; members of other clusters on the same group are ignored. */
  cluster: string;
  /** IPv4 multicast group (224.0.0.0-239.255.255.255); given as `ip:port`, its port wins over `multicastPort`. */
  multicastIp: string;
  /** UDP port of the multicast group (1-65535). */
  multicastPort: number;
  /** Interface address to join and send on. */
  multicastIf: string;
  /** Multicast TTL: how many router hops a datagram may cross (1-255). */
  multicastHops: number;
  /**
   * Largest datagram (UDP payload bytes) mccache sends, or `'auto'`: the multicast interface's MTU
   * minus 28 bytes of IP and UDP headers, at most 16384; 1472 when the MTU cannot be
   * read or the transport is unicast or NATS.
   */
  packetMtu: number | 'auto';
  /** Fernet keys; the first encrypts, all decrypt. Empty: no encryption. */
  cryptoKeys: string[];
  /** Seconds between anti-entropy pulses. */
  pulse: number;
  /** Seconds between housekeeper runs (expiry, timeouts). */
  daemonSleep: number;
  /** Path of the log file; its folder is created if missing. */
  logFilename: string;
  /** Line template with `{timestamp}`, `{level}`, `{message}` and `{meta}`; empty for the default line. */
  logFormat: string;
  /** Most verbose level written to the log file. */
  logLevel: 'error' | 'warn' | 'info' | 'debug' | 'silly';
  /** Percentage of datagrams dropped on send and on receive, for testing. */
  tantrum: number;
  /** Unicast peers (`host:port`, DNS names allowed); when set, replaces multicast. */
  peers: string[];
  /** NATS server URL(s); when set, replaces multicast. */
  natsUrl: string;
  /** Address and port this process receives unicast on (`address:port`); default `0.0.0.0:<multicastPort>`. */
  unicastBind: string;
  /** Shut down (flush, BYE) on SIGINT/SIGTERM. */
  handleSignals: boolean;
}

/** Every setting: the per-cache ones plus the process-wide ones, after defaults and every source are merged. */
export type Settings = CacheSettings & ClusterSettings;

/** Packet size for a 1500-byte Ethernet MTU: what `packetMtu: 'auto'` uses when the MTU is unknown. */
export const ETHERNET_PACKET_BYTES = 1472;

/**
 * The most `packetMtu: 'auto'` uses, even on loopback (MTU 65536). Sixteen KiB carries about 110 ops
 * of 100 B per datagram, so the per-datagram costs (system call, Fernet token, sequence bookkeeping)
 * almost vanish, while a lost datagram still costs little to resend.
 */
export const AUTO_PACKET_CAP = 16 * 1024;

/** Defaults, matching McCache for Python where it had the setting. */
export const DEFAULTS: Readonly<Settings> = Object.freeze({
  ttl: 3600,
  max: 256,
  size: 8 * 1024 * 1024,
  mode: 1,
  callbackWin: 5,
  callback: undefined,
  freeze: false,
  cluster: 'mccache',
  multicastIp: '224.0.0.3',
  multicastPort: 4000,
  multicastIf: '127.0.0.1',
  multicastHops: 3,
  packetMtu: 'auto',
  cryptoKeys: [] as string[],
  pulse: 300,
  daemonSleep: 1,
  logFilename: './log/mccache.log',
  logFormat: '',
  logLevel: 'warn',
  tantrum: 0,
  peers: [] as string[],
  natsUrl: '',
  unicastBind: '',
  handleSignals: true,
});

/** Where each setting is read from: environment variable and package.json key. */
const SOURCES: Record<keyof Settings, { env?: string; file?: string }> = {
  ttl: { env: 'MCCACHE_CACHE_TTL', file: 'cache_ttl' },
  max: { env: 'MCCACHE_CACHE_MAX', file: 'cache_max' },
  size: { env: 'MCCACHE_CACHE_SIZE', file: 'cache_size' },
  mode: { env: 'MCCACHE_CACHE_MODE', file: 'cache_mode' },
  callbackWin: { env: 'MCCACHE_CALLBACK_WIN', file: 'callback_win' },
  callback: {},
  freeze: { env: 'MCCACHE_CACHE_FREEZE', file: 'cache_freeze' },
  cluster: { env: 'MCCACHE_CLUSTER', file: 'cluster' },
  multicastIp: { env: 'MCCACHE_MULTICAST_IP', file: 'multicast_ip' },
  multicastPort: { env: 'MCCACHE_MULTICAST_PORT', file: 'multicast_port' },
  multicastIf: { env: 'MCCACHE_MULTICAST_IF', file: 'multicast_if' },
  multicastHops: { env: 'MCCACHE_MULTICAST_HOPS', file: 'multicast_hops' },
  packetMtu: { env: 'MCCACHE_PACKET_MTU', file: 'packet_mtu' },
  cryptoKeys: { env: 'MCCACHE_CRYPTO_KEY', file: 'crypto_key' },
  pulse: { env: 'MCCACHE_CACHE_PULSE', file: 'cache_pulse' },
  daemonSleep: { env: 'MCCACHE_DAEMON_SLEEP', file: 'daemon_sleep' },
  logFilename: { env: 'MCCACHE_LOG_FILENAME', file: 'log_filename' },
  logFormat: { env: 'MCCACHE_LOG_FORMAT', file: 'log_format' },
  logLevel: { env: 'MCCACHE_LOG_LEVEL', file: 'log_level' },
  tantrum: { env: 'TEST_MONKEY_TANTRUM', file: 'test_monkey_tantrum' },
  peers: { env: 'MCCACHE_PEERS', file: 'peers' },
  natsUrl: { env: 'MCCACHE_NATS_URL', file: 'nats_url' },
  unicastBind: { env: 'MCCACHE_UNICAST_BIND', file: 'unicast_bind' },
  handleSignals: { env: 'MCCACHE_HANDLE_SIGNALS', file: 'handle_signals' },
};

/** Settings that a getCache option may override per cache. */
export const CACHE_OPTION_NAMES = [
  'ttl',
  'max',
  'size',
  'mode',
  'callbackWin',
  'callback',
  'freeze',
] as const;

/** Options accepted by getCache. */
export type CacheOptions = Partial<CacheSettings>;

const FERNET_KEY = /^[A-Za-z0-9_-]{43}=$/;

/** Numbers from text: env and package.json may give strings; "abc" and "" stay invalid. */
function numberFrom(text: unknown): unknown {
  if (typeof text === 'string' && text.trim() !== '' && Number.isFinite(Number(text))) return Number(text);
  return text;
}

const wholeNumber = (min: number, max: number, what: string) =>
  z.preprocess(
    numberFrom,
    z
      .number({ error: `expected ${what}` })
      .int({ error: `expected ${what}` })
      .min(min, { error: `expected ${what} of at least ${min}` })
      .max(max, { error: `expected ${what} of at most ${max}` }),
  );

const seconds = (what: string) =>
  z.preprocess(
    numberFrom,
    z
      .number({ error: `expected ${what}` })
      .min(0, { error: `expected ${what} of at least 0` })
      .max(10 * 365 * 86400, { error: `expected ${what} of at most ten years` }),
  );

const flag = () =>
  z.preprocess(
    (v) => (v === 'true' || v === '1' ? true : v === 'false' || v === '0' ? false : v),
    z.boolean({ error: 'expected true or false (or 1 or 0)' }),
  );

/** What is wrong with a UDP port given as text (digits only, 1-65535), or undefined. */
function portProblem(port: string): string | undefined {
  if (!/^\d+$/.test(port)) return `port ${JSON.stringify(port)} is not a number from 1 to 65535`;
  if (Number(port) < 1 || Number(port) > 65535) return `port ${port} is out of range 1-65535`;
  return undefined;
}

function isPeerEntry(entry: string): boolean {
  const match = /^([A-Za-z0-9._-]+):(\d{1,5})$/.exec(entry);
  if (!match) return false;
  const [, host, port] = match;
  const looksNumeric = /^[\d.]+$/.test(host!);
  return portProblem(port!) === undefined && (!looksNumeric || isIPv4(host!));
}

const UNICAST_BIND_EXPECTED = 'expected address:port, such as 0.0.0.0:4000';

/** What is wrong with an MCCACHE_UNICAST_BIND value (IPv4 address:port), or undefined; '' means the default. */
function unicastBindProblem(value: string): string | undefined {
  if (value === '') return undefined;
  const match = /^([^:]*):([^:]*)$/.exec(value);
  if (!match) return UNICAST_BIND_EXPECTED;
  const [, address, port] = match;
  if (!isIPv4(address!)) return `${address || '(empty)'} is not an IPv4 address; ${UNICAST_BIND_EXPECTED}`;
  const badPort = portProblem(port!);
  return badPort ? `${badPort}; ${UNICAST_BIND_EXPECTED}` : undefined;
}

function isMulticast(ip: string): boolean {
  const first = Number(ip.split('.')[0]);
  return isIPv4(ip) && first >= 224 && first <= 239;
}

/** The one schema for every setting. Values arrive as text or JSON values. */
export const settingsSchema = z.object({
  ttl: seconds('a number of seconds (0 for no expiry)'),
  max: wholeNumber(1, 2 ** 26, 'a whole number of entries'),
  size: wholeNumber(1, 2 ** 40, 'a whole number of bytes'),
  mode: z.preprocess(numberFrom, z.union([z.literal(0), z.literal(1)], { error: 'expected 0 or 1' })),
  callbackWin: seconds('a number of seconds'),
  callback: z.custom<CacheSettings['callback']>((v) => v === undefined || typeof v === 'function', {
    error: 'expected a function',
  }),
  freeze: flag(),
  cluster: z
    .string({ error: 'expected a cluster name' })
    .min(1, { error: 'expected a non-empty cluster name' })
    .max(64, { error: 'expected a cluster name of at most 64 characters' }),
  multicastIp: z
    .string()
    .refine(isMulticast, { error: 'expected an IPv4 multicast address (224.0.0.0-239.255.255.255)' }),
  multicastPort: wholeNumber(1, 65535, 'a UDP port'),
  multicastIf: z
    .string()
    .refine((ip) => isIPv4(ip), { error: 'expected the IPv4 address of a local interface' }),
  multicastHops: wholeNumber(1, 255, 'a hop count'),
  // 1200: MIN_MTU of lib/wire/frame.ts, the smallest size at which every control frame fits one datagram.
  packetMtu: z.union([z.literal('auto'), wholeNumber(1200, 65507, 'a packet size in bytes')], {
    error: 'expected a packet size in bytes (1200-65507), or auto',
  }),
  cryptoKeys: z.preprocess(
    (v) =>
      typeof v === 'string'
        ? v
            .split(',')
            .map((k) => k.trim())
            .filter((k) => k !== '')
        : v,
    z.array(
      z.string().regex(FERNET_KEY, {
        error: 'expected Fernet keys: 32 bytes in url-safe base64 (44 characters), comma-separated',
      }),
    ),
  ),
  pulse: seconds('a number of seconds'),
  daemonSleep: z.preprocess(
    numberFrom,
    z
      .number({ error: 'expected a number of seconds' })
      .min(0.001, { error: 'expected a number of seconds of at least 0.001' })
      .max(3600, { error: 'expected a number of seconds of at most 3600' }),
  ),
  logFilename: z.string({ error: 'expected a file path' }).min(1, { error: 'expected a file path' }),
  logFormat: z.string({ error: 'expected a format string' }),
  logLevel: z.enum(['error', 'warn', 'info', 'debug', 'silly'], {
    error: 'expected one of error, warn, info, debug, silly',
  }),
  peers: z.preprocess(
    (v) =>
      typeof v === 'string'
        ? v
            .split(',')
            .map((p) => p.trim())
            .filter((p) => p !== '')
        : v,
    z.array(
      z.string().refine(isPeerEntry, {
        error: 'expected comma-separated host:port entries (IPv4 address or DNS name, port 1-65535)',
      }),
    ),
  ),
  natsUrl: z.string({ error: 'expected a NATS URL such as nats://127.0.0.1:4222' }),
  unicastBind: z.string({ error: UNICAST_BIND_EXPECTED }).superRefine((value, context) => {
    const problem = unicastBindProblem(value);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  }),
  handleSignals: flag(),
  tantrum: z.preprocess(
    numberFrom,
    z
      .number({ error: 'expected a percentage' })
      .min(0, { error: 'expected a percentage from 0 to 100' })
      .max(100, { error: 'expected a percentage from 0 to 100' }),
  ),
});

/** A setting that failed validation: names the source, the value and what was expected. */
export class ConfigError extends TypeError {
  /** Error class name, shown in stack traces and `String(error)`. */
  override name = 'ConfigError';
}

type RawSettings = Partial<Record<keyof Settings, unknown>>;
type Labels = Partial<Record<keyof Settings, string>>;

function readPackageSection(cwd: string): Record<string, unknown> {
  try {
    const pkg = JSON.parse(readFileSync(join(cwd, 'package.json'), 'utf8')) as { mccache?: unknown };
    const section = pkg.mccache;
    return section && typeof section === 'object' && !Array.isArray(section)
      ? (section as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}

const knownEnv = new Set(
  Object.values(SOURCES)
    .map((s) => s.env)
    .filter(Boolean),
);
const warnedEnv = new Set<string>();

/** MCCACHE_* variables that mean nothing to mccache (typos). Each is reported once per process. */
export function unknownEnvironmentVariables(env: NodeJS.ProcessEnv): string[] {
  const fresh: string[] = [];
  for (const name of Object.keys(env)) {
    if (name.startsWith('MCCACHE_') && !knownEnv.has(name) && !warnedEnv.has(name)) {
      warnedEnv.add(name);
      fresh.push(name);
    }
  }
  return fresh;
}

const packageKeys = Object.values(SOURCES)
  .map((s) => s.file)
  .filter((key): key is string => key !== undefined);
const warnedPackageKeys = new Set<string>();

/** Lower case without `_`, `-` or an MCCACHE_ prefix: `cacheTtl`, `MCCACHE_CACHE_TTL`, `cache-ttl` read `cachettl`. */
function squashed(name: string): string {
  return name
    .toLowerCase()
    .replace(/^mccache_/, '')
    .replace(/[_-]/g, '');
}

/** Edit distance counting a swap of neighbours as one edit (optimal string alignment). */
function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = best;
    }
  }
  return rows[a.length]![b.length]!;
}

/**
 * The setting a misspelt name most likely meant: one whose option name, package.json key or
 * environment variable matches it ignoring case, `_`, `-` and the MCCACHE_ prefix, else the nearest
 * within two edits (one for names of up to four letters). Undefined when nothing is that close.
 */
function closestSetting(name: string): keyof Settings | undefined {
  const wanted = squashed(name);
  let closest: keyof Settings | undefined;
  let closestDistance = wanted.length > 4 ? 3 : 2;
  for (const setting of Object.keys(SOURCES) as (keyof Settings)[]) {
    const { env, file } = SOURCES[setting];
    if (!env && !file) continue;
    for (const candidate of [setting, env, file]) {
      if (candidate === undefined) continue;
      const distance = squashed(candidate) === wanted ? 0 : editDistance(squashed(candidate), wanted);
      if (distance < closestDistance) {
        closest = setting;
        closestDistance = distance;
      }
    }
  }
  return closest;
}

/**
 * Warnings, each given once per process, for names mccache does not know (typos): MCCACHE_*
 * environment variables and keys of the package.json `"mccache"` object. Each names the unknown name
 * and the closest valid one, or lists the valid ones, e.g.
 * `unknown package.json key mccache.cahce_size ignored (did you mean cache_size?)`.
 */
export function unknownSettingWarnings(sources: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): string[] {
  const warnings: string[] = [];
  for (const name of unknownEnvironmentVariables(sources.env ?? process.env)) {
    const closest = closestSetting(name);
    const env = closest && SOURCES[closest].env;
    const hint = env ? `did you mean ${env}?` : `expected one of ${[...knownEnv].join(', ')}`;
    warnings.push(`unknown environment variable ${name} ignored (${hint})`);
  }
  for (const key of Object.keys(readPackageSection(sources.cwd ?? process.cwd()))) {
    // "//" keys are the usual way to comment a package.json.
    if (packageKeys.includes(key) || key.startsWith('//') || warnedPackageKeys.has(key)) continue;
    warnedPackageKeys.add(key);
    const closest = closestSetting(key);
    const file = closest && SOURCES[closest].file;
    const hint = file ? `did you mean ${file}?` : `expected one of ${packageKeys.join(', ')}`;
    warnings.push(`unknown package.json key mccache.${key} ignored (${hint})`);
  }
  return warnings;
}

/** Inputs to {@link resolveSettings}; each defaults to the real process. */
export interface SettingsSources {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Per-cache options from getCache, or overrides of any setting from code. */
  overrides?: Partial<Settings>;
}

/**
 * Merges and validates every source. Throws a {@link ConfigError} naming the variable, the value
 * and what is expected, e.g. `MCCACHE_CACHE_TTL="abc": expected a number of seconds`.
 */
export function resolveSettings(sources: SettingsSources = {}): Readonly<Settings> {
  const env = sources.env ?? process.env;
  const file = readPackageSection(sources.cwd ?? process.cwd());
  const raw: RawSettings = {};
  const labels: Labels = {};
  for (const name of Object.keys(SOURCES) as (keyof Settings)[]) {
    const source = SOURCES[name];
    raw[name] = DEFAULTS[name];
    labels[name] = `setting ${name}`;
    if (source.file && file[source.file] !== undefined) {
      raw[name] = file[source.file];
      labels[name] = `package.json mccache.${source.file}`;
    }
    if (source.env && env[source.env] !== undefined) {
      raw[name] = env[source.env];
      labels[name] = source.env;
    }
  }
  for (const [name, value] of Object.entries(sources.overrides ?? {})) {
    if (!Object.hasOwn(SOURCES, name))
      throw new ConfigError(`unknown option "${name}": expected one of ${Object.keys(SOURCES).join(', ')}`);
    if (value === undefined) continue;
    raw[name as keyof Settings] = value;
    labels[name as keyof Settings] = `option ${name}`;
  }
  // What an error quotes: the value as the user wrote it, before MCCACHE_MULTICAST_IP lost its :port.
  const written: RawSettings = { ...raw };
  splitMulticastAddress(raw, labels, written);
  const parsed = settingsSchema
    .refine((settings) => !(settings.natsUrl && settings.peers.length > 0), {
      error: 'expected either MCCACHE_PEERS or MCCACHE_NATS_URL, not both',
      path: ['natsUrl'],
    })
    .safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = issue.path[0] as keyof Settings;
    const shown = name === 'cryptoKeys' ? '(hidden)' : JSON.stringify(written[name]);
    throw new ConfigError(`${labels[name] ?? name}=${shown}: ${issue.message}`);
  }
  return Object.freeze(parsed.data as Settings);
}

/**
 * MCCACHE_MULTICAST_IP may carry `:port`, which then wins over MCCACHE_MULTICAST_PORT. Errors in either
 * part quote the whole value (`written`), as the user set it.
 */
function splitMulticastAddress(raw: RawSettings, labels: Labels, written: RawSettings): void {
  const address = raw.multicastIp;
  if (typeof address !== 'string' || !address.includes(':')) return;
  const label = labels.multicastIp ?? 'multicastIp';
  const match = /^([^:]*):([^:]*)$/.exec(address);
  if (!match)
    throw new ConfigError(
      `${label}=${JSON.stringify(address)}: expected an IPv4 multicast address with an optional :port, such as 239.1.1.1:4000`,
    );
  const [, ip, port] = match;
  const badPort = portProblem(port!);
  if (badPort) throw new ConfigError(`${label}=${JSON.stringify(address)}: ${badPort}`);
  raw.multicastIp = ip;
  raw.multicastPort = port;
  labels.multicastPort = label;
  written.multicastPort = address;
}

/** Picks the per-cache part of the settings. */
export function cacheSettingsOf(settings: Readonly<Settings>): CacheSettings {
  return {
    ttl: settings.ttl,
    max: settings.max,
    size: settings.size,
    mode: settings.mode,
    callbackWin: settings.callbackWin,
    callback: settings.callback,
    freeze: settings.freeze,
  };
}
