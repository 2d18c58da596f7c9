/**
 * A private nats-server for one run of `mccache stress --transport nats` (and for the cluster specs):
 * started on a free loopback port, stopped afterwards, killed if this process exits first.
 * Needs the nats-server binary (Debian package `nats-server`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { MissingToolError } from '../index.js';

/** How to get nats-server: named in every error about it being missing. */
export const NATS_SERVER_INSTALL_HINT =
  'install the Debian package nats-server (apt-get install nats-server)';

/** The nats-server executable (PATH, then the usual sbin/bin folders), or undefined when not installed. */
export function findNatsServer(path: string = process.env.PATH ?? ''): string | undefined {
  const directories = [
    ...path.split(delimiter),
    '/usr/sbin',
    '/usr/bin',
    '/usr/local/sbin',
    '/usr/local/bin',
  ];
  for (const directory of directories) {
    if (!directory) continue;
    const candidate = join(directory, 'nats-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** A TCP port on 127.0.0.1 that was free when asked (the caller binds it right away). */
export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('the OS assigned no TCP port');
  return address.port;
}

/** A running nats-server. */
export interface NatsServerProcess {
  readonly port: number;
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  /** True until the process has exited. */
  readonly running: boolean;
  /** Stops the server (SIGTERM, SIGKILL after 5 s) and resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startNatsServer}. */
export interface NatsServerOptions {
  /** Port on 127.0.0.1; default a free one. Give the old port to restart a server in place. */
  port?: number;
  /** How long to wait until it accepts connections; default 10 s. */
  readyTimeoutMs?: number;
  /** The executable; default {@link findNatsServer}. An empty string stands for "not installed". */
  binary?: string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killRunningServers(): void {
  for (const child of running) child.kill('SIGKILL');
}

/**
 * Starts nats-server on 127.0.0.1 and resolves once it reports that it is ready.
 * @throws MissingToolError naming the Debian package when nats-server is not installed.
 * @throws Error with the server's last output when it exits or is not ready in time (port in use...).
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerProcess> {
  const binary = options.binary ?? findNatsServer();
  if (!binary) throw new MissingToolError(`nats-server is not installed: ${NATS_SERVER_INSTALL_HINT}`);
  const port = options.port ?? (await freeTcpPort());
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
  const child = spawn(binary, ['-a', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  if (!exitHookInstalled) {
    // A coordinator that dies (or exits on SIGINT) must not leave a server behind.
    exitHookInstalled = true;
    process.on('exit', killRunningServers);
  }
  let output = '';
  let exited = false;
  let spawnError: Error | undefined;
  // Ready when it says so on stderr: a probe of the port could be answered by another process that
  // holds it, while this server fails to bind and exits.
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output = (output + chunk).slice(-4000);
    if (output.includes('Server is ready')) onReady();
  });
  const exit = new Promise<void>((resolve) => {
    // 'close', not 'exit': the last words on stderr (why it failed) have been read by then.
    child.once('close', () => resolve());
    child.once('error', (error) => {
      spawnError = error;
      resolve();
    });
  }).then(() => {
    exited = true;
    running.delete(child);
  });

  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(killer);
  };

  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), readyTimeoutMs);
  });
  const outcome = await Promise.race([
    ready.then(() => 'ready' as const),
    exit.then(() => 'exited' as const),
    late,
  ]);
  clearTimeout(timer);
  if (outcome !== 'ready' || exited) {
    await stop();
    const said = lastLines(output, 3) || '(no output)';
    const why =
      outcome === 'late' ? `not ready within ${readyTimeoutMs} ms: ${said}` : (spawnError?.message ?? said);
    throw new Error(`nats-server on 127.0.0.1:${port} did not start: ${why}`);
  }
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    get running() {
      return !exited;
    },
    stop,
  };
}

/** The server's error lines ([FTL], [ERR]) if it printed any, else its last `count` lines. */
function lastLines(text: string, count: number): string {
  const lines = text
    .trim()
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const errors = lines.filter((line) => /\[(FTL|ERR)\]/.test(line));
  return (errors.length > 0 ? errors : lines.slice(-count)).join(' | ');
}
