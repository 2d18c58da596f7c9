import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  durationFlag,
  flagName,
  formatDuration,
  integerFlag,
  parseArgs,
  parseDuration,
  switchFlag,
  UsageError,
} from '../lib/cli/args.js';
import { DEMO_FLAGS, demoOptionsFrom } from '../lib/cli/demo.js';
import { MONITOR_FLAGS, monitorOptionsFrom } from '../lib/cli/monitor.js';
import { STRESS_FLAGS, type StressOptions, stressOptionsFrom } from '../lib/cli/stress.js';
import { TSX_LOADER } from './helpers/tsx.js';

const MAIN = fileURLToPath(new URL('../lib/cli/main.ts', import.meta.url));
const NO_ENV: NodeJS.ProcessEnv = {};

function stress(argv: string[], env: NodeJS.ProcessEnv = NO_ENV): StressOptions {
  const options = stressOptionsFrom(argv, env);
  assert.notEqual(options, 'help');
  return options as StressOptions;
}

function usageError(run: () => unknown, ...fragments: string[]): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof UsageError, `expected a UsageError, got ${String(error)}`);
    for (const fragment of fragments) {
      assert.ok(error.message.includes(fragment), `"${error.message}" should mention "${fragment}"`);
    }
    return true;
  });
}

describe('flag parser', () => {
  const flags = {
    count: integerFlag({ env: 'TEST_COUNT', min: 1, max: 10, default: 3, description: 'count' }),
    wait: durationFlag({ minMs: 1, maxMs: 60_000, bareUnit: 's', description: 'wait' }),
    verbose: switchFlag({ description: 'verbose' }),
  };

  test('reads --name value and --name=value, switches and positionals', () => {
    const parsed = parseArgs(['--count', '4', 'first', '--wait=2', '--verbose', 'second'], flags, NO_ENV);
    assert.deepEqual(parsed.values, { count: 4, wait: 2000, verbose: true });
    assert.deepEqual(parsed.positionals, ['first', 'second']);
    assert.equal(parsed.help, false);
  });

  test('a flag wins over its environment variable, which wins over the default', () => {
    assert.equal(parseArgs([], flags, {}).values.count, 3);
    assert.equal(parseArgs([], flags, {}).sources.count, 'default');
    assert.equal(parseArgs([], flags, { TEST_COUNT: '7' }).values.count, 7);
    assert.equal(parseArgs([], flags, { TEST_COUNT: '7' }).sources.count, 'env');
    const both = parseArgs(['--count', '9'], flags, { TEST_COUNT: '7' });
    assert.equal(both.values.count, 9);
    assert.equal(both.sources.count, 'flag');
  });

  test('an empty environment variable counts as unset', () => {
    assert.equal(parseArgs([], flags, { TEST_COUNT: '' }).values.count, 3);
  });

  test('everything after -- is positional', () => {
    assert.deepEqual(parseArgs(['--', '--count', '5'], flags, NO_ENV).positionals, ['--count', '5']);
  });

  test('--help and -h are noticed, not refused', () => {
    assert.equal(parseArgs(['--help'], flags, NO_ENV).help, true);
    assert.equal(parseArgs(['-h'], flags, NO_ENV).help, true);
  });

  test('an unknown flag is refused with the closest known name', () => {
    usageError(
      () => parseArgs(['--cout', '4'], flags, NO_ENV),
      'unknown flag --cout',
      'did you mean --count?',
    );
    usageError(() => parseArgs(['--zzzzzzzz'], flags, NO_ENV), 'unknown flag --zzzzzzzz');
  });

  test('a missing value names the flag and its placeholder', () => {
    usageError(() => parseArgs(['--count'], flags, NO_ENV), '--count needs a value', '--count <n>');
    usageError(() => parseArgs(['--count', '--verbose'], flags, NO_ENV), '--count needs a value');
  });

  test('a flag given twice is refused', () => {
    usageError(() => parseArgs(['--count', '1', '--count=2'], flags, NO_ENV), '--count is given twice');
  });

  test('a switch refuses a value other than true/false', () => {
    usageError(() => parseArgs(['--verbose=yes'], flags, NO_ENV), '--verbose=yes', 'expected no value');
    assert.equal(parseArgs(['--verbose=false'], flags, NO_ENV).values.verbose, false);
  });

  test('an invalid environment value names the variable', () => {
    usageError(
      () => parseArgs([], flags, { TEST_COUNT: 'many' }),
      'TEST_COUNT "many"',
      'expected a whole number from 1 to 10',
    );
  });

  test('flag names are kebab-case forms of the keys', () => {
    assert.equal(flagName('settleTimeout'), '--settle-timeout');
    assert.equal(flagName('nodes'), '--nodes');
  });
});

describe('durations', () => {
  test('take a unit, and a bare number is in the given unit', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('15s'), 15_000);
    assert.equal(parseDuration('10m'), 600_000);
    assert.equal(parseDuration('1.5h'), 5_400_000);
    assert.equal(parseDuration('2'), 120_000);
    assert.equal(parseDuration('2', 's'), 2000);
    assert.equal(parseDuration('0.5m'), 30_000);
  });

  test('refuse anything else, saying what a bare number means', () => {
    for (const text of ['', 'abc', '10x', '-5s', '1e3', '5 minutes']) {
      assert.throws(
        () => parseDuration(text),
        /expected a duration such as 500ms, 15s, 10m or 1h \(a bare number means minutes\)/,
      );
    }
  });

  test('format back readably', () => {
    assert.equal(formatDuration(250), '250ms');
    assert.equal(formatDuration(1500), '1.5s');
    assert.equal(formatDuration(90_000), '1m30s');
    assert.equal(formatDuration(3_600_000), '1h');
  });
});

describe('mccache stress arguments', () => {
  test('defaults: 3 nodes, 60 s, 200 keys, 10 ms aperture, small values, no tantrum, pulse 5 s', () => {
    const options = stress([]);
    assert.equal(options.nodes, 3);
    assert.equal(options.durationMs, 60_000);
    assert.equal(options.keys, 200);
    assert.equal(options.apertureMs, 10);
    assert.equal(options.mix, 1);
    assert.equal(options.tantrum, 0);
    assert.equal(options.ttl, 3600);
    assert.equal(options.max, 256);
    assert.equal(options.size, 8_388_608);
    assert.equal(options.pulse, 5);
    assert.equal(options.pulseSource, 'default');
    assert.equal(options.mode, 1);
    assert.deepEqual(options.cryptoKeys, []);
    assert.equal(options.cluster, 'mccache');
    assert.equal(options.transport, 'multicast');
    assert.equal(options.natsUrl, undefined);
    assert.equal(options.netns, false);
    assert.equal(options.lossPercent, 0);
    assert.equal(options.partitionMs, null);
    assert.equal(options.kill, false);
    assert.equal(options.settleTimeoutMs, 30_000);
    assert.match(options.out, /stress-report-\d{8}-\d{6}$/);
    assert.ok(Number.isInteger(options.seed));
  });

  test('every flag is read', () => {
    const key = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
    const options = stress([
      '--nodes=9',
      '--duration=15s',
      '--keys=50',
      '--aperture=0.001',
      '--mix=3',
      '--tantrum=10',
      '--ttl=0',
      '--max=1000',
      '--size=65536',
      '--pulse=2',
      '--mode=0',
      `--crypto=${key}`,
      '--cluster=blue',
      '--transport=nats',
      '--nats-url=nats://10.0.0.5:4222,nats://10.0.0.6:4222',
      '--seed=42',
      '--settle=45',
      '--out=/tmp/x',
    ]);
    assert.deepEqual(
      { ...options },
      {
        nodes: 9,
        durationMs: 15_000,
        keys: 50,
        apertureMs: 1,
        mix: 3,
        tantrum: 10,
        ttl: 0,
        max: 1000,
        size: 65536,
        pulse: 2,
        pulseSource: 'flag',
        mode: 0,
        cryptoKeys: [key],
        cluster: 'blue',
        transport: 'nats',
        natsUrl: 'nats://10.0.0.5:4222,nats://10.0.0.6:4222',
        netns: false,
        lossPercent: 0,
        partitionMs: null,
        kill: false,
        seed: 42,
        settleTimeoutMs: 45_000,
        out: '/tmp/x',
      },
    );
  });

  test("the seed's TEST_* variables (and MCCACHE_*) work, and flags win over them", () => {
    const env = {
      TEST_CLUSTER_SIZE: '5',
      TEST_RUN_DURATION: '2',
      TEST_KEY_ENTRIES: '100',
      TEST_APERTURE: '0.05',
      TEST_DATA_SIZE_MIX: '2',
      TEST_MONKEY_TANTRUM: '3',
      TEST_RANDOM_SEED: '17',
      MCCACHE_CACHE_PULSE: '10',
      MCCACHE_CACHE_TTL: '60',
    };
    const options = stress([], env);
    assert.equal(options.nodes, 5);
    assert.equal(options.durationMs, 120_000, 'TEST_RUN_DURATION is in minutes, as in the seed');
    assert.equal(options.keys, 100);
    assert.equal(options.apertureMs, 50);
    assert.equal(options.mix, 2);
    assert.equal(options.tantrum, 3);
    assert.equal(options.seed, 17);
    assert.equal(options.pulse, 10);
    assert.equal(options.pulseSource, 'env');
    assert.equal(options.ttl, 60);
    assert.equal(options.settleTimeoutMs, 40_000, 'four pulses');
    assert.equal(stress(['--nodes', '4', '--duration', '30s'], env).nodes, 4);
    assert.equal(stress(['--nodes', '4', '--duration', '30s'], env).durationMs, 30_000);
  });

  test('--crypto auto generates a Fernet key', () => {
    const [key, ...rest] = stress(['--crypto', 'auto']).cryptoKeys;
    assert.match(key!, /^[A-Za-z0-9_-]{43}=$/);
    assert.deepEqual(rest, []);
  });

  // One invalid value per flag: the error names the flag, the value, and what is expected.
  const invalid: Array<[string[], string]> = [
    [['--nodes', 'abc'], 'expected a whole number from 2 to 32'],
    [['--nodes', '1'], 'expected a whole number from 2 to 32'],
    [['--nodes', '33'], 'expected a whole number from 2 to 32'],
    [['--nodes', '2.5'], 'expected a whole number from 2 to 32'],
    [
      ['--duration', '10x'],
      'expected a duration such as 500ms, 15s, 10m or 1h (a bare number means minutes)',
    ],
    [['--duration', '50ms'], 'expected a duration from 100ms to'],
    [['--keys', '0'], 'expected a whole number from 1 to 1000000'],
    [['--aperture', '0'], 'expected a number of seconds from 0.00005 to 15'],
    [['--aperture', 'fast'], 'expected a number of seconds from 0.00005 to 15'],
    [['--aperture', '16'], 'expected a number of seconds from 0.00005 to 15'],
    [['--mix', '4'], 'expected one of 1, 2, 3'],
    [['--tantrum', '-1'], 'expected a number from 0 to 90'],
    [['--tantrum', '95'], 'expected a number from 0 to 90'],
    [['--ttl', '-5'], 'expected a number of seconds from 0 to'],
    [['--max', '0'], 'expected a whole number from 1 to'],
    [['--size', '1.5'], 'expected a whole number from 1 to'],
    [['--pulse', '0'], 'expected a number of seconds above 0 and at most 86400'],
    [['--mode', '2'], 'expected one of 0, 1'],
    [['--crypto', 'secret'], 'expected auto or a Fernet key'],
    [['--cluster', 'x'.repeat(65)], 'expected a cluster name of at most 64 characters'],
    [['--transport', 'tcp'], 'expected one of multicast, unicast, nats'],
    [['--nats-url', 'http://x y'], 'expected nats://host:port (comma-separated for several servers)'],
    [['--loss', '95'], 'expected a number from 0 to 90'],
    [['--loss', 'some'], 'expected a number from 0 to 90'],
    [
      ['--partition', '10x'],
      'expected a duration such as 500ms, 15s, 10m or 1h (a bare number means seconds)',
    ],
    [['--partition', '50ms'], 'expected a duration from 100ms to'],
    [['--seed', '-1'], 'expected a whole number from 0 to 4294967295'],
    [['--settle', '500ms'], 'expected a duration from 1s to'],
    [['--out', ''], 'expected a non-empty value'],
  ];
  for (const [argv, expected] of invalid) {
    test(`refuses ${argv.join(' ')}`, () => {
      usageError(() => stress(argv), `${argv[0]} ${JSON.stringify(argv[1])}:`, expected);
    });
  }

  // Switches take no value: anything but true/false after = is refused.
  const invalidSwitches = ['--netns', '--kill'];
  for (const name of invalidSwitches) {
    test(`refuses ${name}=maybe`, () => {
      usageError(() => stress([`${name}=maybe`]), `${name}=maybe: expected no value (or true/false)`);
    });
  }

  test('every stress flag has an invalid-value case above', () => {
    const covered = new Set([...invalid.map(([argv]) => argv[0]), ...invalidSwitches]);
    for (const key of Object.keys(STRESS_FLAGS))
      assert.ok(covered.has(flagName(key)), `${flagName(key)} untested`);
  });

  test('an invalid TEST_* variable is named', () => {
    usageError(
      () => stress([], { TEST_CLUSTER_SIZE: 'lots' }),
      'TEST_CLUSTER_SIZE "lots"',
      'expected a whole number',
    );
    usageError(
      () => stress([], { TEST_RUN_DURATION: '5 min' }),
      'TEST_RUN_DURATION "5 min"',
      'expected a duration',
    );
    usageError(
      () => stress([], { TEST_DATA_SIZE_MIX: '0' }),
      'TEST_DATA_SIZE_MIX "0"',
      'expected one of 1, 2, 3',
    );
  });

  test('--transport picks multicast, unicast or nats; --nats-url goes with nats only', () => {
    assert.equal(stress(['--transport', 'unicast']).transport, 'unicast');
    assert.equal(stress(['--transport', 'unicast']).natsUrl, undefined);
    const nats = stress(['--transport', 'nats']);
    assert.equal(nats.transport, 'nats');
    assert.equal(nats.natsUrl, undefined, 'no URL: the run starts its own nats-server');
    for (const url of [
      'nats://127.0.0.1:4222',
      '127.0.0.1:4222',
      'tls://user:secret@nats.example.net:4443',
    ]) {
      assert.equal(stress(['--transport', 'nats', '--nats-url', url]).natsUrl, url);
    }
    usageError(
      () => stress(['--nats-url', 'nats://127.0.0.1:4222']),
      '--nats-url is for --transport nats, not multicast',
    );
    usageError(
      () => stress(['--transport', 'unicast', '--nats-url', 'nats://127.0.0.1:4222']),
      'not unicast',
      'add --transport nats',
    );
  });

  test('--netns with --loss, --partition and --kill', () => {
    const options = stress(['--netns', '--duration', '6s', '--loss', '10', '--partition', '2', '--kill']);
    assert.equal(options.netns, true);
    assert.equal(options.lossPercent, 10);
    assert.equal(options.partitionMs, 2000, 'a bare --partition is in seconds');
    assert.equal(options.kill, true);
    assert.equal(options.transport, 'multicast');
    assert.equal(stress(['--netns', '--loss', '2.5']).lossPercent, 2.5);
    assert.equal(stress(['--netns', '--partition', '1500ms']).partitionMs, 1500);
    assert.equal(stress(['--netns', '--transport', 'unicast']).transport, 'unicast');
    assert.equal(stress(['--netns']).lossPercent, 0, 'namespaces alone inject nothing');
  });

  test('--loss and --partition need --netns; --kill works without it', () => {
    usageError(() => stress(['--loss', '10']), '--loss needs --netns', '--tantrum');
    usageError(() => stress(['--loss', '0']), '--loss needs --netns');
    usageError(() => stress(['--partition', '5s']), '--partition needs --netns');
    const kill = stress(['--kill']);
    assert.equal(kill.kill, true);
    assert.equal(kill.netns, false);
    assert.equal(stress(['--kill', '--transport', 'nats']).kill, true);
  });

  test('--netns refuses the nats transport, saying why', () => {
    usageError(
      () => stress(['--netns', '--transport', 'nats']),
      '--netns works with --transport multicast or unicast, not nats',
      'cannot reach a nats-server',
    );
  });

  test('a partition must heal before the load ends: it starts a third of the way in', () => {
    assert.equal(stress(['--netns', '--duration', '6s', '--partition', '4s']).partitionMs, 4000);
    usageError(
      () => stress(['--netns', '--duration', '6s', '--partition', '4.5s']),
      '--partition 4.5s does not fit in a 6s load',
      'at 2s',
      'expected at most 4s',
    );
    assert.equal(stress(['--netns', '--duration', '60s', '--partition', '40']).partitionMs, 40_000);
    usageError(() => stress(['--netns', '--partition', '41']), 'expected at most 40s');
    // TEST_RUN_DURATION counts too (minutes).
    usageError(
      () => stress(['--netns', '--partition', '90s'], { TEST_RUN_DURATION: '2' }),
      'does not fit in a 2m load',
      'expected at most 1m20s',
    );
  });

  test('positional arguments and unknown flags are refused', () => {
    usageError(() => stress(['fast']), 'unexpected argument "fast"');
    usageError(() => stress(['--node', '3']), 'unknown flag --node', 'did you mean --nodes?');
  });
});

describe('mccache demo and monitor arguments', () => {
  test('demo takes --nodes from 2 to 9', () => {
    assert.deepEqual(demoOptionsFrom([], NO_ENV), { nodes: 3 });
    assert.deepEqual(demoOptionsFrom(['--nodes', '4'], NO_ENV), { nodes: 4 });
    usageError(
      () => demoOptionsFrom(['--nodes', '1'], NO_ENV),
      '--nodes "1"',
      'expected a whole number from 2 to 9',
    );
    usageError(() => demoOptionsFrom(['now'], NO_ENV), 'unexpected argument "now"');
    assert.ok(Object.keys(DEMO_FLAGS).length > 0);
  });

  test('monitor reads the group, port, interface, cluster and key like a member does', () => {
    const options = monitorOptionsFrom([], {
      MCCACHE_MULTICAST_IP: '239.1.2.3:5000',
      MCCACHE_MULTICAST_IF: '127.0.0.1',
      MCCACHE_CLUSTER: 'blue',
    });
    assert.notEqual(options, 'help');
    assert.deepEqual(options, {
      group: '239.1.2.3',
      port: 5000,
      interfaceAddress: '127.0.0.1',
      cluster: 'blue',
      cryptoKeys: [],
      all: false,
      count: undefined,
      durationMs: undefined,
    });
    const flagged = monitorOptionsFrom(
      ['--group', '239.9.9.9', '--port', '4001', '--all', '--count', '5'],
      NO_ENV,
    );
    assert.notEqual(flagged, 'help');
    if (flagged !== 'help') {
      assert.equal(flagged.group, '239.9.9.9');
      assert.equal(flagged.port, 4001);
      assert.equal(flagged.all, true);
      assert.equal(flagged.count, 5);
    }
  });

  test('monitor refuses a bad group, interface, key or a port given twice', () => {
    usageError(
      () => monitorOptionsFrom(['--group', '10.0.0.1'], NO_ENV),
      '--group "10.0.0.1"',
      'multicast address',
    );
    usageError(
      () => monitorOptionsFrom(['--group', '239.1.1.1:0'], NO_ENV),
      'expected a port from 1 to 65535',
    );
    usageError(
      () => monitorOptionsFrom(['--interface', 'eth0'], NO_ENV),
      '--interface "eth0"',
      'IPv4 address',
    );
    usageError(
      () => monitorOptionsFrom(['--crypto', 'abc'], NO_ENV),
      '--crypto "abc"',
      'expected Fernet keys',
    );
    usageError(
      () => monitorOptionsFrom(['--group', '239.1.1.1:4000', '--port', '4001'], NO_ENV),
      'already gives a port',
    );
    usageError(() => monitorOptionsFrom(['--count', '0'], NO_ENV), '--count "0"');
    assert.ok(Object.keys(MONITOR_FLAGS).length > 0);
  });
});

describe('the mccache command', () => {
  const run = (...argv: string[]) =>
    spawnSync(process.execPath, ['--import', TSX_LOADER, MAIN, ...argv], {
      encoding: 'utf8',
      timeout: 60_000,
    });

  test('--help lists every command and every flag', () => {
    const result = run('--help');
    assert.equal(result.status, 0, result.stderr);
    for (const command of ['demo', 'stress', 'monitor', 'mtu', 'hops']) {
      assert.match(result.stdout, new RegExp(`^  ${command} `, 'm'), `command ${command}`);
    }
    for (const flags of [STRESS_FLAGS, DEMO_FLAGS, MONITOR_FLAGS]) {
      for (const key of Object.keys(flags)) assert.ok(result.stdout.includes(flagName(key)), flagName(key));
    }
    for (const variable of [
      'TEST_CLUSTER_SIZE',
      'TEST_RUN_DURATION',
      'TEST_MONKEY_TANTRUM',
      'TEST_APERTURE',
    ]) {
      assert.ok(result.stdout.includes(variable), variable);
    }
  });

  test('a bad flag exits 2 with the reason on stderr; an unknown command too', () => {
    const bad = run('stress', '--nodes', 'zero');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /mccache stress: --nodes "zero": expected a whole number from 2 to 32/);
    assert.equal(bad.stdout, '');
    const unknown = run('stres');
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown command "stres": expected one of demo, stress, monitor, mtu, hops/);
  });
});
