/**
 * `mccache demo`: three member processes on loopback. Each writes; the others show the write
 * arriving and how long it took; then every member's checksum of its whole cache is printed and
 * compared. Exit status 0 when all agree, 1 otherwise. Nothing is left running or written to the
 * current folder (logs go to a temporary folder that is removed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFlags, type FlagSet, integerFlag, parseArgs, UsageError } from './args.js';
import { judge, launchCluster, type MemberProcess, randomGroup } from './stress.js';
import type { FromMember } from './stress-member.js';

export const DEMO_FLAGS = {
  nodes: integerFlag({ min: 2, max: 9, default: 3, description: 'member processes' }),
} satisfies FlagSet;

export interface DemoOptions {
  nodes: number;
}

export const DEMO_USAGE = `mccache demo [flags]

Starts member processes on loopback, shows each one's writes arriving at the others, then checks
that every member holds the same cache. Takes about 5-10 seconds; exit status 0 when they agree.

${describeFlags(DEMO_FLAGS)}`;

export function demoOptionsFrom(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): DemoOptions | 'help' {
  const { values, positionals, help } = parseArgs(argv, DEMO_FLAGS, env);
  if (help) return 'help';
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument "${positionals[0]}": demo takes only flags`);
  return { nodes: values.nodes! };
}

/** Where the demo prints. */
export interface DemoOutput {
  write(text: string): void;
}

const PEOPLE = [
  { name: 'Ada Lovelace', city: 'London' },
  { name: 'Grace Hopper', city: 'New York' },
  { name: 'Alan Turing', city: 'Manchester' },
  { name: 'Edsger Dijkstra', city: 'Eindhoven' },
  { name: 'Barbara Liskov', city: 'Boston' },
  { name: 'Leslie Lamport', city: 'Palo Alto' },
];

type Step =
  | { kind: 'write'; writer: number; key: string; value: Record<string, unknown> }
  | { kind: 'delete'; writer: number; key: string };

/** The script: every member writes, one updates another's key, one deletes. */
function script(nodes: number): Step[] {
  const steps: Step[] = [];
  PEOPLE.slice(0, Math.max(nodes, 3)).forEach((person, i) => {
    steps.push({ kind: 'write', writer: i % nodes, key: `user:${i + 1}`, value: { ...person, visits: 1 } });
  });
  steps.push({ kind: 'write', writer: 1 % nodes, key: 'user:1', value: { ...PEOPLE[0]!, visits: 2 } });
  steps.push({ kind: 'delete', writer: 2 % nodes, key: 'user:2' });
  return steps;
}

function preview(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 70 ? `${text.slice(0, 67)}...` : text;
}

const WATCH_TIMEOUT_MS = 3000;

async function play(step: Step, members: MemberProcess[], say: (line: string) => void): Promise<boolean> {
  const writer = members[step.writer]!;
  const watchers = members.filter((member) => member !== writer);
  const present = step.kind === 'write';
  // Watchers poll for the change on every event-loop turn; they start before the write.
  const outcomes = watchers.map(
    (watcher) =>
      watcher.nextMatching(
        (m) => (m.type === 'saw' || m.type === 'missed') && m.key === step.key,
        WATCH_TIMEOUT_MS + 5000,
        `news of ${step.key}`,
      ) as Promise<Extract<FromMember, { type: 'saw' | 'missed' }>>,
  );
  for (const outcome of outcomes) outcome.catch(() => undefined); // awaited below; no unhandled rejection
  await Promise.all(
    watchers.map((watcher) =>
      watcher.request(
        { type: 'watch', key: step.key, present, timeoutMs: WATCH_TIMEOUT_MS },
        'watching',
        5000,
      ),
    ),
  );
  const wrote =
    step.kind === 'write'
      ? writer.request({ type: 'write', key: step.key, value: step.value }, 'wrote', 5000)
      : writer.request({ type: 'delete', key: step.key }, 'wrote', 5000);
  const { at } = await wrote;
  say(
    step.kind === 'write'
      ? `[node ${writer.name}] wrote ${step.key} = ${preview(step.value)}`
      : `[node ${writer.name}] deleted ${step.key}`,
  );
  let all = true;
  (await Promise.all(outcomes)).forEach((outcome, i) => {
    const watcher = watchers[i]!;
    if (outcome.type === 'missed') {
      all = false;
      say(
        `[node ${watcher.name}] did NOT see ${step.key} ${present ? 'written' : 'deleted'} within ${WATCH_TIMEOUT_MS} ms`,
      );
      return;
    }
    const latency = Math.max(0, outcome.at - at).toFixed(1);
    if (present) {
      const by = members.find(
        (m) =>
          outcome.writer !== undefined &&
          Number.parseInt(m.nodeId, 16) === Number.parseInt(outcome.writer, 16),
      );
      say(
        `[node ${watcher.name}] saw ${step.key} = ${preview(outcome.value)} written by ${by?.name ?? outcome.writer}, ${latency} ms after the write`,
      );
    } else {
      say(`[node ${watcher.name}] saw ${step.key} deleted by ${writer.name}, ${latency} ms after the delete`);
    }
  });
  return all;
}

/** Runs the demo; returns the exit status. */
export async function runDemo(options: DemoOptions, output: DemoOutput): Promise<number> {
  const say = (line: string) => output.write(`${line}\n`);
  const { group, port } = randomGroup();
  const logFolder = mkdtempSync(join(tmpdir(), 'mccache-demo-'));
  say(`mccache demo: starting ${options.nodes} member processes on ${group}:${port} (loopback only)`);
  let members: MemberProcess[] = [];
  const interrupt = () => {
    for (const member of members) member.kill();
    rmSync(logFolder, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupt);
  try {
    members = await launchCluster({
      count: options.nodes,
      settings: {
        multicastIp: group,
        multicastPort: port,
        multicastIf: '127.0.0.1',
        cluster: 'mccache-demo',
        cryptoKeys: [],
        pulse: 5,
        ttl: 3600,
        max: 256,
        size: 8 * 1024 * 1024,
        mode: 1,
        tantrum: 0,
        logLevel: 'warn',
      },
      workload: (index) => ({ keys: 10, apertureMs: 10, mix: 1, seed: index }),
      logFolder,
    });
    say(`members ${members.map((m) => `${m.name} (node ${m.nodeId})`).join(', ')} have found each other\n`);
    // An unprinted round first: the first op through a fresh process pays for lazy compilation,
    // which is not what replication costs.
    for (const [writer] of members.entries()) {
      await play({ kind: 'write', writer, key: 'demo:warm-up', value: { writer } }, members, () => {});
    }
    await play({ kind: 'delete', writer: 0, key: 'demo:warm-up' }, members, () => {});
    let allSeen = true;
    for (const step of script(options.nodes)) {
      if (!(await play(step, members, say))) allSeen = false;
      say('');
    }

    // Compare whole caches once nothing is in flight: the digest is a hash of every key's crc and tsm.
    let finals = await checksums(members);
    const until = Date.now() + 10_000;
    while (new Set(finals.map((f) => f.digest)).size > 1 && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      finals = await checksums(members);
    }
    say('checksums (a digest of every key with its crc and timestamp):');
    finals.forEach((final, i) => {
      say(`  node ${members[i]!.name}  ${final.digest}  ${Object.keys(final.checksum).length} keys`);
    });
    const verdict = judge(Object.fromEntries(finals.map((final, i) => [members[i]!.name, final.checksum])));
    if (!verdict.pass) {
      say(`\nthe members do NOT agree: ${verdict.differing.map((d) => d.key).join(', ')} differ`);
      return 1;
    }
    say(
      `\nall ${members.length} members agree${allSeen ? '' : ' (after repairing what some had not seen at first)'}`,
    );
    return 0;
  } finally {
    process.off('SIGINT', interrupt);
    await Promise.all(members.map((member) => member.stop()));
    rmSync(logFolder, { recursive: true, force: true });
  }
}

let round = 0;

function checksums(members: MemberProcess[]) {
  const id = ++round;
  return Promise.all(
    members.map((member) => member.request({ type: 'checksum', id }, 'checksum', 5000, (m) => m.id === id)),
  );
}
