/**
 * Commands sent to a child process over IPC, matched with its replies by id, each with a deadline.
 * Shared by the test members (spec/helpers/processes.ts, spec/netns.spec.ts) and the benchmark pool.
 */
interface Waiter {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** A reply from a child: `{ id, ok, result }` or `{ id, ok: false, error }`. */
export interface IpcReply {
  id?: number;
  ok?: boolean;
  result?: unknown;
  error?: string;
}

export class IpcCalls {
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;

  /** `name` prefixes the errors a child reports. */
  constructor(private readonly name: string) {}

  /**
   * Sends a command (built by `send` around its id) and resolves with the reply's result; rejects
   * with `timeoutMessage()` after `timeoutMs`, or with the child's error.
   */
  call<T>(send: (id: number) => void, timeoutMs: number, timeoutMessage: () => string): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(timeoutMessage()));
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
      send(id);
    });
  }

  /** Settles the call a reply answers; messages that are not replies to a pending call are ignored. */
  settle(reply: IpcReply): void {
    if (reply.id === undefined) return;
    const waiter = this.waiting.get(reply.id);
    if (!waiter) return;
    this.waiting.delete(reply.id);
    if (reply.ok) waiter.resolve(reply.result);
    else waiter.reject(new Error(`${this.name}: ${reply.error}`));
  }

  /** Rejects every pending call (the child exited). */
  failAll(error: Error): void {
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }
}
