import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { storeOf } from '../lib/cache/proxy.js';
import { CacheRegistry, resolveCacheSettings } from '../lib/cache/registry.js';
import type { StoreContext } from '../lib/cache/store.js';
import { HybridLogicalClock, ManualClock } from '../lib/clock.js';
import { type CacheSettings, ConfigError, cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import { silentLog } from '../lib/log.js';

function makeRegistry(defaults: Partial<CacheSettings> = {}, maxCaches?: number, maxRemoteCaches?: number) {
  const clock = new ManualClock();
  const context: StoreContext = {
    clock,
    hlc: new HybridLogicalClock(clock),
    nodeId: 1,
    log: silentLog,
    tombstoneTtlMs: 60_000,
    maxTombstones: 100,
  };
  const registry = new CacheRegistry(
    context,
    { ...cacheSettingsOf(DEFAULTS), ...defaults },
    maxCaches,
    maxRemoteCaches,
  );
  return { registry, clock };
}

describe('one cache per name', () => {
  test('the same name gives the same proxy; other names give other caches', () => {
    const { registry } = makeRegistry();
    const a = registry.cache('a');
    assert.equal(registry.cache('a'), a);
    const b = registry.cache('b');
    assert.notEqual(b, a);
    a.k = 1;
    assert.equal(b.k, undefined);
    assert.equal(registry.store('a'), storeOf(a));
    assert.deepEqual(
      [...registry.stores()].map((s) => s.name),
      ['a', 'b'],
    );
    assert.equal(registry.size, 2);
    assert.equal(registry.store('nope'), undefined);
  });

  test('cache names must be non-empty strings of at most 256 characters', () => {
    const { registry } = makeRegistry();
    assert.throws(() => registry.cache(''), ConfigError);
    assert.throws(() => registry.cache('x'.repeat(257)), /at most 256 characters, got a string of 257/);
    assert.throws(() => registry.cache(42 as unknown as string), /got number/);
    assert.equal(registry.cache('x'.repeat(256)), registry.cache('x'.repeat(256)));
  });
});

describe('options', () => {
  test('options override the defaults for that cache only', () => {
    const { registry, clock } = makeRegistry({ ttl: 100 });
    const short = registry.cache('short', { ttl: 1, max: 2 });
    const plain = registry.cache('plain');
    short.a = 1;
    plain.a = 1;
    short.b = 2;
    short.c = 3;
    assert.deepEqual(Object.keys(short), ['b', 'c']);
    clock.advance(1000);
    assert.equal(short.b, undefined);
    assert.equal(plain.a, 1);
    assert.equal(storeOf(short).settings.ttl, 1);
    assert.equal(storeOf(plain).settings.ttl, 100);
  });

  test('a bad option names the option, its value and what is expected', () => {
    const { registry } = makeRegistry();
    assert.throws(() => registry.cache('c', { ttl: -1 }), {
      name: 'ConfigError',
      message: 'option ttl=-1: expected a number of seconds (0 for no expiry) of at least 0',
    });
    assert.throws(
      () => registry.cache('c', { max: 0 }),
      /^ConfigError: option max=0: expected a whole number/,
    );
    assert.throws(
      () => registry.cache('c', { max: 1.5 }),
      /option max=1.5: expected a whole number of entries/,
    );
    assert.throws(() => registry.cache('c', { mode: 2 as 0 }), /option mode=2: expected 0 or 1/);
    assert.throws(
      () => registry.cache('c', { callback: 'yes' as unknown as undefined }),
      /option callback="yes": expected a function/,
    );
    assert.throws(() => registry.cache('c', { size: 'big' as unknown as number }), /option size="big"/);
    assert.throws(
      () => registry.cache('c', { tll: 5 } as unknown as CacheSettings),
      /unknown cache option "tll": expected one of ttl, max, size, mode, callbackWin, callback, freeze/,
    );
    assert.equal(registry.store('c'), undefined, 'nothing was created');
  });

  test('numeric strings are accepted like environment values', () => {
    const settings = resolveCacheSettings(cacheSettingsOf(DEFAULTS), { ttl: '30' as unknown as number });
    assert.equal(settings.ttl, 30);
  });

  test('opening an open cache again with different options throws a ConfigError naming the conflict', () => {
    const { registry } = makeRegistry();
    const cache = registry.cache('users', { ttl: 60 });
    assert.equal(registry.cache('users'), cache, 'no options: fine');
    assert.equal(registry.cache('users', { ttl: 60 }), cache, 'same options: fine');
    assert.equal(registry.cache('users', { max: DEFAULTS.max }), cache, 'a default restated: fine');
    assert.throws(
      () => registry.cache('users', { ttl: 30 }),
      /cache "users" is already open with ttl=60; getCache was called again with ttl=30/,
    );
    const callback = () => {};
    registry.cache('cb', { callback });
    assert.equal(registry.cache('cb', { callback }), registry.cache('cb'));
    assert.throws(() => registry.cache('cb', { callback: () => {} }), /callback=another function/);
  });
});

describe('caches created by remote changes', () => {
  test('storeForRemote creates a store with the defaults, once', () => {
    const { registry } = makeRegistry({ ttl: 42 });
    const store = registry.storeForRemote('remote');
    assert.equal(registry.storeForRemote('remote'), store);
    assert.equal(store.settings.ttl, 42);
    assert.equal(registry.store('remote'), store);
  });

  test('opening such a cache returns its data and applies the options of the first opening', () => {
    const { registry } = makeRegistry();
    const store = registry.storeForRemote('shared');
    store.set('k', 'from the network');
    const cache = registry.cache('shared', { ttl: 7 });
    assert.equal(cache.k, 'from the network');
    assert.equal(storeOf(cache), store);
    assert.equal(store.settings.ttl, 7);
    assert.throws(() => registry.cache('shared', { ttl: 8 }), /already open with ttl=7/);
  });

  test('names from the network are validated and the number of caches is bounded', () => {
    const { registry } = makeRegistry({}, 3);
    assert.throws(() => registry.storeForRemote(''), ConfigError);
    registry.cache('one');
    registry.storeForRemote('two');
    registry.storeForRemote('three');
    assert.throws(() => registry.storeForRemote('four'), RangeError);
    assert.throws(() => registry.cache('five'), /already holds 3 caches/);
    assert.equal(registry.storeForRemote('two').name, 'two', 'existing caches are still served');
  });

  test('the network alone can create only so many caches; the ones this process opens do not count', () => {
    const { registry } = makeRegistry({}, 100, 2);
    registry.cache('mine');
    registry.storeForRemote('theirs-1');
    registry.storeForRemote('theirs-2');
    assert.throws(() => registry.storeForRemote('theirs-3'), /2 caches that this process has not opened/);
    registry.cache('theirs-1'); // opened here now: no longer counted against the network's share
    assert.equal(registry.storeForRemote('theirs-3').name, 'theirs-3');
    assert.throws(() => registry.storeForRemote('theirs-4'), RangeError);
    assert.equal(registry.size, 4);
  });
});

describe('housekeeping', () => {
  test('housekeep reclaims expired entries in every cache', () => {
    const { registry, clock } = makeRegistry({ ttl: 1 });
    const a = registry.cache('a');
    const b = registry.cache('b');
    a.x = 1;
    b.y = 1;
    clock.advance(2000);
    registry.housekeep();
    assert.equal(storeOf(a).counters().expires, 1);
    assert.equal(storeOf(b).counters().expires, 1);
  });
});
