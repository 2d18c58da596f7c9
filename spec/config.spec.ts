import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  CACHE_OPTION_NAMES,
  ConfigError,
  cacheSettingsOf,
  DEFAULTS,
  resolveSettings,
  unknownEnvironmentVariables,
  unknownSettingWarnings,
} from '../lib/config.js';

const folders: string[] = [];
after(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

/** A temporary working directory, with a package.json holding `section` as "mccache" if given. */
function workingDirectory(section?: Record<string, unknown>): string {
  const folder = mkdtempSync(join(tmpdir(), 'mccache-config-'));
  folders.push(folder);
  if (section) writeFileSync(join(folder, 'package.json'), JSON.stringify({ name: 'app', mccache: section }));
  return folder;
}

const VALID_KEY = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
const OTHER_KEY = 'jkjGBXV8ERJrMFmZv0oP8ATu-fkqKcvDELCU5dC0sRA=';

describe('defaults', () => {
  test("match McCache for Python's configuration table", () => {
    const settings = resolveSettings({ env: {}, cwd: workingDirectory() });
    assert.equal(settings.ttl, 3600);
    assert.equal(settings.max, 256);
    assert.equal(settings.mode, 1);
    assert.equal(settings.size, 8_388_608);
    assert.equal(settings.pulse, 300);
    assert.deepEqual(settings.cryptoKeys, []);
    assert.equal(settings.packetMtu, 'auto');
    assert.equal(settings.multicastIp, '224.0.0.3');
    assert.equal(settings.multicastPort, 4000);
    assert.equal(settings.multicastHops, 3);
    assert.equal(settings.callbackWin, 5);
    assert.equal(settings.daemonSleep, 1);
    assert.equal(settings.logFilename, './log/mccache.log');
    assert.equal(settings.logFormat, '');
    assert.equal(settings.tantrum, 0);
  });

  test('the new settings default to this machine only, the cluster "mccache" and level warn', () => {
    const settings = resolveSettings({ env: {}, cwd: workingDirectory() });
    assert.equal(settings.multicastIf, '127.0.0.1');
    assert.equal(settings.cluster, 'mccache');
    assert.equal(settings.logLevel, 'warn');
  });

  test('the result is frozen', () => {
    const settings = resolveSettings({ env: {}, cwd: workingDirectory() });
    assert.equal(Object.isFrozen(settings), true);
  });
});

describe('precedence: defaults < package.json < environment < options', () => {
  test('each source overrides the one below it, setting by setting', () => {
    const cwd = workingDirectory({ cache_ttl: 900, cache_max: 10, packet_mtu: 1400 });
    const fromFile = resolveSettings({ env: {}, cwd });
    assert.equal(fromFile.ttl, 900);
    assert.equal(fromFile.max, 10);
    assert.equal(fromFile.packetMtu, 1400);
    assert.equal(fromFile.size, DEFAULTS.size);

    const env = { MCCACHE_CACHE_TTL: '600', MCCACHE_PACKET_MTU: '1200' };
    const fromEnv = resolveSettings({ env, cwd });
    assert.equal(fromEnv.ttl, 600);
    assert.equal(fromEnv.packetMtu, 1200);
    assert.equal(fromEnv.max, 10, 'package.json still applies where the environment is silent');

    const fromOptions = resolveSettings({ env, cwd, overrides: { ttl: 30 } });
    assert.equal(fromOptions.ttl, 30);
    assert.equal(fromOptions.packetMtu, 1200);
    assert.equal(fromOptions.max, 10);
  });

  test('options set to undefined do not override', () => {
    const settings = resolveSettings({
      env: { MCCACHE_CACHE_TTL: '60' },
      cwd: workingDirectory(),
      overrides: { ttl: undefined } as never,
    });
    assert.equal(settings.ttl, 60);
  });

  test('a package.json without an "mccache" object, or none at all, is fine', () => {
    const folder = workingDirectory();
    writeFileSync(join(folder, 'package.json'), '{"name":"x","mccache":"not an object"}');
    assert.equal(resolveSettings({ env: {}, cwd: folder }).ttl, 3600);
    const broken = workingDirectory();
    writeFileSync(join(broken, 'package.json'), '{ not json');
    assert.equal(resolveSettings({ env: {}, cwd: broken }).ttl, 3600);
  });

  test('every MCCACHE_* variable of the table sets its setting', () => {
    const env = {
      MCCACHE_CACHE_TTL: '1',
      MCCACHE_CACHE_MAX: '2',
      MCCACHE_CACHE_MODE: '0',
      MCCACHE_CACHE_SIZE: '3000',
      MCCACHE_CACHE_PULSE: '4',
      MCCACHE_CRYPTO_KEY: VALID_KEY,
      MCCACHE_PACKET_MTU: '9000',
      MCCACHE_MULTICAST_IP: '239.1.2.3',
      MCCACHE_MULTICAST_PORT: '4100',
      MCCACHE_MULTICAST_HOPS: '7',
      MCCACHE_MULTICAST_IF: '127.0.0.2',
      MCCACHE_CALLBACK_WIN: '8',
      MCCACHE_DAEMON_SLEEP: '0.5',
      MCCACHE_LOG_FILENAME: '/tmp/x.log',
      MCCACHE_LOG_FORMAT: '{level} {message}',
      MCCACHE_LOG_LEVEL: 'debug',
      MCCACHE_CLUSTER: 'blue',
      TEST_MONKEY_TANTRUM: '5',
    };
    const s = resolveSettings({ env, cwd: workingDirectory() });
    assert.deepEqual(
      [
        s.ttl,
        s.max,
        s.mode,
        s.size,
        s.pulse,
        s.cryptoKeys,
        s.packetMtu,
        s.multicastIp,
        s.multicastPort,
        s.multicastHops,
        s.multicastIf,
        s.callbackWin,
        s.daemonSleep,
        s.logFilename,
        s.logFormat,
        s.logLevel,
        s.cluster,
        s.tantrum,
      ],
      [
        1,
        2,
        0,
        3000,
        4,
        [VALID_KEY],
        9000,
        '239.1.2.3',
        4100,
        7,
        '127.0.0.2',
        8,
        0.5,
        '/tmp/x.log',
        '{level} {message}',
        'debug',
        'blue',
        5,
      ],
    );
  });

  test('cacheSettingsOf picks exactly the per-cache options', () => {
    const settings = resolveSettings({ env: { MCCACHE_CACHE_TTL: '9' }, cwd: workingDirectory() });
    const cache = cacheSettingsOf(settings);
    assert.deepEqual(Object.keys(cache).sort(), [...CACHE_OPTION_NAMES].sort());
    assert.equal(cache.ttl, 9);
  });
});

describe('multicast address', () => {
  test('MCCACHE_MULTICAST_IP may carry a port, which wins over MCCACHE_MULTICAST_PORT', () => {
    const settings = resolveSettings({
      env: { MCCACHE_MULTICAST_IP: '224.0.0.5:4567', MCCACHE_MULTICAST_PORT: '4001' },
      cwd: workingDirectory(),
    });
    assert.equal(settings.multicastIp, '224.0.0.5');
    assert.equal(settings.multicastPort, 4567);
  });

  test('a bad port inside MCCACHE_MULTICAST_IP is reported with the whole value and what is wrong', () => {
    const cases: [string, string][] = [
      ['239.1.1.1:99999', 'MCCACHE_MULTICAST_IP="239.1.1.1:99999": port 99999 is out of range 1-65535'],
      ['239.1.1.1:0', 'MCCACHE_MULTICAST_IP="239.1.1.1:0": port 0 is out of range 1-65535'],
      [
        '239.1.1.1:http',
        'MCCACHE_MULTICAST_IP="239.1.1.1:http": port "http" is not a number from 1 to 65535',
      ],
      ['239.1.1.1:', 'MCCACHE_MULTICAST_IP="239.1.1.1:": port "" is not a number from 1 to 65535'],
      [
        '239.1.1.1:4000:1',
        'MCCACHE_MULTICAST_IP="239.1.1.1:4000:1": expected an IPv4 multicast address with an optional :port, such as 239.1.1.1:4000',
      ],
    ];
    for (const [value, message] of cases) {
      assert.throws(
        () => resolveSettings({ env: { MCCACHE_MULTICAST_IP: value }, cwd: workingDirectory() }),
        {
          name: 'ConfigError',
          message,
        },
      );
    }
  });

  test('a bad address before a good port is reported with the whole value', () => {
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_MULTICAST_IP: '10.0.0.1:4000' }, cwd: workingDirectory() }),
      {
        name: 'ConfigError',
        message:
          'MCCACHE_MULTICAST_IP="10.0.0.1:4000": expected an IPv4 multicast address (224.0.0.0-239.255.255.255)',
      },
    );
  });

  test('the same holds for multicast_ip in package.json', () => {
    assert.throws(
      () => resolveSettings({ env: {}, cwd: workingDirectory({ multicast_ip: '239.1.1.1:70000' }) }),
      {
        name: 'ConfigError',
        message: 'package.json mccache.multicast_ip="239.1.1.1:70000": port 70000 is out of range 1-65535',
      },
    );
  });
});

describe('bad values name the variable, the value and what is expected', () => {
  const cases: [Record<string, string>, string][] = [
    [{ MCCACHE_CACHE_TTL: 'abc' }, 'MCCACHE_CACHE_TTL="abc": expected a number of seconds (0 for no expiry)'],
    [{ MCCACHE_CACHE_TTL: '' }, 'MCCACHE_CACHE_TTL="": expected a number of seconds (0 for no expiry)'],
    [
      { MCCACHE_CACHE_TTL: '-5' },
      'MCCACHE_CACHE_TTL="-5": expected a number of seconds (0 for no expiry) of at least 0',
    ],
    [
      { MCCACHE_MULTICAST_IP: '10.0.0.1' },
      'MCCACHE_MULTICAST_IP="10.0.0.1": expected an IPv4 multicast address (224.0.0.0-239.255.255.255)',
    ],
    [
      { MCCACHE_MULTICAST_IP: 'not-an-ip' },
      'MCCACHE_MULTICAST_IP="not-an-ip": expected an IPv4 multicast address (224.0.0.0-239.255.255.255)',
    ],
    [
      { MCCACHE_PACKET_MTU: '500' },
      'MCCACHE_PACKET_MTU="500": expected a packet size in bytes of at least 1200',
    ],
    [{ MCCACHE_CACHE_MAX: '1.5' }, 'MCCACHE_CACHE_MAX="1.5": expected a whole number of entries'],
    [{ MCCACHE_CACHE_MODE: '2' }, 'MCCACHE_CACHE_MODE="2": expected 0 or 1'],
    [{ MCCACHE_MULTICAST_HOPS: '0' }, 'MCCACHE_MULTICAST_HOPS="0": expected a hop count of at least 1'],
    [
      { MCCACHE_MULTICAST_IF: 'eth0' },
      'MCCACHE_MULTICAST_IF="eth0": expected the IPv4 address of a local interface',
    ],
    [
      { MCCACHE_LOG_LEVEL: 'loud' },
      'MCCACHE_LOG_LEVEL="loud": expected one of error, warn, info, debug, silly',
    ],
    [
      { MCCACHE_DAEMON_SLEEP: '0' },
      'MCCACHE_DAEMON_SLEEP="0": expected a number of seconds of at least 0.001',
    ],
    [{ TEST_MONKEY_TANTRUM: '101' }, 'TEST_MONKEY_TANTRUM="101": expected a percentage from 0 to 100'],
  ];
  for (const [env, message] of cases) {
    test(`${Object.entries(env)[0]!.join('=')}`, () => {
      assert.throws(() => resolveSettings({ env, cwd: workingDirectory() }), {
        name: 'ConfigError',
        message,
      });
    });
  }

  test('a bad crypto key is named without echoing the secret', () => {
    const secret = 'tooshort-secret';
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_CRYPTO_KEY: secret }, cwd: workingDirectory() }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message.startsWith('MCCACHE_CRYPTO_KEY=(hidden): expected Fernet keys') &&
        !error.message.includes(secret),
    );
  });

  test('several crypto keys, comma-separated, are accepted in order', () => {
    const settings = resolveSettings({
      env: { MCCACHE_CRYPTO_KEY: ` ${VALID_KEY} , ${OTHER_KEY}` },
      cwd: workingDirectory(),
    });
    assert.deepEqual(settings.cryptoKeys, [VALID_KEY, OTHER_KEY]);
  });

  test('bad package.json values are named by their key', () => {
    assert.throws(() => resolveSettings({ env: {}, cwd: workingDirectory({ cache_max: 'lots' }) }), {
      name: 'ConfigError',
      message: 'package.json mccache.cache_max="lots": expected a whole number of entries',
    });
  });

  test('bad options are named as options; unknown ones are refused', () => {
    assert.throws(
      () => resolveSettings({ env: {}, cwd: workingDirectory(), overrides: { ttl: -1 } }),
      /^ConfigError: option ttl=-1: expected/,
    );
    assert.throws(
      () => resolveSettings({ env: {}, cwd: workingDirectory(), overrides: { tll: 1 } as never }),
      /unknown option "tll"/,
    );
    assert.throws(
      () => resolveSettings({ env: {}, cwd: workingDirectory(), overrides: { toString: 1 } as never }),
      /unknown option "toString"/,
    );
  });

  test('ConfigError is a TypeError', () => {
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_CACHE_TTL: 'abc' }, cwd: workingDirectory() }),
      TypeError,
    );
  });
});

describe('unknown MCCACHE_* variables', () => {
  test('are listed once per process; known variables and other prefixes are not', () => {
    const env = {
      MCCACHE_TTL_TYPO_SPEC: '900',
      MCCACHE_CACHE_TTL: '900',
      MCCACHE_PEERS: '',
      HOME: '/root',
      XMCCACHE_NOPE: '1',
    };
    assert.deepEqual(unknownEnvironmentVariables(env), ['MCCACHE_TTL_TYPO_SPEC']);
    assert.deepEqual(unknownEnvironmentVariables(env), [], 'warned once');
    assert.deepEqual(unknownEnvironmentVariables({ ...env, MCCACHE_MTU_TYPO_SPEC: '1' }), [
      'MCCACHE_MTU_TYPO_SPEC',
    ]);
  });
});

describe('unknown package.json keys', () => {
  test('are warned about once per process, naming the closest valid key', () => {
    const cwd = workingDirectory({ cahce_size: 1000, cache_ttl: 5 });
    assert.deepEqual(unknownSettingWarnings({ env: {}, cwd }), [
      'unknown package.json key mccache.cahce_size ignored (did you mean cache_size?)',
    ]);
    assert.deepEqual(unknownSettingWarnings({ env: {}, cwd }), [], 'warned once');
    assert.equal(resolveSettings({ env: {}, cwd }).size, DEFAULTS.size, 'the misspelt key changes nothing');
  });

  test('option names and environment variable names point to their package.json key', () => {
    const cwd = workingDirectory({ ttl: 60, logFilename: '/tmp/a.log', MCCACHE_LOG_LEVEL: 'info' });
    assert.deepEqual(unknownSettingWarnings({ env: {}, cwd }), [
      'unknown package.json key mccache.ttl ignored (did you mean cache_ttl?)',
      'unknown package.json key mccache.logFilename ignored (did you mean log_filename?)',
      'unknown package.json key mccache.MCCACHE_LOG_LEVEL ignored (did you mean log_level?)',
    ]);
  });

  test('a key close to no valid one lists the valid keys; "//" comment keys are not warned about', () => {
    const cwd = workingDirectory({ colour: 'blue', '//': 'a comment' });
    const warnings = unknownSettingWarnings({ env: {}, cwd });
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      /^unknown package\.json key mccache\.colour ignored \(expected one of cache_ttl, /,
    );
    for (const key of ['cache_max', 'multicast_ip', 'unicast_bind', 'log_filename', 'test_monkey_tantrum'])
      assert.ok(warnings[0]!.includes(key), key);
  });

  test('unknown MCCACHE_* variables come through the same warnings, with the closest variable', () => {
    const warnings = unknownSettingWarnings({
      env: { MCCACHE_CACHE_TLL: '1', MCCACHE_NOTHING_LIKE_IT: '1' },
      cwd: workingDirectory(),
    });
    assert.equal(
      warnings[0],
      'unknown environment variable MCCACHE_CACHE_TLL ignored (did you mean MCCACHE_CACHE_TTL?)',
    );
    assert.match(
      warnings[1]!,
      /^unknown environment variable MCCACHE_NOTHING_LIKE_IT ignored \(expected one of MCCACHE_CACHE_TTL, /,
    );
    assert.equal(warnings.length, 2);
  });

  test('no package.json, or no "mccache" object in it, gives no warning', () => {
    assert.deepEqual(unknownSettingWarnings({ env: {}, cwd: workingDirectory() }), []);
    const folder = workingDirectory();
    writeFileSync(join(folder, 'package.json'), '{"name":"x","mccache":["cache_tll"]}');
    assert.deepEqual(unknownSettingWarnings({ env: {}, cwd: folder }), []);
  });
});

describe('transport settings', () => {
  test('MCCACHE_PEERS entries must be host:port with a real IPv4 address or a DNS name', () => {
    for (const bad of ['10.0.0.999:4000', 'host:70000', 'host', 'host:0']) {
      assert.throws(
        () => resolveSettings({ env: { MCCACHE_PEERS: bad }, cwd: workingDirectory() }),
        (error: Error) => error instanceof ConfigError && error.message.startsWith('MCCACHE_PEERS='),
        bad,
      );
    }
    const settings = resolveSettings({
      env: { MCCACHE_PEERS: '10.0.0.1:4000, orders-mccache.shop.svc:4000,pod_1:4001' },
      cwd: workingDirectory(),
    });
    assert.deepEqual(settings.peers, ['10.0.0.1:4000', 'orders-mccache.shop.svc:4000', 'pod_1:4001']);
  });

  test('MCCACHE_PEERS together with MCCACHE_NATS_URL is refused, naming both', () => {
    assert.throws(
      () =>
        resolveSettings({
          env: { MCCACHE_PEERS: '10.0.0.1:4000', MCCACHE_NATS_URL: 'nats://127.0.0.1:4222' },
          cwd: workingDirectory(),
        }),
      /MCCACHE_PEERS or MCCACHE_NATS_URL, not both/,
    );
  });

  test('MCCACHE_UNICAST_BIND must be address:port', () => {
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_UNICAST_BIND: 'everywhere' }, cwd: workingDirectory() }),
      /MCCACHE_UNICAST_BIND="everywhere": expected address:port/,
    );
  });

  test('MCCACHE_UNICAST_BIND needs an IPv4 address and a port from 1 to 65535', () => {
    const expected = 'expected address:port, such as 0.0.0.0:4000';
    const cases: [string, string][] = [
      ['999.1.1.1:4000', `999.1.1.1 is not an IPv4 address; ${expected}`],
      ['localhost:4000', `localhost is not an IPv4 address; ${expected}`],
      [':4000', `(empty) is not an IPv4 address; ${expected}`],
      ['127.0.0.1:70000', `port 70000 is out of range 1-65535; ${expected}`],
      ['127.0.0.1:0', `port 0 is out of range 1-65535; ${expected}`],
      ['127.0.0.1:x', `port "x" is not a number from 1 to 65535; ${expected}`],
      ['127.0.0.1:4000:1', expected],
    ];
    for (const [value, problem] of cases) {
      assert.throws(
        () => resolveSettings({ env: { MCCACHE_UNICAST_BIND: value }, cwd: workingDirectory() }),
        {
          name: 'ConfigError',
          message: `MCCACHE_UNICAST_BIND=${JSON.stringify(value)}: ${problem}`,
        },
      );
    }
    for (const good of ['0.0.0.0:4000', '127.0.0.1:1', '10.1.2.3:65535', '']) {
      const settings = resolveSettings({ env: { MCCACHE_UNICAST_BIND: good }, cwd: workingDirectory() });
      assert.equal(settings.unicastBind, good);
    }
    assert.throws(() => resolveSettings({ env: {}, cwd: workingDirectory({ unicast_bind: 4000 }) }), {
      name: 'ConfigError',
      message: `package.json mccache.unicast_bind=4000: ${expected}`,
    });
  });
});
