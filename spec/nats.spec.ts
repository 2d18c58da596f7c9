import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NatsTransport, natsSubjectFor } from '../lib/transport/nats.js';
import {
  findNatsServer,
  freeTcpPort,
  NATS_SERVER_MISSING,
  type NatsServerProcess,
  startNatsServer,
} from './helpers/nats-server.js';

const natsServerMissing = findNatsServer() === undefined;
if (natsServerMissing) console.warn(`SKIPPING NATS transport tests: ${NATS_SERVER_MISSING}`);

async function waitFor(condition: () => boolean, what: string, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A member under test: its transport, what it received (as text) and its warnings. */
interface Member {
  transport: NatsTransport;
  received: string[];
  warnings: string[];
}

function member(
  url: string,
  cluster: string,
  extra: { tantrumPercent?: number; random?: () => number } = {},
): Member {
  const warnings: string[] = [];
  const transport = new NatsTransport({
    url,
    cluster,
    onWarning: (m) => warnings.push(m),
    reconnectTimeWaitMs: 100,
    connectTimeoutMs: 2000,
    ...extra,
  });
  return { transport, received: [], warnings };
}

async function startAll(members: Member[]): Promise<void> {
  for (const m of members) await m.transport.start((datagram) => m.received.push(datagram.toString()));
}

async function closeAll(members: Member[]): Promise<void> {
  await Promise.all(members.map((m) => m.transport.close()));
}

describe('natsSubjectFor', () => {
  test('keeps letters, digits, _ and - and replaces subject syntax with _', () => {
    assert.equal(natsSubjectFor('orders-eu_1'), 'mccache.orders-eu_1');
    assert.equal(natsSubjectFor('a.b *>c'), 'mccache.a_b___c');
    assert.equal(natsSubjectFor('café'), 'mccache.caf_');
  });

  test('refuses an empty cluster name', () => {
    assert.throws(() => natsSubjectFor(''), /non-empty/);
  });
});

describe('NatsTransport options', () => {
  test('an empty or blank url is refused with the expected form', () => {
    assert.throws(
      () => new NatsTransport({ url: ' , ', cluster: 'c' }),
      /Invalid NATS url.*nats:\/\/127\.0\.0\.1:4222/,
    );
    assert.throws(() => new NatsTransport({ url: 'nats://a b:4222', cluster: 'c' }), /Invalid NATS url/);
  });

  test('describes its servers and subject', () => {
    const transport = new NatsTransport({
      url: 'nats://10.0.0.5:4222, nats://10.0.0.6:4222',
      cluster: 'shop',
    });
    assert.equal(transport.subject, 'mccache.shop');
    assert.match(transport.description, /nats:\/\/10\.0\.0\.5:4222,nats:\/\/10\.0\.0\.6:4222.*mccache\.shop/);
  });

  test('send before start is counted, not thrown', () => {
    const transport = new NatsTransport({ url: 'nats://127.0.0.1:4222', cluster: 'c' });
    transport.send(Buffer.from('early'));
    assert.equal(transport.stats.sendErrors, 1);
    assert.equal(transport.stats.sent, 0);
  });
});

describe('NatsTransport against a real nats-server', {
  skip: natsServerMissing ? NATS_SERVER_MISSING : false,
}, () => {
  let server: NatsServerProcess;
  before(async () => {
    server = await startNatsServer();
  });
  after(async () => {
    await server?.stop();
  });

  test('three members exchange datagrams, and each receives its own', async () => {
    const members = [member(server.url, 'three'), member(server.url, 'three'), member(server.url, 'three')];
    try {
      await startAll(members);
      members.forEach((m, i) => {
        m.transport.send(Buffer.from(`from ${i} #1`));
        m.transport.send(Buffer.from(`from ${i} #2`));
      });
      const expected = ['from 0 #1', 'from 0 #2', 'from 1 #1', 'from 1 #2', 'from 2 #1', 'from 2 #2'];
      await waitFor(
        () => members.every((m) => m.received.length >= expected.length),
        'every datagram everywhere',
      );
      for (const m of members) {
        assert.deepEqual([...m.received].sort(), expected);
        assert.equal(m.transport.stats.sent, 2);
        assert.equal(m.transport.stats.received, 6);
        assert.equal(m.transport.stats.sendErrors, 0);
      }
      await waitFor(() => members.every((m) => m.transport.pendingSends === 0), 'publishes confirmed');
    } finally {
      await closeAll(members);
    }
  });

  test('keeps datagrams in order per sender', async () => {
    const [sender, receiver] = [member(server.url, 'order'), member(server.url, 'order')];
    try {
      await startAll([sender, receiver]);
      for (let i = 0; i < 500; i++) sender.transport.send(Buffer.from(String(i)));
      await waitFor(() => receiver.received.length === 500, '500 datagrams');
      assert.deepEqual(
        receiver.received.map(Number),
        Array.from({ length: 500 }, (_, i) => i),
      );
    } finally {
      await closeAll([sender, receiver]);
    }
  });

  test('members of another cluster receive nothing', async () => {
    const ours = member(server.url, 'alpha');
    const theirs = member(server.url, 'beta');
    try {
      await startAll([ours, theirs]);
      theirs.transport.send(Buffer.from('beta only'));
      ours.transport.send(Buffer.from('alpha only'));
      await waitFor(() => ours.received.length === 1 && theirs.received.length === 1, 'own datagrams');
      assert.deepEqual(ours.received, ['alpha only']);
      assert.deepEqual(theirs.received, ['beta only']);
    } finally {
      await closeAll([ours, theirs]);
    }
  });

  test('a datagram over the server max_payload is counted as a send error, not thrown', async () => {
    const m = member(server.url, 'big');
    try {
      await startAll([m]);
      m.transport.send(Buffer.alloc(2 * 1024 * 1024));
      m.transport.send(Buffer.from('small'));
      assert.equal(m.transport.stats.sendErrors, 1);
      await waitFor(() => m.received.length === 1, 'the small datagram');
      assert.deepEqual(m.received, ['small']);
    } finally {
      await closeAll([m]);
    }
  });

  test('a throwing datagram handler is counted and does not stall the connection', async () => {
    const m = member(server.url, 'throwing');
    try {
      await m.transport.start((datagram) => {
        m.received.push(datagram.toString());
        if (datagram.toString() === 'bad') throw new Error('engine bug');
      });
      m.transport.send(Buffer.from('bad'));
      m.transport.send(Buffer.from('good'));
      await waitFor(() => m.received.length === 2, 'both datagrams');
      assert.deepEqual(m.received, ['bad', 'good']);
      assert.equal(m.transport.stats.handlerErrors, 1);
      assert.ok(m.warnings.some((w) => /handler threw engine bug/.test(w)));
    } finally {
      await closeAll([m]);
    }
  });

  test('a 100% tantrum drops every datagram on send and counts it', async () => {
    const m = member(server.url, 'tantrum', { tantrumPercent: 100, random: () => 0.5 });
    try {
      await startAll([m]);
      for (let i = 0; i < 10; i++) m.transport.send(Buffer.from('x'));
      assert.equal(m.transport.stats.tantrumDropped, 10);
      assert.equal(m.transport.stats.sent, 0);
    } finally {
      await closeAll([m]);
    }
  });

  test('close is idempotent and later sends are counted', async () => {
    const m = member(server.url, 'closing');
    await startAll([m]);
    await m.transport.close();
    await m.transport.close();
    m.transport.send(Buffer.from('late'));
    assert.equal(m.transport.stats.sendErrors, 1);
    assert.equal(m.transport.pendingSends, 0);
  });
});

describe('NatsTransport through a server restart', {
  skip: natsServerMissing ? NATS_SERVER_MISSING : false,
}, () => {
  test('members reconnect, the outage is counted and warned, and datagrams flow again', async () => {
    let server = await startNatsServer();
    const members = [
      member(server.url, 'restart'),
      member(server.url, 'restart'),
      member(server.url, 'restart'),
    ];
    try {
      await startAll(members);
      members[0]!.transport.send(Buffer.from('before'));
      await waitFor(() => members.every((m) => m.received.includes('before')), 'datagram before the outage');

      await server.stop();
      await waitFor(
        () => members.every((m) => m.transport.stats.disconnects === 1),
        'every member to notice',
      );
      for (const m of members) {
        assert.equal(m.transport.isConnected, false);
        assert.doesNotThrow(() => m.transport.send(Buffer.from('during')));
        assert.equal(m.transport.stats.sendErrors, 1);
        assert.ok(
          m.warnings.some((w) => /lost the connection/.test(w)),
          m.warnings.join('\n'),
        );
      }

      server = await startNatsServer(server.port);
      await waitFor(
        () => members.every((m) => m.transport.stats.reconnects === 1),
        'every member to reconnect',
      );
      // The server learns each member's subscription as it reconnects; resend until all have arrived.
      let round = 0;
      const heardFromAll = (m: Member) =>
        members.every((_, i) => m.received.some((r) => r.startsWith(`after ${i} `)));
      await waitFor(() => {
        if (members.every(heardFromAll)) return true;
        round++;
        for (const [i, m] of members.entries()) m.transport.send(Buffer.from(`after ${i} ${round}`));
        return false;
      }, 'datagrams after the restart');
      for (const m of members) {
        assert.equal(m.transport.isConnected, true);
        assert.equal(m.transport.stats.disconnects, 1);
        assert.ok(!m.received.includes('during'));
        assert.ok(
          m.warnings.some((w) => /reconnected .* 1 datagrams dropped during the outage/.test(w)),
          m.warnings.join('\n'),
        );
      }
    } finally {
      await closeAll(members);
      await server.stop();
    }
  });
});

describe('NatsTransport with no server', () => {
  test('start() rejects with an error naming the URL', async () => {
    const port = await freeTcpPort();
    const url = `nats://127.0.0.1:${port}`;
    const transport = new NatsTransport({ url, cluster: 'nobody', connectTimeoutMs: 2000 });
    await assert.rejects(
      transport.start(() => {}),
      (error: Error) => {
        assert.match(error.message, new RegExp(`Cannot connect to NATS at nats://127\\.0\\.0\\.1:${port}`));
        assert.match(error.message, /MCCACHE_NATS_URL/);
        return true;
      },
    );
    transport.send(Buffer.from('x'));
    assert.equal(transport.stats.sendErrors, 1);
    await transport.close();
  });
});
