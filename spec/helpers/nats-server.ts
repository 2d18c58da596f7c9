/**
 * Starts and stops a real nats-server (Debian package `nats-server`) on a free loopback port, for
 * tests of the NATS transport.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { connect, createServer } from 'node:net';
import { delimiter, join } from 'node:path';

/** Why NATS tests skip when the server binary is missing. */
export const NATS_SERVER_MISSING =
  'nats-server is not installed: install the Debian package nats-server (apt-get install -y nats-server)';

/** The nats-server executable, or undefined when it is not installed. */
export function findNatsServer(): string | undefined {
  const directories = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/sbin',
    '/usr/bin',
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

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it right away). */
export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP port assigned');
  return address.port;
}

/** A running nats-server. */
export interface NatsServerProcess {
  readonly port: number;
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  /** Kills the server and waits until it has exited. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts nats-server on 127.0.0.1 (on `port`, or a free one) and resolves once it accepts TCP
 * connections. Rejects with the server's output if it exits or is not ready within `deadlineMs`.
 */
export async function startNatsServer(port?: number, deadlineMs = 10_000): Promise<NatsServerProcess> {
  const binary = findNatsServer();
  if (!binary) throw new Error(NATS_SERVER_MISSING);
  const chosenPort = port ?? (await freeTcpPort());
  const child = spawn(binary, ['-a', '127.0.0.1', '-p', String(chosenPort)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  let output = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output = (output + chunk).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
    running.delete(child);
  });

  const stop = async (): Promise<void> => {
    if (hasExited) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  };

  const deadline = Date.now() + deadlineMs;
  while (!(await acceptsConnections(chosenPort))) {
    if (hasExited || Date.now() > deadline) {
      await stop();
      throw new Error(`nats-server on port ${chosenPort} did not start: ${output.trim() || '(no output)'}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return { port: chosenPort, url: `nats://127.0.0.1:${chosenPort}`, stop };
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
