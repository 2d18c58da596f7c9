/**
 * Parent side of the multi-process benchmarks: starts member processes (worker.ts under tsx),
 * sends them commands over IPC and always stops them, also when the parent fails or is interrupted.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: any) => void; reject: (e: Error) => void }>();
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;

  constructor(
    readonly index: number,
    private readonly child: ChildProcess,
  ) {
    let onReady!: () => void;
    this.ready = new Promise((resolve) => {
      onReady = resolve;
    });
    child.on('message', (reply: Reply) => {
      if (reply.id === 0) return onReady();
      const waiter = this.waiting.get(reply.id);
      if (!waiter) return;
      this.waiting.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(`member ${index}: ${reply.error}`));
    });
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.on('exit', (code, signal) => {
      for (const waiter of this.waiting.values()) {
        waiter.reject(new Error(`member ${index} exited (code ${code}, signal ${signal})`));
      }
      this.waiting.clear();
    });
  }

  /** Runs `command` in the member and resolves with its result. */
  call<T = unknown>(command: string, args?: unknown, timeoutMs = COMMAND_TIMEOUT_MS): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`member ${this.index}: ${command} took more than ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.child.send({ id, command, args });
    });
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
