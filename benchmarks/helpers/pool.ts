/**
 * Parent side of the multi-process benchmarks: starts member processes (worker.ts under tsx),
 * sends them commands over IPC and always stops them, also when the parent fails or is interrupted.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { IpcCalls } from '../../spec/helpers/ipc-calls.js';

const WORKER = fileURLToPath(new URL('./worker.ts', import.meta.url));
const COMMAND_TIMEOUT_MS = 60_000;

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** One member process. */
export class Member {
  private readonly calls: IpcCalls;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(
    readonly index: number,
    private readonly child: ChildProcess,
  ) {
    this.calls = new IpcCalls(`member ${index}`);
    let onReady!: () => void;
    this.ready = new Promise((resolve) => {
      onReady = resolve;
    });
    child.on('message', (reply: Reply) => {
      if (reply.id === 0) return onReady();
      this.calls.settle(reply);
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.on('exit', (code, signal) => {
      this.calls.failAll(new Error(`member ${index} exited (code ${code}, signal ${signal})`));
    });
  }

  /** Runs `command` in the member and resolves with its result. */
  call<T = unknown>(command: string, args?: unknown, timeoutMs = COMMAND_TIMEOUT_MS): Promise<T> {
    return this.calls.call<T>(
      (id) => this.child.send({ id, command, args }),
      timeoutMs,
      () => `member ${this.index}: ${command} took more than ${timeoutMs} ms`,
    );
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
}

const everyMember: Member[] = [];
let cleanupInstalled = false;

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', () => {
    for (const member of everyMember) member.kill();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const member of everyMember) member.kill();
      process.exit(130);
    });
  }
}

/** Starts `count` member processes and waits until each answers. */
export async function startMembers(count: number): Promise<Member[]> {
  installCleanup();
  const members: Member[] = [];
  for (let index = 0; index < count; index++) {
    const child = fork(WORKER, [], {
      // BENCH_WORKER_ARGS passes extra node flags to members, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
      execArgv: ['--import', 'tsx', ...(process.env.BENCH_WORKER_ARGS?.split(' ').filter(Boolean) ?? [])],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const member = new Member(index, child);
    members.push(member);
    everyMember.push(member);
  }
  await Promise.all(members.map((member) => member.ready));
  return members;
}

/** Asks every member to exit, and kills those that have not within two seconds. */
export async function stopMembers(members: Member[]): Promise<void> {
  await Promise.all(
    members.map((member) => {
      member.call('exit').catch(() => {});
      return Promise.race([member.exited, new Promise((resolve) => setTimeout(resolve, 2000))]);
    }),
  );
  for (const member of members) member.kill();
}

/** Polls `condition` until true or the deadline, then throws `what`. */
export async function waitFor(
  what: string,
  condition: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
