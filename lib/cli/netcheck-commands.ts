/**
 * `mccache mtu <ip>` and `mccache hops <ip> [max]`: the seed's environment checks, printing the
 * number and the setting it suggests.
 */
import { isIPv4 } from 'node:net';
import { getHops, getMtu } from '../index.js';
import { parseArgs, UsageError } from './args.js';

export const MTU_USAGE = `mccache mtu <ip>

Largest IP packet that reaches <ip> without fragmentation (binary search with ping -M do -s N).
Set MCCACHE_PACKET_MTU to it minus 28 (IP and UDP headers). Needs ping (Debian: iputils-ping).`;

export const HOPS_USAGE = `mccache hops <ip> [max]

Router hops from here to <ip>, up to max (default 20, at most 255), with tracepath or traceroute.
Set MCCACHE_MULTICAST_HOPS to at least it. Needs tracepath (Debian: iputils-tracepath) or
traceroute (Debian: traceroute).`;

interface Output {
  write(text: string): void;
}

function address(positionals: string[], usage: string, extra: number): string {
  const ip = positionals[0];
  if (ip === undefined) throw new UsageError(`missing <ip>: expected ${usage.split('\n')[0]}`);
  if (positionals.length > 1 + extra) {
    throw new UsageError(`unexpected argument "${positionals[1 + extra]}": expected ${usage.split('\n')[0]}`);
  }
  if (!isIPv4(ip))
    throw new UsageError(`"${ip}" is not an IPv4 address: expected a dotted quad such as 10.0.0.5`);
  return ip;
}

export async function runMtu(argv: string[], output: Output): Promise<number> {
  const { positionals, help } = parseArgs(argv, {});
  if (help) {
    output.write(`${MTU_USAGE}\n`);
    return 0;
  }
  const ip = address(positionals, MTU_USAGE, 0);
  // A missing tool throws a MissingToolError naming the Debian package: main prints it, exit 1.
  const mtu = await getMtu(ip);
  output.write(`${mtu}\n`);
  output.write(
    `path MTU to ${ip}: ${mtu} bytes; suggested MCCACHE_PACKET_MTU=${Math.min(65_507, mtu - 28)}\n`,
  );
  return 0;
}

export async function runHops(argv: string[], output: Output): Promise<number> {
  const { positionals, help } = parseArgs(argv, {});
  if (help) {
    output.write(`${HOPS_USAGE}\n`);
    return 0;
  }
  const ip = address(positionals, HOPS_USAGE, 1);
  let max = 20;
  if (positionals[1] !== undefined) {
    const text = positionals[1];
    max = Number(text);
    if (!/^\d+$/.test(text) || max < 1 || max > 255) {
      throw new UsageError(`max "${text}": expected a whole number of hops from 1 to 255`);
    }
  }
  const hops = await getHops(ip, max);
  output.write(`${hops}\n`);
  output.write(
    `${ip} is ${hops} hop${hops === 1 ? '' : 's'} away; suggested MCCACHE_MULTICAST_HOPS=${hops}\n`,
  );
  return 0;
}
