import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getHops, getMtu, MissingToolError } from '../lib/netcheck.js';
import { TSX_LOADER } from './helpers/tsx.js';

const MAIN = fileURLToPath(new URL('../lib/cli/main.ts', import.meta.url));

function installed(tool: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((folder) => folder && existsSync(join(folder, tool)));
}

const hasPing = installed('ping');
const hasTracer = installed('tracepath') || installed('traceroute');

/** The largest IPv4 packet is 65535 bytes, so a path MTU measured with ping is capped there. */
function loopbackPathMtu(): number {
  const interfaceMtu = Number(readFileSync('/sys/class/net/lo/mtu', 'utf8').trim());
  return Math.min(interfaceMtu, 65_535);
}

/** Runs `fn` with a PATH that holds none of the tools. */
async function withoutTools<T>(fn: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent-mccache-test';
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

function cli(argv: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, ['--import', TSX_LOADER, MAIN, ...argv], {
    encoding: 'utf8',
    timeout: 60_000,
    env,
  });
}

describe('getMtu and getHops arguments', () => {
  test('refuse anything but an IPv4 address, before running any tool', async () => {
    for (const ip of ['', 'localhost', '::1', '10.0.0', '256.1.1.1', '10.0.0.1 ; rm -rf /']) {
      await assert.rejects(getMtu(ip), {
        name: 'TypeError',
        message: /is not an IPv4 address: expected dotted quad/,
      });
      await assert.rejects(getHops(ip), { name: 'TypeError', message: /is not an IPv4 address/ });
    }
  });

  test('getHops refuses a hop limit outside 1..255', async () => {
    for (const max of [0, -1, 256, 1.5, Number.NaN]) {
      await assert.rejects(getHops('127.0.0.1', max), {
        name: 'TypeError',
        message: /expected a whole number from 1 to 255/,
      });
    }
  });
});

describe('getMtu and getHops on this machine', () => {
  test('getMtu(127.0.0.1) finds the loopback path MTU', {
    skip: !hasPing && 'ping is not installed (Debian: apt-get install iputils-ping)',
  }, async () => {
    assert.equal(await getMtu('127.0.0.1'), loopbackPathMtu());
  });

  test('getHops(127.0.0.1) is one hop', {
    skip: !hasTracer && 'tracepath is not installed (Debian: apt-get install iputils-tracepath)',
  }, async () => {
    assert.equal(await getHops('127.0.0.1', 5), 1);
  });

  test('a missing tool names the Debian package that provides it', async () => {
    await withoutTools(async () => {
      await assert.rejects(getMtu('127.0.0.1'), (error: unknown) => {
        assert.ok(error instanceof MissingToolError);
        assert.match(error.message, /needs `ping`: install the Debian package iputils-ping/);
        return true;
      });
      await assert.rejects(getHops('127.0.0.1'), (error: unknown) => {
        assert.ok(error instanceof MissingToolError);
        assert.match(error.message, /install the Debian package iputils-tracepath or traceroute/);
        return true;
      });
    });
  });
});

describe('mccache mtu and mccache hops', () => {
  test('refuse a missing or bad address and a bad hop limit with exit status 2', () => {
    const noAddress = cli(['mtu']);
    assert.equal(noAddress.status, 2);
    assert.match(noAddress.stderr, /missing <ip>: expected mccache mtu <ip>/);
    const badAddress = cli(['hops', 'example.org']);
    assert.equal(badAddress.status, 2);
    assert.match(badAddress.stderr, /"example.org" is not an IPv4 address/);
    const badMax = cli(['hops', '127.0.0.1', '300']);
    assert.equal(badMax.status, 2);
    assert.match(badMax.stderr, /max "300": expected a whole number of hops from 1 to 255/);
    const extra = cli(['mtu', '127.0.0.1', '9']);
    assert.equal(extra.status, 2);
    assert.match(extra.stderr, /unexpected argument "9"/);
  });

  test('print the number first, then the setting it suggests', {
    skip: (!hasPing || !hasTracer) && 'ping or tracepath is not installed',
  }, () => {
    const mtu = cli(['mtu', '127.0.0.1']);
    assert.equal(mtu.status, 0, mtu.stderr);
    const [number, advice] = mtu.stdout.trim().split('\n');
    assert.equal(Number(number), loopbackPathMtu());
    assert.match(advice!, new RegExp(`MCCACHE_PACKET_MTU=${Math.min(65_507, loopbackPathMtu() - 28)}`));
    const hops = cli(['hops', '127.0.0.1', '3']);
    assert.equal(hops.status, 0, hops.stderr);
    assert.equal(hops.stdout.split('\n')[0], '1');
    assert.match(hops.stdout, /MCCACHE_MULTICAST_HOPS=1/);
  });

  test('a missing tool exits 1 naming the package', () => {
    const result = cli(['mtu', '127.0.0.1'], { ...process.env, PATH: '/nonexistent-mccache-test' });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /mccache mtu: getMtu needs `ping`: install the Debian package iputils-ping/);
  });
});
