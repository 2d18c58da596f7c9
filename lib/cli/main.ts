#!/usr/bin/env node
import { UsageError } from './args.js';
/**
 * The `mccache` command: demo, stress, monitor, mtu, hops.
 *
 * Exit status: 0 success (PASS), 1 failure (FAIL, a member that failed, a tool that is missing),
 * 2 a bad command line.
 */
import { DEMO_USAGE, demoOptionsFrom, runDemo } from './demo.js';
import { MONITOR_USAGE, monitorOptionsFrom, runMonitor } from './monitor.js';
import { HOPS_USAGE, MTU_USAGE, runHops, runMtu } from './netcheck-commands.js';
import { runStress, STRESS_USAGE, stressOptionsFrom } from './stress.js';

interface Command {
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

const out = {
  write: (text: string) => void process.stdout.write(text),
  isTTY: process.stdout.isTTY === true,
};

const COMMANDS: Record<string, Command> = {
  demo: {
    summary: 'start 3 members on loopback, show writes replicating and the caches agreeing',
    usage: DEMO_USAGE,
    async run(argv) {
      const options = demoOptionsFrom(argv);
      if (options === 'help') return help(DEMO_USAGE);
      return runDemo(options, out);
    },
  },
  stress: {
    summary: "run the seed's stress workload on N members and check that every cache ends identical",
    usage: STRESS_USAGE,
    async run(argv) {
      const options = stressOptionsFrom(argv);
      if (options === 'help') return help(STRESS_USAGE);
      return (await runStress(options, out)).exitCode;
    },
  },
  monitor: {
    summary: 'join a group as a silent observer and print the ops it carries, decoded',
    usage: MONITOR_USAGE,
    async run(argv) {
      const options = monitorOptionsFrom(argv);
      if (options === 'help') return help(MONITOR_USAGE);
      return runMonitor(options, out);
    },
  },
  mtu: {
    summary: 'largest packet that reaches an address unfragmented (ping -M do)',
    usage: MTU_USAGE,
    run: (argv) => runMtu(argv, out),
  },
  hops: {
    summary: 'router hops to an address (tracepath or traceroute)',
    usage: HOPS_USAGE,
    run: (argv) => runHops(argv, out),
  },
};

function help(text: string): number {
  process.stdout.write(`${text}\n`);
  return 0;
}

/** Help for the whole command: every command with its flags. */
export function fullUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
  const list = Object.entries(COMMANDS)
    .map(([name, command]) => `  ${name.padEnd(width)}${command.summary}`)
    .join('\n');
  const details = Object.values(COMMANDS)
    .map((command) => command.usage)
    .join('\n\n');
  return `Usage: mccache <command> [flags]

Commands:
${list}

Run "mccache <command> --help" for one command.

${details}`;
}

/** Runs the command line; returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    const command = topic !== undefined ? COMMANDS[topic] : undefined;
    process.stdout.write(`${command ? command.usage : fullUsage()}\n`);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(
      `mccache: unknown command "${name}": expected one of ${Object.keys(COMMANDS).join(', ')}\n`,
    );
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(
        `mccache ${name}: ${error.message}\nRun "mccache ${name} --help" for the flags.\n`,
      );
      return 2;
    }
    process.stderr.write(`mccache ${name}: ${(error as Error)?.message ?? error}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// Let stdout drain before leaving; nothing else may keep the process alive.
process.exitCode = code;
if (process.stdout.writableNeedDrain) process.stdout.once('drain', () => process.exit(code));
else process.exit(code);
