import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../lib/clock.js';
import {
  MemoryNetwork,
  type MemoryNetworkOptions,
  type MemoryTransport,
  mulberry32,
} from '../lib/transport/memory-network.js';

/** What every endpoint received, as "receiver<-payload" lines in arrival order. */
interface Member {
  transport: MemoryTransport;
  received: string[];
}

async function startMembers(network: MemoryNetwork, count: number, trace?: string[]): Promise<Member[]> {
  const members: Member[] = [];
  for (let i = 0; i < count; i++) {
    const transport = network.attach(`m${i}`);
    const member: Member = { transport, received: [] };
    await transport.start((datagram) => {
      const text = datagram.toString();
      member.received.push(text);
      trace?.push(`${transport.name}<-${text}`);
    });
    members.push(member);
  }
  return members;
}

function statsBalance(network: MemoryNetwork): void {
  const s = network.stats;
  assert.equal(
    s.addressed + s.duplicated,
    s.delivered + s.lost + s.partitioned + s.overflow + s.undeliverable + network.inFlight,
    `stats do not add up: ${JSON.stringify({ ...s, inFlight: network.inFlight })}`,
  );
}

/** Runs a fixed scenario (random senders, faults on) and returns the full delivery trace. */
async function faultyRunTrace(seed: number): Promise<string[]> {
  const clock = new ManualClock();
  const network = new MemoryNetwork({ clock, seed, loss: 0.2, duplicate: 0.2, reorder: 0.2 });
  const trace: string[] = [];
  const members = await startMembers(network, 4, trace);
  const pick = mulberry32(99); // the same sends for every seed: only the network's decisions differ
  for (let i = 0; i < 300; i++) {
    const sender = members[Math.floor(pick() * members.length)]!;
    sender.transport.send(Buffer.from(`${sender.transport.name}:${i}`));
    clock.advance(pick());
  }
  clock.advance(100);
  return trace;
}

describe('MemoryNetwork', () => {
  test('the same seed gives the identical delivery trace, another seed a different one', async () => {
    const first = await faultyRunTrace(7);
    const again = await faultyRunTrace(7);
    const other = await faultyRunTrace(8);
    assert.ok(first.length > 500, `expected a busy trace, got ${first.length} deliveries`);
    assert.deepEqual(again, first);
    assert.notDeepEqual(other, first);
  });

  test('without faults every member, the sender included, gets every datagram in send order', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 1 });
    const members = await startMembers(network, 3);
    const sent: string[] = [];
    for (let i = 0; i < 50; i++) {
      const payload = `d${i}`;
      members[i % 3]!.transport.send(Buffer.from(payload));
      sent.push(payload);
    }
    // Deliveries wait on the clock: nothing arrives until the test moves time.
    assert.deepEqual(
      members.map((m) => m.received.length),
      [0, 0, 0],
    );
    assert.equal(network.inFlight, 150);
    clock.advance(1);
    for (const member of members) assert.deepEqual(member.received, sent);
    assert.equal(network.stats.delivered, 150);
    assert.equal(network.inFlight, 0);
    assert.deepEqual(
      members.map((m) => m.transport.stats.received),
      [50, 50, 50],
    );
    assert.equal(members[0]!.transport.stats.sent, 17);
    statsBalance(network);
  });

  test('delivery takes the configured one-way delay', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 1, delayMs: 10 });
    const [member] = await startMembers(network, 1);
    member!.transport.send(Buffer.from('x'));
    clock.advance(9.9);
    assert.deepEqual(member!.received, []);
    clock.advance(0.1);
    assert.deepEqual(member!.received, ['x']);
  });

  test('loss 1 delivers nothing and counts every delivery as lost', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 3, loss: 1 });
    const members = await startMembers(network, 3);
    for (let i = 0; i < 20; i++) members[i % 3]!.transport.send(Buffer.from(`d${i}`));
    clock.advance(100);
    assert.deepEqual(
      members.map((m) => m.received.length),
      [0, 0, 0],
    );
    assert.equal(network.stats.sent, 20);
    assert.equal(network.stats.lost, 60);
    assert.equal(network.stats.delivered, 0);
    statsBalance(network);
  });

  test('duplicate 1 delivers every datagram twice to everyone', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 4, duplicate: 1 });
    const members = await startMembers(network, 2);
    members[0]!.transport.send(Buffer.from('a'));
    members[1]!.transport.send(Buffer.from('b'));
    clock.advance(1);
    for (const member of members) assert.deepEqual(member.received, ['a', 'a', 'b', 'b']);
    assert.equal(network.stats.duplicated, 4);
    assert.equal(network.stats.delivered, 8);
    statsBalance(network);
  });

  test('reordering delays some deliveries past later ones, yet all arrive', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 5, reorder: 0.5, jitterMs: 5 });
    const [sender, receiver] = await startMembers(network, 2);
    const sent: string[] = [];
    for (let i = 0; i < 200; i++) {
      sent.push(`d${i}`);
      sender!.transport.send(Buffer.from(`d${i}`));
      clock.advance(0.1);
    }
    clock.advance(10);
    assert.notDeepEqual(receiver!.received, sent);
    assert.deepEqual([...receiver!.received].sort(), [...sent].sort());
    const reordered = network.stats.reordered;
    assert.ok(reordered > 120 && reordered < 280, `about half of 400 deliveries reordered, got ${reordered}`);
    statsBalance(network);
  });

  test('a partition splits the members into groups until heal', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 6 });
    const [a, b, c] = await startMembers(network, 3);
    network.partition([a!.transport, b!.transport]);
    a!.transport.send(Buffer.from('from-a'));
    c!.transport.send(Buffer.from('from-c'));
    clock.advance(1);
    assert.deepEqual(a!.received, ['from-a']);
    assert.deepEqual(b!.received, ['from-a']);
    assert.deepEqual(c!.received, ['from-c']);
    assert.equal(network.stats.partitioned, 3);

    network.heal();
    b!.transport.send(Buffer.from('healed'));
    clock.advance(1);
    for (const member of [a, b, c]) assert.equal(member!.received.at(-1), 'healed');
    statsBalance(network);
  });

  test('singleton groups isolate each named member; in-flight datagrams across a new cut are dropped', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 6 });
    const [a, b, c, d] = await startMembers(network, 4);
    a!.transport.send(Buffer.from('before-cut'));
    network.partition([a!.transport], [b!.transport]);
    clock.advance(1);
    assert.deepEqual(a!.received, ['before-cut']);
    assert.deepEqual(b!.received, []);
    assert.deepEqual(c!.received, []);
    c!.transport.send(Buffer.from('from-c'));
    clock.advance(1);
    assert.deepEqual(c!.received, ['from-c']);
    assert.deepEqual(d!.received, ['from-c']);
    assert.deepEqual(b!.received, []);
    statsBalance(network);
  });

  test('closed endpoints receive nothing, even datagrams already in flight, and cannot send', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 7 });
    const [a, b] = await startMembers(network, 2);
    a!.transport.send(Buffer.from('in-flight'));
    await b!.transport.close();
    await b!.transport.close(); // idempotent
    a!.transport.send(Buffer.from('after-close'));
    b!.transport.send(Buffer.from('from-closed'));
    clock.advance(1);
    assert.deepEqual(b!.received, []);
    assert.deepEqual(a!.received, ['in-flight', 'after-close']);
    assert.equal(network.stats.undeliverable, 1);
    assert.equal(b!.transport.stats.sendErrors, 1);
    assert.equal(b!.transport.stats.sent, 0);
    await assert.rejects(
      b!.transport.start(() => {}),
      /start\(\) may be called once/,
    );
    statsBalance(network);
  });

  test('an endpoint that has not started neither receives nor sends', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 8 });
    const [a] = await startMembers(network, 1);
    const late = network.attach('late');
    const lateReceived: string[] = [];
    late.send(Buffer.from('too-early'));
    a!.transport.send(Buffer.from('before-start'));
    await late.start((datagram) => lateReceived.push(datagram.toString()));
    a!.transport.send(Buffer.from('after-start'));
    clock.advance(1);
    assert.deepEqual(lateReceived, ['after-start']);
    assert.deepEqual(a!.received, ['before-start', 'after-start']);
    assert.equal(late.stats.sendErrors, 1);
  });

  test('in-flight deliveries are bounded by maxQueued and the excess is counted as overflow', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 9, maxQueued: 5 });
    const members = await startMembers(network, 3);
    for (let i = 0; i < 3; i++) members[0]!.transport.send(Buffer.from(`d${i}`));
    assert.equal(network.inFlight, 5);
    assert.equal(network.stats.overflow, 4);
    statsBalance(network);
    clock.advance(1);
    assert.equal(network.stats.delivered, 5);
    members[0]!.transport.send(Buffer.from('room-again'));
    clock.advance(1);
    for (const member of members) assert.equal(member.received.at(-1), 'room-again');
    statsBalance(network);
  });

  test('the statistics add up at every step of a faulty run with fault rates changed mid-run', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({
      clock,
      seed: 10,
      loss: 0.3,
      duplicate: 0.3,
      reorder: 0.3,
      maxQueued: 40,
    });
    const members = await startMembers(network, 5);
    const pick = mulberry32(10);
    for (let i = 0; i < 500; i++) {
      members[i % 5]!.transport.send(Buffer.from(`d${i}`));
      if (i === 100) network.partition([members[0]!.transport, members[1]!.transport]);
      if (i === 200) network.heal();
      if (i === 250) for (let k = 0; k < 20; k++) members[0]!.transport.send(Buffer.from(`burst${k}`));
      if (i === 300) network.setFaults({ loss: 0 });
      if (i === 400) void members[4]!.transport.close();
      clock.advance(pick());
      statsBalance(network);
    }
    clock.advance(100);
    statsBalance(network);
    const s = network.stats;
    assert.equal(network.inFlight, 0);
    // Member 4 sends when i % 5 === 4; its 20 sends after closing at i = 400 were refused.
    assert.equal(members[4]!.transport.stats.sendErrors, 20);
    assert.equal(s.sent, 480 + 20);
    for (const counter of [
      'lost',
      'duplicated',
      'reordered',
      'partitioned',
      'overflow',
      'undeliverable',
    ] as const) {
      assert.ok(s[counter] > 0, `${counter} should have been exercised`);
    }
    const received = members.reduce((sum, m) => sum + m.transport.stats.received, 0);
    assert.equal(received, s.delivered);
  });

  test('after setFaults({ loss: 0 }) nothing more is lost', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 11, loss: 1 });
    const [a, b] = await startMembers(network, 2);
    a!.transport.send(Buffer.from('lost'));
    network.setFaults({ loss: 0 });
    a!.transport.send(Buffer.from('kept'));
    clock.advance(1);
    assert.deepEqual(b!.received, ['kept']);
    assert.equal(network.stats.lost, 2);
    assert.throws(() => network.setFaults({ loss: 1.5 }), /loss must be a probability from 0 to 1, got 1.5/);
  });

  test('every receiver gets its own copy and the sender may reuse its buffer at once', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 12 });
    const buffers: Buffer[] = [];
    const a = network.attach('a');
    const b = network.attach('b');
    await a.start((datagram) => buffers.push(datagram));
    await b.start((datagram) => buffers.push(datagram));
    const outgoing = Buffer.from('original');
    a.send(outgoing);
    outgoing.write('REUSED!!');
    clock.advance(1);
    assert.equal(buffers.length, 2);
    buffers[0]!.write('mutated!');
    assert.equal(buffers[1]!.toString(), 'original');
  });

  test('handlers may answer from inside a delivery (request/response in virtual time)', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 13, delayMs: 1 });
    const ping = network.attach('ping');
    const pong = network.attach('pong');
    const heardByPing: string[] = [];
    await ping.start((datagram) => heardByPing.push(`${clock.now() - start}:${datagram}`));
    await pong.start((datagram) => {
      if (datagram.toString() === 'ping') pong.send(Buffer.from('pong'));
    });
    const start = clock.now();
    ping.send(Buffer.from('ping'));
    clock.advance(5);
    assert.deepEqual(heardByPing, ['1:ping', '2:pong']);
  });

  test('a busy network keeps a single timer on the clock', async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, seed: 14, reorder: 0.5 });
    const members = await startMembers(network, 5);
    for (let i = 0; i < 1000; i++) members[i % 5]!.transport.send(Buffer.from(`d${i}`));
    assert.equal(network.inFlight, 5000);
    assert.equal(clock.pendingTimers, 1);
    clock.advance(10);
    assert.equal(network.stats.delivered, 5000);
    assert.equal(clock.pendingTimers, 0);
  });

  test('invalid options are refused with the setting named', () => {
    const clock = new ManualClock();
    const make = (extra: Partial<MemoryNetworkOptions>) => new MemoryNetwork({ clock, seed: 1, ...extra });
    assert.throws(() => make({ loss: -0.1 }), /loss must be a probability/);
    assert.throws(() => make({ duplicate: 2 }), /duplicate must be a probability/);
    assert.throws(() => make({ reorder: Number.NaN }), /reorder must be a probability/);
    assert.throws(() => make({ delayMs: -1 }), /delayMs must be/);
    assert.throws(() => make({ maxQueued: 1.5 }), /maxQueued must be/);
  });
});

describe('mulberry32', () => {
  test('is reproducible per seed and uniform enough for fault injection', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const fromA = Array.from({ length: 10_000 }, a);
    assert.deepEqual(Array.from({ length: 10_000 }, b), fromA);
    assert.notDeepEqual(Array.from({ length: 10_000 }, c), fromA);
    assert.ok(fromA.every((x) => x >= 0 && x < 1));
    const buckets = new Array<number>(10).fill(0);
    for (const x of fromA) buckets[Math.floor(x * 10)]!++;
    for (const count of buckets) assert.ok(count > 900 && count < 1100, `bucket count ${count}`);
  });
});
