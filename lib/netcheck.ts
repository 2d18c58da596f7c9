/**
 * Environment checks from McCache for Python, returning numbers instead of printing:
 * the path MTU to a member (binary search with `ping -M do -s N`) and the hop count (tracepath,
 * or traceroute).
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';

/** A system tool is missing: says which Debian package provides it. */
export class MissingToolError extends Error {
  /** Error class name, shown in stack traces and `String(error)`. */
  override name = 'MissingToolError';
}

interface RunResult {
  code: number;
  stdout: string;
}

function run(command: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs }, (error, stdout) => {
      if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(error);
        return;
      }
      const code = error ? Number((error as { code?: unknown }).code ?? 1) || 1 : 0;
      resolve({ code, stdout: String(stdout) });
    });
  });
}

function checkAddress(ip: string): void {
  if (isIP(ip) !== 4)
    throw new TypeError(`"${ip}" is not an IPv4 address: expected dotted quad such as 10.0.0.5`);
}

const IP_AND_ICMP_HEADERS = 28;

/**
 * The largest packet (IP MTU, bytes) that reaches `ip` without fragmentation; use it for
 * MCCACHE_PACKET_MTU (minus 28 bytes of IP and UDP headers). Needs `ping` (Debian: iputils-ping).
 */
export async function getMtu(ip: string, options: { timeoutMs?: number } = {}): Promise<number> {
  checkAddress(ip);
  const timeoutMs = options.timeoutMs ?? 2000;
  const fits = async (payload: number): Promise<boolean> => {
    try {
      const result = await run(
        'ping',
        ['-n', '-c', '1', '-W', '1', '-M', 'do', '-s', String(payload), ip],
        timeoutMs,
      );
      return result.code === 0;
    } catch {
      throw new MissingToolError('getMtu needs `ping`: install the Debian package iputils-ping');
    }
  };
  let low = 0;
  let high = 65_507;
  if (!(await fits(low))) throw new Error(`${ip} does not answer ping: cannot measure the MTU`);
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (await fits(middle)) low = middle;
    else high = middle - 1;
  }
  return low + IP_AND_ICMP_HEADERS;
}

/**
 * Hops from here to `ip` (1 = same link), up to `maxHops`; use it for MCCACHE_MULTICAST_HOPS.
 * Needs `tracepath` (Debian: iputils-tracepath) or `traceroute` (Debian: traceroute).
 */
export async function getHops(ip: string, maxHops = 20): Promise<number> {
  checkAddress(ip);
  if (!Number.isInteger(maxHops) || maxHops < 1 || maxHops > 255) {
    throw new TypeError(`maxHops ${maxHops} is invalid: expected a whole number from 1 to 255`);
  }
  const timeoutMs = 3000 * maxHops;
  let output: string;
  try {
    output = (await run('tracepath', ['-n', '-m', String(maxHops), ip], timeoutMs)).stdout;
    const reached = [...output.matchAll(/^\s*(\d+):\s+(\S+)/gm)].filter((m) => m[2] === ip);
    const hops = /hops (\d+)/.exec(output);
    if (hops) return Number(hops[1]);
    if (reached.length > 0) return Number(reached[0]![1]);
  } catch {
    try {
      output = (await run('traceroute', ['-n', '-m', String(maxHops), ip], timeoutMs)).stdout;
    } catch {
      throw new MissingToolError(
        'getHops needs `tracepath` or `traceroute`: install the Debian package iputils-tracepath or traceroute',
      );
    }
    // A hop line is "N  addr  times..."; a probe that timed out shows "*" before the address.
    const lines = [...output.matchAll(/^\s*(\d+)\s+(.*)$/gm)];
    const hit = lines.find((m) => m[2]!.split(/\s+/).includes(ip));
    if (hit) return Number(hit[1]);
  }
  throw new Error(`${ip} was not reached within ${maxHops} hops`);
}
