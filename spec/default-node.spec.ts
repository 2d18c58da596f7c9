/**
 * The package-level functions (getCache, whenReady, ...) act on one default member per process,
 * configured from process.env and the working directory. node --test runs this file in a process of
 * its own, so it may set process.env.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { getCache, getClusterChecksum, getClusterMetrics, shutdown, whenReady } from '../lib/index.js';

const folders: string[] = [];
after(async () => {
  await shutdown();
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

function temporaryFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'mccache-default-node-'));
  folders.push(folder);
  return folder;
}

const BAD_TTL = {
  name: 'ConfigError',
  message: 'MCCACHE_CACHE_TTL="abc": expected a number of seconds (0 for no expiry)',
};

/** Calls `start` and checks that it returns a Promise rather than throwing. */
function promiseFrom<T>(start: () => Promise<T>): Promise<T> {
  let promise: Promise<T> | undefined;
  assert.doesNotThrow(() => {
    promise = start();
  });
  assert.ok(promise instanceof Promise);
  return promise;
}

describe('with an invalid configuration', () => {
  afterEach(() => {
    delete process.env.MCCACHE_CACHE_TTL;
    delete process.env.MCCACHE_LOG_FILENAME;
  });

  test('whenReady() rejects with the ConfigError instead of throwing, so .catch() sees it', async () => {
    process.env.MCCACHE_CACHE_TTL = 'abc';
    const seen = await promiseFrom(whenReady).then(
      () => assert.fail('whenReady() resolved despite MCCACHE_CACHE_TTL="abc"'),
      (error: unknown) => error,
    );
    assert.ok(seen instanceof Error);
    assert.deepEqual({ name: seen.name, message: seen.message }, BAD_TTL);
  });

  test('getClusterMetrics() and getClusterChecksum() reject likewise', async () => {
    process.env.MCCACHE_CACHE_TTL = 'abc';
    await assert.rejects(
      promiseFrom(() => getClusterMetrics()),
      BAD_TTL,
    );
    await assert.rejects(
      promiseFrom(() => getClusterChecksum()),
      BAD_TTL,
    );
  });

  test('getCache() still throws the ConfigError synchronously', () => {
    process.env.MCCACHE_CACHE_TTL = 'abc';
    assert.throws(() => getCache('users'), BAD_TTL);
  });

  test('a log file whose folder cannot be created is a ConfigError naming MCCACHE_LOG_FILENAME', async () => {
    const plainFile = join(temporaryFolder(), 'hostname');
    writeFileSync(plainFile, 'not a folder');
    const filename = join(plainFile, 'x.log');
    process.env.MCCACHE_LOG_FILENAME = filename;
    const expected = {
      name: 'ConfigError',
      message: new RegExp(`^MCCACHE_LOG_FILENAME="${filename}": cannot create its folder \\(E[A-Z]+: `),
    };
    assert.throws(() => getCache('users'), expected);
    await assert.rejects(promiseFrom(whenReady), expected);
  });
});

describe('once the configuration is fixed', () => {
  test('whenReady() resolves and the default member serves caches', async () => {
    Object.assign(process.env, {
      MCCACHE_CLUSTER: `default-node-spec-${process.pid}`,
      MCCACHE_MULTICAST_PORT: String(20_000 + (process.pid % 20_000)),
      MCCACHE_MULTICAST_IF: '127.0.0.1',
      MCCACHE_LOG_FILENAME: join(temporaryFolder(), 'mccache.log'),
      MCCACHE_HANDLE_SIGNALS: '0',
    });
    await whenReady();
    const users = getCache<string>('users');
    users.u1 = 'Ada';
    assert.equal(users.u1, 'Ada');
  });
});
