import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../lib/config.js';
import { createLog, silentLog } from '../lib/log.js';
import { createNode } from '../lib/node.js';
import { TSX_LOADER } from './helpers/tsx.js';

const folders: string[] = [];
after(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});

function temporaryFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'mccache-log-'));
  folders.push(folder);
  return folder;
}

/** Polls until the file contains `marker` (winston writes asynchronously), failing after a deadline. */
async function readUntil(file: string, marker: string, deadlineMs = 5000): Promise<string> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    if (text.includes(marker)) return text;
    if (Date.now() > deadline) assert.fail(`${file} never contained "${marker}"; it holds: ${text}`);
    await new Promise((done) => setTimeout(done, 10));
  }
}

describe('file logging', () => {
  test('creates the folder and the file, and writes at the configured level and above', async () => {
    const file = join(temporaryFolder(), 'nested', 'deeper', 'mccache.log');
    const log = createLog({ filename: file, level: 'info', format: '' });
    assert.equal(existsSync(join(file, '..')), true, 'the folder exists at once');
    log.debug('debug line');
    log.info('info line', { key: 'k' });
    log.warn('warn line');
    log.error('error line');
    const text = await readUntil(file, 'error line');
    assert.match(text, /INFO {2}info line \{"key":"k"\}/);
    assert.match(text, /WARN {2}warn line/);
    assert.match(text, /ERROR error line/);
    assert.doesNotMatch(text, /debug line/);
  });

  test('level warn drops info and debug', async () => {
    const file = join(temporaryFolder(), 'warn.log');
    const log = createLog({ filename: file, level: 'warn', format: '' });
    log.info('quiet info');
    log.debug('quiet debug');
    log.warn('loud warn');
    const text = await readUntil(file, 'loud warn');
    assert.doesNotMatch(text, /quiet/);
  });

  test('the precomputed guards match the level', () => {
    const folder = temporaryFolder();
    const levels = ['error', 'warn', 'info', 'debug', 'silly'] as const;
    const guards = levels.map((level) => {
      const log = createLog({ filename: join(folder, `${level}.log`), level, format: '' });
      return [log.warnOn, log.infoOn, log.debugOn];
    });
    assert.deepEqual(guards, [
      [false, false, false],
      [true, false, false],
      [true, true, false],
      [true, true, true],
      [true, true, true],
    ]);
    assert.deepEqual([silentLog.warnOn, silentLog.infoOn, silentLog.debugOn], [false, false, false]);
  });

  test('a format template shapes the line, and bigint metadata is written as text', async () => {
    const file = join(temporaryFolder(), 'format.log');
    const log = createLog({ filename: file, level: 'info', format: '[{level}] {message} | {meta}' });
    log.info('custom', { crc: 12345678901234567890n });
    const text = await readUntil(file, 'custom');
    assert.match(text, /^\[info\] custom \| \{"crc":"12345678901234567890"\}$/m);
  });
});

describe('a log path that cannot be written', () => {
  test('a folder that cannot be created is a ConfigError naming the setting, the value and the OS reason', () => {
    const plainFile = join(temporaryFolder(), 'hostname');
    writeFileSync(plainFile, 'not a folder');
    const filename = join(plainFile, 'x.log');
    assert.throws(
      () => createLog({ filename, level: 'warn', format: '' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        const prefix = `MCCACHE_LOG_FILENAME=${JSON.stringify(filename)}: cannot create its folder (`;
        assert.ok(error.message.startsWith(prefix), error.message);
        assert.match(error.message, /\((EEXIST|ENOTDIR): .*\); expected a writable path$/);
        assert.equal((error.cause as NodeJS.ErrnoException).syscall, 'mkdir');
        return true;
      },
    );
  });

  test('a path that is a folder is refused at once, naming the setting given', () => {
    const folder = temporaryFolder();
    assert.throws(
      () =>
        createLog({
          filename: folder,
          level: 'warn',
          format: '',
          setting: 'package.json mccache.log_filename',
        }),
      {
        name: 'ConfigError',
        message: new RegExp(
          `^package\\.json mccache\\.log_filename="${folder}": cannot open it for appending \\(EISDIR: .*\\); expected a writable path$`,
        ),
      },
    );
  });

  test('createNode reports a bad MCCACHE_LOG_FILENAME as a ConfigError before opening any socket', () => {
    const plainFile = join(temporaryFolder(), 'plain');
    writeFileSync(plainFile, '');
    const filename = join(plainFile, 'x.log');
    assert.throws(() => createNode({ env: { MCCACHE_LOG_FILENAME: filename }, cwd: temporaryFolder() }), {
      name: 'ConfigError',
      message: new RegExp(`^MCCACHE_LOG_FILENAME="${filename}": cannot create its folder`),
    });
  });
});

describe('nothing else', () => {
  test('logging writes nothing to stdout or stderr', () => {
    const folder = temporaryFolder();
    const file = join(folder, 'quiet.log');
    const script = join(folder, 'log-child.mts');
    const logModule = pathToFileURL(resolve('lib/log.ts')).href;
    writeFileSync(
      script,
      `import { createLog } from ${JSON.stringify(logModule)};
const log = createLog({ filename: ${JSON.stringify(file)}, level: 'debug', format: '' });
log.error('child error'); log.warn('child warn'); log.info('child info'); log.debug('child debug');
`,
    );
    const child = spawnSync(process.execPath, ['--import', TSX_LOADER, script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout, '');
    assert.equal(child.stderr, '');
    const text = readFileSync(file, 'utf8');
    for (const level of ['error', 'warn', 'info', 'debug']) assert.match(text, new RegExp(`child ${level}`));
  });
});
