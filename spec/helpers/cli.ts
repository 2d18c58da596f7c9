/**
 * Runs the `mccache` command as a real process for CLI tests, and checks that it leaves no process
 * behind: every process it starts inherits a unique marker variable, found afterwards in /proc.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TSX_LOADER } from './tsx.js';

/** The command's entry point, run from source through tsx. */
export const MAIN = fileURLToPath(new URL('../../lib/cli/main.ts', import.meta.url));

/** Processes (other than this one) whose environment holds `marker`. */
export function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker)) found.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What a finished run printed, its exit status, and the marked processes still alive after it. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  leftovers: number[];
  /** The pid of the mccache process itself. */
  pid: number | undefined;
}

/**
 * Runs `mccache argv...` to completion (or the deadline), optionally under a command prefix such
 * as `setpriv --reuid ...`; kills it and anything it started in the end.
 */
export async function runCli(argv: string[], timeoutMs: number, prefix: string[] = []): Promise<CliRun> {
  const marker = `CLI_SPEC_MARK=${randomUUID()}`;
  const [name, value] = marker.split('=') as [string, string];
  let child: ChildProcess | undefined;
  try {
    const command = [...prefix, process.execPath, '--import', TSX_LOADER, MAIN, ...argv];
    child = spawn(command[0]!, command.slice(1), {
      env: { ...process.env, [name]: value },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`mccache ${argv[0]} did not finish in ${timeoutMs} ms:\n${stdout}\n${stderr}`)),
        timeoutMs,
      );
      child!.on('exit', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    // The command waits for its members, so none may remain; allow a moment for the kernel to reap.
    let leftovers: number[] = [];
    try {
      await until(() => (leftovers = processesWith(marker)).length === 0, 5000, 'members to exit');
    } catch {
      // reported through `leftovers`
    }
    return { code, stdout, stderr, leftovers, pid: child.pid };
  } finally {
    child?.kill('SIGKILL');
    for (const pid of processesWith(marker)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
