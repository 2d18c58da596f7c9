import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createNode, generateFernetKey, type McCacheNode } from '../lib/index.js';
import { MAIN, processesWith } from './helpers/cli.js';
import { TSX_LOADER } from './helpers/tsx.js';

async function until(condition: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A running `mccache` command whose processes (and their children) carry a marker in their environment. */
class Cli {
  readonly marker = randomUUID();
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  code: number | null | undefined;

  constructor(argv: string[], cwd: string) {
    this.child = spawn(process.execPath, ['--import', TSX_LOADER, MAIN, ...argv], {
      cwd,
      env: { ...process.env, CLI_SPEC_MARK: this.marker },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      this.stdout += text;
    });
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      this.stderr += text;
    });
    this.child.on('exit', (code) => {
      this.code = code;
    });
  }

  async exited(timeoutMs: number): Promise<number | null> {
    await until(
      () => this.code !== undefined,
      timeoutMs,
      () => `the command to exit:\n${this.stdout}\n${this.stderr}`,
    );
    return this.code!;
  }

  /** Kills the command and anything it started. */
  kill(): void {
    this.child.kill('SIGKILL');
    for (const pid of processesWith(this.marker)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

describe('mccache demo', () => {
  test('shows writes arriving at the other members, the checksums agreeing, and leaves nothing behind', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'mccache-demo-spec-'));
    const cli = new Cli(['demo'], cwd);
    try {
      const code = await cli.exited(90_000);
      assert.equal(code, 0, `${cli.stdout}\n${cli.stderr}`);
      assert.match(cli.stdout, /^\[node A\] wrote user:1 = \{"name":"Ada Lovelace"/m);
      assert.match(
        cli.stdout,
        /^\[node B\] saw user:1 = \{"name":"Ada Lovelace","city":"London","visits":1\} written by A, \d+\.\d ms after the write$/m,
      );
      assert.match(cli.stdout, /^\[node C\] saw user:1 = .* written by A, /m);
      assert.match(cli.stdout, /^\[node A\] saw user:2 = .* written by B, /m);
      assert.match(cli.stdout, /^\[node A\] saw user:3 = .* written by C, /m);
      assert.match(
        cli.stdout,
        /^\[node C\] saw user:1 = \{.*"visits":2\} written by B, /m,
        'updates arrive too',
      );
      assert.match(cli.stdout, /^\[node A\] saw user:2 deleted by C, \d+\.\d ms after the delete$/m);
      const digests = [...cli.stdout.matchAll(/^ {2}node ([ABC]) {2}([0-9a-f]{16}) {2}(\d+) keys$/gm)];
      assert.equal(digests.length, 3, cli.stdout);
      assert.equal(new Set(digests.map((m) => m[2])).size, 1, 'one digest for all');
      assert.deepEqual(
        digests.map((m) => m[3]),
        ['2', '2', '2'],
        'user:1 and user:3 remain',
      );
      assert.match(cli.stdout, /^all 3 members agree$/m);
      assert.doesNotMatch(cli.stdout, /did NOT see/);
      await until(
        () => processesWith(cli.marker).length === 0,
        5000,
        () => 'the members to exit',
      );
      assert.deepEqual(readdirSync(cwd), [], 'nothing is written to the current folder');
    } finally {
      cli.kill();
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe('mccache monitor', () => {
  const group = () => `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;

  async function startMonitor(argv: string[], cwd: string): Promise<Cli> {
    const cli = new Cli(['monitor', ...argv], cwd);
    await until(
      () => cli.stdout.includes('monitoring ') || cli.code !== undefined,
      30_000,
      () => `the monitor to listen:\n${cli.stderr}`,
    );
    assert.equal(cli.code, undefined, cli.stderr);
    return cli;
  }

  function member(settings: Record<string, unknown>, logFolder: string): McCacheNode {
    return createNode({
      settings: {
        multicastIf: '127.0.0.1',
        logFilename: join(logFolder, 'member.log'),
        handleSignals: false,
        pulse: 300,
        ...settings,
      },
    });
  }

  test('prints the ops a member sends, decoded, without taking part', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'mccache-monitor-spec-'));
    const address = group();
    const port = randomInt(20_000, 60_000);
    const key = generateFernetKey();
    let node: McCacheNode | undefined;
    const cli = await startMonitor(
      ['--group', `${address}:${port}`, '--cluster', 'watched', '--crypto', key, '--count', '3'],
      folder,
    );
    try {
      node = member(
        { multicastIp: address, multicastPort: port, cluster: 'watched', cryptoKeys: [key] },
        folder,
      );
      await node.ready();
      const cache = node.getCache<unknown>('people');
      const lines = () => cli.stdout.split('\n').filter((line) => /^\d\d:\d\d:\d\d\.\d{3} /.test(line));
      // One change at a time: changes to one key queued together are coalesced into the last.
      const changes = [
        () => {
          cache.ada = { name: 'Ada', born: 1815 };
        },
        () => {
          cache.ada = { name: 'Ada', born: 1816 };
        },
        () => {
          delete cache.ada;
        },
      ];
      for (const [i, change] of changes.entries()) {
        change();
        await until(
          () => lines().length > i || cli.code !== undefined,
          10_000,
          () => `op ${i + 1}:\n${cli.stdout}`,
        );
      }
      assert.equal(await cli.exited(30_000), 0, cli.stderr);
      const id = node.id;
      assert.equal(lines().length, 3, cli.stdout);
      assert.match(
        lines()[0]!,
        new RegExp(`INS node ${id} people "ada" tsm=\\d+ \\{ name: 'Ada', born: 1815 \\}$`),
      );
      assert.match(
        lines()[1]!,
        new RegExp(`UPD node ${id} people "ada" tsm=\\d+ \\{ name: 'Ada', born: 1816 \\}$`),
      );
      assert.match(lines()[2]!, new RegExp(`DEL node ${id} people "ada" tsm=\\d+$`));
      assert.match(cli.stdout, /, decrypting;/);
      // A silent observer: the member never counted it as a member.
      assert.equal(node.getLocalMetrics().cluster.members, 0);
    } finally {
      await node?.shutdown();
      cli.kill();
      rmSync(folder, { recursive: true, force: true });
    }
  });

  test('without the key it says the traffic is encrypted', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'mccache-monitor-spec-'));
    const address = group();
    const port = randomInt(20_000, 60_000);
    let node: McCacheNode | undefined;
    const cli = await startMonitor(['--group', address, '--port', String(port), '--all'], folder);
    try {
      node = member({ multicastIp: address, multicastPort: port, cryptoKeys: [generateFernetKey()] }, folder);
      await node.ready();
      node.getCache<number>().x = 1;
      // Heartbeats flow every 200 ms: wait until the monitor has certainly received some.
      await until(
        () => node!.getLocalMetrics().cluster.datagramsSent >= 5,
        10_000,
        () => 'datagrams to be sent',
      );
      cli.child.kill('SIGINT');
      assert.equal(await cli.exited(10_000), 0, cli.stderr);
      assert.match(cli.stdout, /not decoded: sealed-without-key \d+/);
      assert.match(cli.stdout, /the traffic is encrypted: pass its key with --crypto/);
      assert.doesNotMatch(cli.stdout, /^\d\d:\d\d:\d\d\.\d{3} /m, 'nothing was decoded');
    } finally {
      await node?.shutdown();
      cli.kill();
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
