import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../lib/transport/memory-network.js';
import { type UdpMulticastOptions, UdpMulticastTransport } from '../lib/transport/udp-multicast.js';
import { TSX_LOADER } from './helpers/tsx.js';

const LOOPBACK = '127.0.0.1';
const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
const TRANSPORT_MODULE = fileURLToPath(new URL('../lib/transport/udp-multicast.ts', import.meta.url));

/** A fresh group and port per test, so parallel or repeated runs never hear each other. */
function randomEndpoint(): { group: string; port: number } {
  return {
    group: `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`,
    port: randomInt(20000, 60000),
  };
}

async function waitFor(condition: () => boolean, what: string, deadlineMs = 5000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** A started transport that records what it receives as text. */
interface Endpoint {
  transport: UdpMulticastTransport;
  received: string[];
  warnings: string[];
}

async function open(
  endpoint: { group: string; port: number },
  extra: Partial<UdpMulticastOptions> = {},
): Promise<Endpoint> {
  const warnings: string[] = [];
  const received: string[] = [];
  const transport = new UdpMulticastTransport({
    ...endpoint,
    interfaceAddress: LOOPBACK,
    hops: 1,
    onWarning: (message) => warnings.push(message),
    ...extra,
  });
  await transport.start((datagram) => received.push(datagram.toString()));
  return { transport, received, warnings };
}

async function closeAll(endpoints: (Endpoint | undefined)[]): Promise<void> {
  await Promise.all(endpoints.map((e) => e?.transport.close()));
}

/**
 * Proves that `receiver` got nothing more than it has now from a sender whose datagrams have already
 * looped back to the sender itself: a marker the receiver sends afterwards arrives behind anything
 * the kernel had queued for it.
 */
async function drainWithMarker(receiver: Endpoint): Promise<void> {
  const marker = `marker-${randomInt(1e9)}`;
  receiver.transport.send(Buffer.from(marker));
  await waitFor(() => receiver.received.includes(marker), `the marker on ${receiver.transport.description}`);
}

describe('UdpMulticastTransport on loopback', () => {
  test('two transports on one group hear each other and themselves', async () => {
    const endpoint = randomEndpoint();
    let a: Endpoint | undefined;
    let b: Endpoint | undefined;
    try {
      a = await open(endpoint);
      b = await open(endpoint);
      a.transport.send(Buffer.from('from-a'));
      b.transport.send(Buffer.from('from-b'));
      const both = (e: Endpoint) => e.received.includes('from-a') && e.received.includes('from-b');
      await waitFor(() => both(a!) && both(b!), 'both datagrams at both transports');
      assert.equal(a.transport.stats.sent, 1);
      assert.equal(a.transport.stats.received, 2);
      assert.equal(a.transport.description, `udp://${endpoint.group}:${endpoint.port} via ${LOOPBACK}`);
      await waitFor(() => a!.transport.pendingSends === 0, 'the send completion');
      assert.equal(a.transport.stats.sendCompletions, 1);
      assert.equal(a.transport.stats.sendErrors, 0);
    } finally {
      await closeAll([a, b]);
    }
  });

  test('another group on the same port, or another port on the same group, hears nothing', async () => {
    const endpoint = randomEndpoint();
    const otherGroup = { ...randomEndpoint(), port: endpoint.port };
    const otherPort = { group: endpoint.group, port: endpoint.port === 60000 ? 20000 : endpoint.port + 1 };
    let sender: Endpoint | undefined;
    let onOtherGroup: Endpoint | undefined;
    let onOtherPort: Endpoint | undefined;
    try {
      sender = await open(endpoint);
      onOtherGroup = await open(otherGroup);
      onOtherPort = await open(otherPort);
      for (let i = 0; i < 20; i++) sender.transport.send(Buffer.from(`foreign-${i}`));
      await waitFor(() => sender!.received.length === 20, 'the sender to hear its own datagrams');
      await drainWithMarker(onOtherGroup);
      await drainWithMarker(onOtherPort);
      assert.equal(onOtherGroup.received.length, 1, `other group heard ${onOtherGroup.received}`);
      assert.equal(onOtherPort.received.length, 1, `other port heard ${onOtherPort.received}`);
      assert.ok(!sender.received.some((text) => text.startsWith('marker-')));
    } finally {
      await closeAll([sender, onOtherGroup, onOtherPort]);
    }
  });

  test('a second process hears this one, and this one hears it', async () => {
    const endpoint = randomEndpoint();
    // The child runs the real transport module through tsx and reports over IPC.
    const childScript = `
      import { UdpMulticastTransport } from ${JSON.stringify(TRANSPORT_MODULE)};
      const transport = new UdpMulticastTransport({
        group: process.env.GROUP, port: Number(process.env.PORT), interfaceAddress: '127.0.0.1', hops: 1,
      });
      await transport.start((datagram) => {
        const text = datagram.toString();
        if (text.startsWith('parent:')) process.send({ heard: text });
      });
      process.on('message', async (message) => {
        if (message.send) transport.send(Buffer.from(message.send));
        if (message.exit) { await transport.close(); process.disconnect(); }
      });
      process.send({ ready: true });
    `;
    let parent: Endpoint | undefined;
    let child: ChildProcess | undefined;
    try {
      parent = await open(endpoint);
      const fromChild: { ready?: boolean; heard?: string }[] = [];
      child = spawn(process.execPath, ['--import', TSX_LOADER, '--input-type=module', '-e', childScript], {
        cwd: PROJECT_ROOT,
        env: { ...process.env, GROUP: endpoint.group, PORT: String(endpoint.port) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      child.on('message', (message) => fromChild.push(message as { ready?: boolean; heard?: string }));
      await waitFor(() => fromChild.some((m) => m.ready), 'the child to start', 20_000);

      parent.transport.send(Buffer.from('parent:hello'));
      await waitFor(() => fromChild.some((m) => m.heard === 'parent:hello'), 'the child to hear the parent');
      child.send({ send: 'child:hello' });
      await waitFor(() => parent!.received.includes('child:hello'), 'the parent to hear the child');

      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.send({ exit: true });
      assert.equal(await exited, 0);
    } finally {
      if (child && child.exitCode === null) child.kill();
      await closeAll([parent]);
    }
  });

  test('tantrum 100% drops every datagram on send and on receive, and counts them', async () => {
    const endpoint = randomEndpoint();
    let tantrum: Endpoint | undefined;
    let normal: Endpoint | undefined;
    try {
      tantrum = await open(endpoint, { tantrumPercent: 100 });
      normal = await open(endpoint);
      for (let i = 0; i < 50; i++) tantrum.transport.send(Buffer.from(`doomed-${i}`));
      assert.equal(tantrum.transport.stats.tantrumDropped, 50);
      assert.equal(tantrum.transport.stats.tantrumDroppedOnSend, 50);
      assert.equal(tantrum.transport.stats.sent, 0);
      for (let i = 0; i < 50; i++) normal.transport.send(Buffer.from(`normal-${i}`));
      await waitFor(() => tantrum!.transport.stats.tantrumDroppedOnReceive === 50, 'the receive-side drops');
      assert.equal(tantrum.transport.stats.tantrumDropped, 100);
      await drainWithMarker(normal);
      assert.deepEqual(tantrum.received, []);
      assert.equal(tantrum.transport.stats.received, 0);
      assert.equal(normal.received.length, 51, 'the normal member heard only itself');
    } finally {
      await closeAll([tantrum, normal]);
    }
  });

  test('tantrum 0% drops nothing', async () => {
    const endpoint = randomEndpoint();
    let a: Endpoint | undefined;
    let b: Endpoint | undefined;
    try {
      a = await open(endpoint, { tantrumPercent: 0 });
      b = await open(endpoint, { tantrumPercent: 0 });
      for (let i = 0; i < 200; i++) a.transport.send(Buffer.from(`d${i}`));
      await waitFor(() => b!.received.length === 200 && a!.received.length === 200, 'all 200 datagrams');
      assert.equal(a.transport.stats.tantrumDropped + b.transport.stats.tantrumDropped, 0);
    } finally {
      await closeAll([a, b]);
    }
  });

  test('tantrum 50% drops about half on send and about half on receive', async () => {
    const endpoint = randomEndpoint();
    let tantrum: Endpoint | undefined;
    let normal: Endpoint | undefined;
    try {
      tantrum = await open(endpoint, { tantrumPercent: 50, random: mulberry32(2024) });
      normal = await open(endpoint);
      const stats = tantrum.transport.stats;
      const count = 2000;
      // Batches keep each burst well inside the socket buffers, so only the tantrum loses datagrams.
      for (let batch = 0; batch < count / 100; batch++) {
        for (let i = 0; i < 100; i++) tantrum.transport.send(Buffer.from(`t${batch * 100 + i}`));
        for (let i = 0; i < 100; i++) normal.transport.send(Buffer.from(`n${batch * 100 + i}`));
        const expected = stats.sent + (batch + 1) * 100;
        await waitFor(() => normal!.received.length === expected, 'the batch at the normal member');
      }
      assert.equal(stats.tantrumDroppedOnSend + stats.sent, count);
      const droppedOnSend = stats.tantrumDroppedOnSend;
      assert.ok(droppedOnSend > 900 && droppedOnSend < 1100, `dropped on send: ${droppedOnSend} of ${count}`);

      // What reached the tantrum socket: its own datagrams that left, plus the normal member's.
      const arrived = stats.sent + count;
      await waitFor(
        () => stats.received + stats.tantrumDroppedOnReceive === arrived,
        'every arrival at the tantrum socket to be either kept or dropped',
      );
      const droppedOnReceive = stats.tantrumDroppedOnReceive;
      assert.ok(
        droppedOnReceive > 0.45 * arrived && droppedOnReceive < 0.55 * arrived,
        `dropped on receive: ${droppedOnReceive} of ${arrived}`,
      );
      assert.equal(stats.tantrumDropped, droppedOnSend + droppedOnReceive);
      assert.equal(tantrum.received.length, arrived - droppedOnReceive);
    } finally {
      await closeAll([tantrum, normal]);
    }
  });

  test('start() names the group, port and interface when the interface address is not local', async () => {
    const endpoint = randomEndpoint();
    const transport = new UdpMulticastTransport({ ...endpoint, interfaceAddress: '10.255.255.1', hops: 1 });
    try {
      await assert.rejects(
        transport.start(() => {}),
        (error: Error) => {
          assert.match(error.message, new RegExp(`group ${endpoint.group.replaceAll('.', '\\.')}`));
          assert.match(error.message, new RegExp(`port ${endpoint.port}`));
          assert.match(error.message, /interface 10\.255\.255\.1 \(is the interface address local\?\)/);
          return true;
        },
      );
      transport.send(Buffer.from('after a failed start'));
      assert.equal(transport.stats.sendErrors, 1);
    } finally {
      await transport.close();
    }
  });

  test('sends before start and after close are counted no-ops; close is idempotent', async () => {
    const endpoint = randomEndpoint();
    const transport = new UdpMulticastTransport({ ...endpoint, interfaceAddress: LOOPBACK, hops: 1 });
    try {
      transport.send(Buffer.from('too early'));
      await transport.start(() => {});
      await assert.rejects(
        transport.start(() => {}),
        /start\(\) may be called once/,
      );
      await transport.close();
      await transport.close();
      transport.send(Buffer.from('too late'));
      assert.equal(transport.stats.sendErrors, 2);
      assert.equal(transport.stats.sendsWhileNotOpen, 2);
      assert.equal(transport.stats.sent, 0);
    } finally {
      await transport.close();
    }
  });

  test('close() during start() makes start() reject, and close() still resolves', async () => {
    const endpoint = randomEndpoint();
    const transport = new UdpMulticastTransport({ ...endpoint, interfaceAddress: LOOPBACK, hops: 1 });
    const starting = transport.start(() => {});
    const closing = transport.close();
    await assert.rejects(starting, /cannot open UDP multicast .*closed while starting/);
    await closing;
    transport.send(Buffer.from('x'));
    assert.equal(transport.stats.sendsWhileNotOpen, 1);
  });

  test('close() lets sends already handed to the OS leave first', async () => {
    const endpoint = randomEndpoint();
    let closing: Endpoint | undefined;
    let listener: Endpoint | undefined;
    try {
      closing = await open(endpoint);
      listener = await open(endpoint);
      closing.transport.send(Buffer.from('bye'));
      assert.equal(closing.transport.pendingSends, 1);
      await closing.transport.close();
      assert.equal(closing.transport.pendingSends, 0);
      assert.equal(closing.transport.stats.sendCompletions, 1);
      await waitFor(() => listener!.received.includes('bye'), 'the last datagram before close');
    } finally {
      await closeAll([closing, listener]);
    }
  });

  test('a datagram too large for UDP is counted in sendErrors, not thrown', async () => {
    const endpoint = randomEndpoint();
    let sender: Endpoint | undefined;
    try {
      sender = await open(endpoint);
      sender.transport.send(new Uint8Array(70_000));
      sender.transport.send(new Uint8Array(70_000));
      await waitFor(() => sender!.transport.stats.sendCompletions === 2, 'both send completions');
      assert.equal(sender.transport.stats.sendErrors, 2);
      assert.equal(sender.transport.pendingSends, 0);
      const emsgsize = sender.warnings.filter((w) => w.includes('EMSGSIZE'));
      assert.equal(emsgsize.length, 1, 'one warning per error code, the rest only counted');
      sender.transport.send(Buffer.from('still works'));
      await waitFor(() => sender!.received.includes('still works'), 'a normal datagram after the failures');
    } finally {
      await closeAll([sender]);
    }
  });

  test('an exception in the datagram handler is counted and warned, never thrown', async () => {
    const endpoint = randomEndpoint();
    const warnings: string[] = [];
    const transport = new UdpMulticastTransport({
      ...endpoint,
      interfaceAddress: LOOPBACK,
      hops: 1,
      onWarning: (message) => warnings.push(message),
    });
    try {
      await transport.start(() => {
        throw new Error('engine bug');
      });
      transport.send(Buffer.from('x'));
      await waitFor(() => transport.stats.handlerErrors === 1, 'the handler error to be counted');
      assert.ok(warnings.some((w) => w.includes('engine bug')));
    } finally {
      await transport.close();
    }
  });

  test('the receive buffer the OS granted is reported, with a warning when short', async () => {
    const rmemMax = readRmemMax();
    const endpoint = randomEndpoint();
    let byDefault: Endpoint | undefined;
    let small: Endpoint | undefined;
    let huge: Endpoint | undefined;
    try {
      byDefault = await open(endpoint);
      small = await open(endpoint, { receiveBufferBytes: 256 * 1024 });
      huge = await open(endpoint, { receiveBufferBytes: 1024 * 1024 * 1024 });
      assert.ok(byDefault.transport.receiveBufferBytes > 0);
      assert.ok(
        huge.warnings.some((w) => /asked for a 1073741824-byte receive buffer, the OS granted/.test(w)),
      );
      assert.equal(small.warnings.length, 0);
      if (rmemMax !== undefined) {
        assert.equal(byDefault.transport.receiveBufferBytes, Math.min(4 * 1024 * 1024, rmemMax));
        assert.equal(small.transport.receiveBufferBytes, 256 * 1024);
        assert.equal(huge.transport.receiveBufferBytes, rmemMax);
      }
    } finally {
      await closeAll([byDefault, small, huge]);
    }
  });

  test('invalid options are refused with the setting named', () => {
    const valid = { group: '239.1.2.3', port: 4000, interfaceAddress: LOOPBACK, hops: 1 };
    assert.throws(
      () => new UdpMulticastTransport({ ...valid, group: '10.0.0.1' }),
      /group must be an IPv4 multicast/,
    );
    assert.throws(
      () => new UdpMulticastTransport({ ...valid, port: 0 }),
      /port must be an integer from 1 to 65535/,
    );
    assert.throws(
      () => new UdpMulticastTransport({ ...valid, interfaceAddress: 'lo' }),
      /interfaceAddress must be/,
    );
    assert.throws(
      () => new UdpMulticastTransport({ ...valid, hops: 256 }),
      /hops must be an integer from 0 to 255/,
    );
    assert.throws(
      () => new UdpMulticastTransport({ ...valid, tantrumPercent: 101 }),
      /tantrumPercent must be/,
    );
  });
});

/** net.core.rmem_max on Linux, the cap on SO_RCVBUF for an unprivileged setsockopt. */
function readRmemMax(): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return undefined;
  }
}
