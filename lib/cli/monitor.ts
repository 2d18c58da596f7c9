/**
 * `mccache monitor`: joins a group as a silent observer and prints the ops it carries, decoded.
 *
 * The public API has no raw tap (a member always takes part), so this command opens its own UDP
 * socket on the group and decodes datagrams with the wire layer. It never sends: members do not
 * see it, and nothing it does changes any cache. Encrypted traffic needs the key.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { inspect } from 'node:util';
import { hlcToMillis, SystemClock } from '../index.js';
import { Fernet } from '../wire/fernet.js';
import { FrameCodec, FrameKind } from '../wire/frame.js';
import { decodeEntries, type Entry, Op } from '../wire/ops.js';
import { Reassembly } from '../wire/reassembly.js';
import { decodeValue, hash32 } from '../wire/value-codec.js';
import {
  describeFlags,
  durationFlag,
  type FlagSet,
  integerFlag,
  parseArgs,
  switchFlag,
  textFlag,
  UsageError,
} from './args.js';

const FERNET_KEY = /^[A-Za-z0-9_-]{43}=$/;

export const MONITOR_FLAGS = {
  group: textFlag({
    env: 'MCCACHE_MULTICAST_IP',
    default: '224.0.0.3',
    placeholder: '<ip[:port]>',
    description: 'multicast group (a :port suffix sets the port too)',
    check: (text) => {
      const [ip, port] = text.split(':');
      const first = Number(ip?.split('.')[0]);
      if (!ip || !isIPv4(ip) || first < 224 || first > 239)
        return 'expected an IPv4 multicast address (224.0.0.0-239.255.255.255), optionally with :port';
      if (port !== undefined && !(/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))
        return 'expected a port from 1 to 65535 after the colon';
      return undefined;
    },
  }),
  port: integerFlag({
    env: 'MCCACHE_MULTICAST_PORT',
    min: 1,
    max: 65535,
    default: 4000,
    description: 'UDP port',
  }),
  interface: textFlag({
    env: 'MCCACHE_MULTICAST_IF',
    default: '127.0.0.1',
    placeholder: '<ip>',
    description: 'address of the interface to listen on',
    check: (text) => (isIPv4(text) ? undefined : 'expected the IPv4 address of a local interface'),
  }),
  cluster: textFlag({
    env: 'MCCACHE_CLUSTER',
    default: 'mccache',
    placeholder: '<name>',
    description: 'cluster name',
  }),
  crypto: textFlag({
    env: 'MCCACHE_CRYPTO_KEY',
    placeholder: '<key>',
    description: 'Fernet key(s), comma-separated, if the traffic is encrypted',
    check: (text) =>
      text.split(',').every((key) => FERNET_KEY.test(key.trim()))
        ? undefined
        : 'expected Fernet keys: 32 bytes in url-safe base64 (44 characters ending in =), comma-separated',
  }),
  all: switchFlag({ description: 'also print control ops (heartbeats, NAKs, pulses, membership)' }),
  count: integerFlag({ min: 1, max: 2 ** 40, description: 'exit after printing this many ops' }),
  duration: durationFlag({
    minMs: 100,
    maxMs: 7 * 86_400_000,
    bareUnit: 's',
    description: 'exit after this long (a bare number is seconds); default: until Ctrl-C',
  }),
} satisfies FlagSet;

export interface MonitorOptions {
  group: string;
  port: number;
  interfaceAddress: string;
  cluster: string;
  cryptoKeys: string[];
  all: boolean;
  count: number | undefined;
  durationMs: number | undefined;
}

export const MONITOR_USAGE = `mccache monitor [flags]

Listens to a group without joining the cluster (it sends nothing) and prints each op it sees:
time, op, writer node, cache, key, timestamp and a preview of the value. Ctrl-C prints a summary.

${describeFlags(MONITOR_FLAGS)}`;

export function monitorOptionsFrom(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): MonitorOptions | 'help' {
  const { values, sources, positionals, help } = parseArgs(argv, MONITOR_FLAGS, env);
  if (help) return 'help';
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument "${positionals[0]}": monitor takes only flags`);
  const [group, portText] = values.group!.split(':');
  if (portText !== undefined && sources.port === 'flag') {
    throw new UsageError(`--group ${values.group} already gives a port: drop --port or the :port suffix`);
  }
  return {
    group: group!,
    port: portText !== undefined ? Number(portText) : values.port!,
    interfaceAddress: values.interface!,
    cluster: values.cluster!,
    cryptoKeys: values.crypto === undefined ? [] : values.crypto.split(',').map((k) => k.trim()),
    all: values.all ?? false,
    count: values.count,
    durationMs: values.duration,
  };
}

const OP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Op).map(([name, code]) => [code, name]),
);

function hex(id: number): string {
  return id.toString(16).padStart(8, '0');
}

/** A one-line preview of an encoded value. */
export function previewValue(bytes: Uint8Array, width = 80): string {
  let text: string;
  try {
    text = inspect(decodeValue(bytes), {
      breakLength: Number.POSITIVE_INFINITY,
      depth: 3,
      maxStringLength: 60,
    });
  } catch {
    return `<${bytes.length} bytes, not decodable>`;
  }
  text = text.replace(/\s+/g, ' ');
  return text.length > width ? `${text.slice(0, width - 3)}...` : text;
}

function clock(ms: number): string {
  const date = new Date(ms);
  return `${date.toTimeString().slice(0, 8)}.${String(date.getMilliseconds()).padStart(3, '0')}`;
}

/** One output line for an op, or undefined for control ops when they are not wanted. */
export function describeEntry(sender: number, entry: Entry, all: boolean): string | undefined {
  const name = (OP_NAMES[entry.op] ?? `op${entry.op}`).padEnd(3);
  switch (entry.op) {
    case Op.INS:
    case Op.UPD:
      return `${clock(hlcToMillis(entry.tsm))} ${name} node ${hex(entry.writer)} ${entry.cache} ${JSON.stringify(entry.key)} tsm=${entry.tsm} ${previewValue(entry.value)}`;
    case Op.DEL:
    case Op.EVT:
      return `${clock(hlcToMillis(entry.tsm))} ${name} node ${hex(entry.writer)} ${entry.cache} ${JSON.stringify(entry.key)} tsm=${entry.tsm}`;
    case Op.RST:
      return `${clock(hlcToMillis(entry.tsm))} ${name} node ${hex(entry.writer)} ${entry.cache ?? '(every cache)'} target=${entry.target === 0 ? 'all' : hex(entry.target)}`;
  }
  if (!all) return undefined;
  const now = clock(Date.now());
  switch (entry.op) {
    case Op.ACK:
      return `${now} ${name} node ${hex(sender)} highest=${entry.highestSeq} retained>=${entry.lowestRetained} peers=${entry.received.length}`;
    case Op.NAK:
      return `${now} ${name} node ${hex(sender)} asks ${hex(entry.target)} for ${entry.missing.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',')}`;
    case Op.SYC:
      return `${now} ${name} node ${hex(sender)} ${entry.cache} digest of ${entry.buckets.length} buckets`;
    case Op.SYD:
      return `${now} ${name} node ${hex(sender)} to ${hex(entry.target)} ${entry.cache} bucket ${entry.bucket}: ${entry.versions.length} versions`;
    case Op.REQ:
      return `${now} ${name} node ${hex(sender)} asks ${hex(entry.target)} for ${entry.keys.length} keys of ${entry.cache}`;
    default:
      return `${now} ${name} node ${hex(sender)}`;
  }
}

interface Output {
  write(text: string): void;
}

/** Counters of a monitor session. */
export interface MonitorCounts {
  datagrams: number;
  ops: Record<string, number>;
  duplicates: number;
  dropped: Record<string, number>;
}

/** Listens until Ctrl-C, `count` ops, or `durationMs`; returns the exit status. */
export async function runMonitor(options: MonitorOptions, output: Output): Promise<number> {
  const codec = new FrameCodec({
    clusterId: hash32(options.cluster),
    // The codec wants a sender id; the monitor never sends, so any nonzero id does.
    sender: 1,
    mtu: 1472,
    fernet: options.cryptoKeys.length > 0 ? new Fernet(options.cryptoKeys) : undefined,
  });
  const reassembly = new Reassembly({
    clock: new SystemClock(),
    timeoutMs: 10_000,
    maxMessagesPerSender: 64,
    maxBytesPerSender: 40 * 1024 * 1024,
    maxSenders: 256,
  });
  const counts: MonitorCounts = { datagrams: 0, ops: {}, duplicates: 0, dropped: {} };
  // Retransmitted DATA frames repeat a (sender, seq): remember recent ones to print each op once.
  const recentSeqs = new Map<number, Set<number>>();
  let printed = 0;
  const drop = (reason: string) => {
    counts.dropped[reason] = (counts.dropped[reason] ?? 0) + 1;
  };

  const socket: Socket = createSocket({ type: 'udp4', reuseAddr: true });
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const onDatagram = (datagram: Buffer) => {
    counts.datagrams++;
    const frame = codec.fromDatagram(datagram);
    if (!frame.ok) return drop(frame.reason);
    const { header, payload } = frame;
    if (header.kind === FrameKind.Data) {
      let seen = recentSeqs.get(header.sender);
      if (!seen) recentSeqs.set(header.sender, (seen = new Set()));
      if (seen.has(header.seq)) {
        counts.duplicates++;
        return;
      }
      seen.add(header.seq);
      if (seen.size > 8192) seen.delete(seen.values().next().value!);
      if (recentSeqs.size > 1024) recentSeqs.delete(recentSeqs.keys().next().value!);
    }
    const message = header.fragmentCount === 1 ? payload : reassembly.add(header, payload);
    if (!message) return;
    const decoded = decodeEntries(message);
    if (!decoded.ok) return drop(decoded.reason);
    const sender = header.sender;
    for (const entry of decoded.entries) {
      const name = OP_NAMES[entry.op] ?? `op${entry.op}`;
      counts.ops[name] = (counts.ops[name] ?? 0) + 1;
      const line = describeEntry(sender, entry, options.all);
      if (line === undefined) continue;
      output.write(`${line}\n`);
      printed++;
      if (options.count !== undefined && printed >= options.count) {
        finish();
        return;
      }
    }
  };

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(options.port, options.group, () => {
      socket.off('error', reject);
      resolve();
    });
  }).catch((error: Error) => {
    socket.close();
    throw new Error(`cannot listen on ${options.group}:${options.port}: ${error.message}`);
  });
  try {
    socket.addMembership(options.group, options.interfaceAddress);
    // Never sends, but pin the interface anyway so nothing could leave by the default route.
    socket.setMulticastInterface(options.interfaceAddress);
  } catch (error) {
    socket.close();
    throw new Error(
      `cannot join ${options.group} on interface ${options.interfaceAddress} (is it a local address?): ${(error as Error).message}`,
    );
  }
  socket.on('message', onDatagram);
  socket.on('error', (error) => drop(`socket-${(error as NodeJS.ErrnoException).code ?? 'error'}`));
  output.write(
    `monitoring ${options.group}:${options.port} on ${options.interfaceAddress}, cluster "${options.cluster}"` +
      `${options.cryptoKeys.length > 0 ? ', decrypting' : ''}; Ctrl-C to stop\n`,
  );
  const expiry = setInterval(() => reassembly.expire(), 1000);
  const timer = options.durationMs !== undefined ? setTimeout(finish, options.durationMs) : undefined;
  process.once('SIGINT', finish);
  process.once('SIGTERM', finish);
  try {
    await finished;
  } finally {
    process.off('SIGINT', finish);
    process.off('SIGTERM', finish);
    clearInterval(expiry);
    if (timer) clearTimeout(timer);
    socket.close();
  }
  const ops = Object.entries(counts.ops)
    .map(([name, count]) => `${name} ${count}`)
    .join(', ');
  const dropped = Object.entries(counts.dropped)
    .map(([reason, count]) => `${reason} ${count}`)
    .join(', ');
  output.write(
    `\n${counts.datagrams} datagrams; ops: ${ops || 'none'}; retransmitted duplicates ${counts.duplicates}; ` +
      `not decoded: ${dropped || 'none'}\n`,
  );
  if (counts.dropped['sealed-without-key'])
    output.write('the traffic is encrypted: pass its key with --crypto\n');
  if (counts.dropped.hmac) output.write('some traffic is sealed with another key: check --crypto\n');
  if (counts.dropped.cluster)
    output.write('some traffic belongs to another cluster on this group: check --cluster\n');
  return 0;
}
