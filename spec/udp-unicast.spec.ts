import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ManualClock } from '../lib/clock.js';
import { parsePeerEntry, type UdpUnicastOptions, UdpUnicastTransport } from '../lib/transport/udp-unicast.js';
import { TSX_LOADER } from './helpers/tsx.js';

async function waitFor(condition: () => boolean, what: string, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A UDP port free on every given loopback address (free when asked; the test binds it right away). */
async function freeUdpPort(addresses: string[] = ['127.0.0.1']): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const probe = createSocket('udp4');
    await new Promise<void>((resolve) => probe.bind(0, addresses[0], resolve));
    const port = probe.address().port;
    const others = addresses.slice(1).map(() => createSocket('udp4'));
    const bound = await Promise.all(
      others.map(
        (socket, i) =>
          new Promise<boolean>((resolve) => {
            socket.once('error', () => resolve(false));
            socket.bind(port, addresses[i + 1], () => resolve(true));
          }),
      ),
    );
    for (const socket of [probe, ...others]) socket.close();
    if (bound.every(Boolean)) return port;
  }
  throw new Error(`no UDP port free on all of ${addresses.join(', ')}`);
}

/** A transport under test with what it received (as text) and its warnings. */
interface Member {
  transport: UdpUnicastTransport;
  received: string[];
  warnings: string[];
}

function member(options: UdpUnicastOptions): Member {
  const warnings: string[] = [];
  const transport = new UdpUnicastTransport({ onWarning: (m) => warnings.push(m), ...options });
  return { transport, received: [], warnings };
}

async function startAll(members: Member[]): Promise<void> {
  for (const m of members) await m.transport.start((datagram) => m.received.push(datagram.toString()));
}

async function closeAll(members: Member[]): Promise<void> {
  await Promise.all(members.map((m) => m.transport.close()));
}

describe('peer list validation', () => {
  test('parses IPv4 and DNS peers', () => {
    assert.deepEqual(parsePeerEntry('10.0.0.7:4000'), { host: '10.0.0.7', port: 4000 });
    assert.deepEqual(parsePeerEntry(' mccache-peers.default.svc.cluster.local:4000 '), {
      host: 'mccache-peers.default.svc.cluster.local',
      port: 4000,
    });
  });

  for (const entry of [
    'localhost',
    'host:',
    ':4000',
    'host:0',
    'host:70000',
    'host:40a0',
    '1.2.3:4000',
    '300.1.1.1:4000',
    'a b:4000',
    '[::1]:4000',
  ]) {
    test(`refuses ${JSON.stringify(entry)}, naming it and the host:port form`, () => {
      assert.throws(
        () =>
          new UdpUnicastTransport({ bindAddress: '127.0.0.1', port: 4000, peers: ['127.0.0.1:4001', entry] }),
        (error: Error) => {
          assert.ok(error instanceof TypeError);
          assert.ok(error.message.includes(JSON.stringify(entry)), error.message);
          assert.match(error.message, /expected host:port/);
          return true;
        },
      );
    });
  }

  test('refuses a bind address that is not IPv4 and a bad port', () => {
    assert.throws(
      () => new UdpUnicastTransport({ bindAddress: 'localhost', port: 4000, peers: [] }),
      /bindAddress/,
    );
    assert.throws(() => new UdpUnicastTransport({ bindAddress: '127.0.0.1', port: 0, peers: [] }), /port 0/);
  });
});

describe('UdpUnicastTransport on loopback', () => {
  test('three members with one shared peer list exchange datagrams, and each receives its own', async () => {
    const ports = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
    const peers = ports.map((port) => `127.0.0.1:${port}`);
    const members = ports.map((port) => member({ bindAddress: '127.0.0.1', port, peers }));
    try {
      await startAll(members);
      members.forEach((m, i) => {
        assert.deepEqual(m.transport.peerAddresses, peers.filter((_, j) => j !== i).sort());
        m.transport.send(Buffer.from(`from ${i}`));
      });
      await waitFor(() => members.every((m) => m.received.length >= 3), 'every datagram everywhere');
      await waitFor(() => members.every((m) => m.transport.pendingSends === 0), 'sends to complete');
      for (const m of members) {
        assert.deepEqual([...m.received].sort(), ['from 0', 'from 1', 'from 2']);
        assert.equal(m.transport.stats.sent, 2, 'one datagram per peer, none for itself');
        assert.equal(m.transport.stats.received, 3);
        assert.equal(m.transport.stats.peers, 2);
        assert.equal(m.transport.stats.sendErrors, 0);
      }
    } finally {
      await closeAll(members);
    }
  });

  test('a DNS name follows its addresses as they change between resolutions', async () => {
    // 127.0.0.2 and 127.0.0.3 are loopback too: two "pods" on the same port, like a headless service.
    const port = await freeUdpPort(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    const answers = [['127.0.0.2'], ['127.0.0.2', '127.0.0.3'], ['127.0.0.3']];
    const asked: string[] = [];
    let round = 0;
    const clock = new ManualClock();
    const sender = member({
      bindAddress: '127.0.0.1',
      port,
      peers: [`mccache-peers.test:${port}`],
      clock,
      resolveIntervalMs: 10_000,
      lookup: async (host) => {
        asked.push(host);
        return answers[Math.min(round++, answers.length - 1)]!;
      },
    });
    const podA = member({ bindAddress: '127.0.0.2', port, peers: [] });
    const podB = member({ bindAddress: '127.0.0.3', port, peers: [] });
    const all = [sender, podA, podB];
    try {
      await startAll(all);
      assert.deepEqual(sender.transport.peerAddresses, [`127.0.0.2:${port}`]);
      sender.transport.send(Buffer.from('one'));
      await waitFor(() => podA.received.includes('one'), 'pod A to get "one"');

      clock.advance(10_000);
      await waitFor(() => sender.transport.peerAddresses.length === 2, 'pod B to be added');
      assert.deepEqual(sender.transport.peerAddresses, [`127.0.0.2:${port}`, `127.0.0.3:${port}`]);
      sender.transport.send(Buffer.from('two'));
      await waitFor(
        () => podA.received.includes('two') && podB.received.includes('two'),
        'both pods to get "two"',
      );

      clock.advance(10_000);
      await waitFor(() => sender.transport.peerAddresses.length === 1, 'pod A to be removed');
      assert.deepEqual(sender.transport.peerAddresses, [`127.0.0.3:${port}`]);
      sender.transport.send(Buffer.from('three'));
      await waitFor(() => podB.received.includes('three'), 'pod B to get "three"');
      await waitFor(() => sender.transport.pendingSends === 0, 'sends to complete');
      assert.equal(sender.transport.stats.sent, 1 + 2 + 1, '"three" went to pod B only');
      assert.deepEqual(podA.received, ['one', 'two']);
      assert.deepEqual(asked, ['mccache-peers.test', 'mccache-peers.test', 'mccache-peers.test']);
      assert.equal(sender.transport.stats.resolveFailures, 0);
    } finally {
      await closeAll(all);
    }
  });

  test('a failed lookup keeps the previous peers, is counted, and is warned once per outage', async () => {
    const port = await freeUdpPort();
    const clock = new ManualClock();
    let dnsWorks = true;
    const m = member({
      bindAddress: '127.0.0.1',
      port,
      peers: ['peers.test:5001', '127.0.0.1:5002'],
      clock,
      lookup: async () => {
        if (!dnsWorks) throw new Error('getaddrinfo EAI_AGAIN peers.test');
        return ['127.0.0.9'];
      },
    });
    try {
      await startAll([m]);
      const before = ['127.0.0.1:5002', '127.0.0.9:5001'];
      assert.deepEqual(m.transport.peerAddresses, before);

      dnsWorks = false;
      await m.transport.refreshPeers();
      await m.transport.refreshPeers();
      assert.deepEqual(m.transport.peerAddresses, before);
      assert.equal(m.transport.stats.resolveFailures, 2);
      const failures = m.warnings.filter((w) =>
        /cannot resolve peer peers\.test: getaddrinfo EAI_AGAIN/.test(w),
      );
      assert.equal(failures.length, 1);
      assert.match(failures[0]!, /keeping 127\.0\.0\.9/);

      dnsWorks = true;
      await m.transport.refreshPeers();
      assert.ok(m.warnings.some((w) => /peers\.test resolves again: 127\.0\.0\.9/.test(w)));
      assert.equal(m.transport.stats.resolveFailures, 2);
    } finally {
      await closeAll([m]);
    }
  });

  test('a name with no address at start-up is counted, and start() still succeeds', async () => {
    const port = await freeUdpPort();
    const m = member({
      bindAddress: '127.0.0.1',
      port,
      peers: [`nobody.test:${port}`],
      lookup: async () => [],
    });
    try {
      await startAll([m]);
      assert.deepEqual(m.transport.peerAddresses, []);
      assert.equal(m.transport.stats.resolveFailures, 1);
      m.transport.send(Buffer.from('alone'));
      await waitFor(() => m.received.length === 1, 'its own datagram');
      assert.deepEqual(m.received, ['alone']);
    } finally {
      await closeAll([m]);
    }
  });

  test('send never throws: unreachable peers, oversize datagrams, before start and after close', async () => {
    const [portA, portB, closedPort] = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
    const a = member({
      bindAddress: '127.0.0.1',
      port: portA,
      peers: [`127.0.0.1:${closedPort}`, `127.0.0.1:${portB}`],
    });
    const b = member({ bindAddress: '127.0.0.1', port: portB, peers: [] });
    try {
      a.transport.send(Buffer.from('too early'));
      assert.equal(a.transport.stats.sendErrors, 1);
      await startAll([a, b]);
      for (let i = 0; i < 20; i++) assert.doesNotThrow(() => a.transport.send(Buffer.from(`ok ${i}`)));
      assert.doesNotThrow(() => a.transport.send(Buffer.alloc(70_000)));
      await waitFor(() => a.transport.pendingSends === 0, 'sends to complete');
      assert.equal(a.transport.stats.sendErrors, 1 + 2, 'the oversize datagram failed once per peer');
      assert.equal(
        a.warnings.filter((w) => /send failed.*EMSGSIZE/.test(w)).length,
        1,
        a.warnings.join('\n'),
      );
      await waitFor(() => b.received.length === 20, 'the reachable peer to get every datagram');
      assert.equal(a.transport.stats.sent, 42, 'handed to the OS: 21 datagrams to 2 peers');
    } finally {
      await closeAll([a, b]);
    }
    await a.transport.close();
    a.transport.send(Buffer.from('too late'));
    assert.equal(a.transport.stats.sendErrors, 4);
  });

  test('a 100% tantrum drops every datagram, for peers and for itself, and counts it', async () => {
    const [portA, portB] = [await freeUdpPort(), await freeUdpPort()];
    const a = member({
      bindAddress: '127.0.0.1',
      port: portA,
      peers: [`127.0.0.1:${portB}`],
      tantrumPercent: 100,
      random: () => 0.5,
    });
    const b = member({ bindAddress: '127.0.0.1', port: portB, peers: [`127.0.0.1:${portA}`] });
    try {
      await startAll([a, b]);
      for (let i = 0; i < 5; i++) a.transport.send(Buffer.from('lost'));
      assert.equal(a.transport.stats.tantrumDropped, 5);
      b.transport.send(Buffer.from('marker'));
      await waitFor(
        () => b.received.includes('marker') && a.transport.stats.tantrumDropped === 6,
        'the marker',
      );
      assert.deepEqual(b.received, ['marker']);
      assert.deepEqual(a.received, [], 'a drops on receive too');
    } finally {
      await closeAll([a, b]);
    }
  });

  test('a throwing datagram handler is counted and does not stop delivery', async () => {
    const m = member({ bindAddress: '127.0.0.1', port: await freeUdpPort(), peers: [] });
    const delivered: string[] = [];
    try {
      await m.transport.start((datagram) => {
        delivered.push(datagram.toString());
        if (datagram.toString() === 'bad') throw new Error('engine bug');
      });
      m.transport.send(Buffer.from('bad'));
      m.transport.send(Buffer.from('good'));
      await waitFor(() => delivered.length === 2, 'both datagrams');
      assert.deepEqual(delivered, ['bad', 'good']);
      assert.equal(m.transport.stats.handlerErrors, 1);
      assert.ok(m.warnings.some((w) => /handler threw: engine bug/.test(w)));
    } finally {
      await closeAll([m]);
    }
  });

  test('close waits for sends already handed to the OS, so a last datagram still leaves', async () => {
    const [portA, portB] = [await freeUdpPort(), await freeUdpPort()];
    const a = member({ bindAddress: '127.0.0.1', port: portA, peers: [`127.0.0.1:${portB}`] });
    const b = member({ bindAddress: '127.0.0.1', port: portB, peers: [] });
    try {
      await startAll([a, b]);
      for (let i = 0; i < 100; i++) a.transport.send(Buffer.from(`bye ${i}`));
      await a.transport.close();
      assert.equal(a.transport.pendingSends, 0);
      assert.equal(a.transport.stats.sendErrors, 0);
      await waitFor(() => b.received.length === 100, 'every last datagram');
    } finally {
      await closeAll([a, b]);
    }
  });

  test('start() rejects with a clear error when the port is taken', async () => {
    const port = await freeUdpPort();
    const first = member({ bindAddress: '127.0.0.1', port, peers: [] });
    const second = member({ bindAddress: '127.0.0.1', port, peers: [] });
    try {
      await startAll([first]);
      await assert.rejects(
        second.transport.start(() => {}),
        /Cannot bind UDP 127\.0\.0\.1:\d+ \(EADDRINUSE\)/,
      );
    } finally {
      await closeAll([first, second]);
    }
  });

  test('warns when the OS grants a smaller receive buffer than asked', async () => {
    const m = member({
      bindAddress: '127.0.0.1',
      port: await freeUdpPort(),
      peers: [],
      receiveBufferBytes: 2 ** 30,
    });
    try {
      await startAll([m]);
      assert.ok(
        m.warnings.some((w) => /receive buffer.*rmem_max/.test(w)),
        m.warnings.join('\n'),
      );
    } finally {
      await closeAll([m]);
    }
  });

  test('exchanges datagrams with a second process', async () => {
    const [ours, theirs] = [await freeUdpPort(), await freeUdpPort()];
    const m = member({ bindAddress: '127.0.0.1', port: ours, peers: [`127.0.0.1:${theirs}`] });
    const moduleUrl = pathToFileURL(
      fileURLToPath(new URL('../lib/transport/udp-unicast.ts', import.meta.url)),
    ).href;
    // The other process answers every "ping N" with "pong N", and exits when the parent closes stdin.
    const script = `
      import { UdpUnicastTransport } from ${JSON.stringify(moduleUrl)};
      const t = new UdpUnicastTransport({ bindAddress: '127.0.0.1', port: ${theirs}, peers: ['127.0.0.1:${ours}'] });
      await t.start((d) => { const s = d.toString(); if (s.startsWith('ping ')) t.send(Buffer.from('pong ' + s.slice(5))); });
      process.stdout.write('ready\\n');
      process.stdin.resume();
      process.stdin.on('end', () => t.close().then(() => process.exit(0)));
    `;
    const child = spawn(process.execPath, ['--import', TSX_LOADER, '--input-type=module', '-e', script], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
      await waitFor(() => output.includes('ready'), 'the other process to start', 20_000);
      await startAll([m]);
      let pings = 0;
      await waitFor(() => {
        if (m.received.some((r) => r.startsWith('pong '))) return true;
        m.transport.send(Buffer.from(`ping ${pings++}`));
        return false;
      }, 'a pong from the other process');
      const pong = m.received.find((r) => r.startsWith('pong '))!;
      assert.ok(m.received.includes(`ping ${pong.slice(5)}`), 'it also received its own ping');
      child.stdin.end();
      assert.equal(await exited, 0);
    } finally {
      child.kill();
      await closeAll([m]);
    }
  });
});
