/**
 * Runs every benchmark script in benchmarks/ (not helpers/, not files starting with "_") one after
 * the other, each in its own node process, streaming its output. Exits non-zero if any script fails
 * or outlives its time limit; prints how long each took. `npm run bench` runs this.
 *
 * Run: npx tsx benchmarks/run-all.ts [name ...]   (names select scripts, e.g. `cluster redis`)
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SELF = basename(fileURLToPath(import.meta.url));
/** Node flags some scripts need beyond tsx. */
const EXTRA_NODE_FLAGS: Record<string, string[]> = {
  'memory.ts': ['--expose-gc'],
};
/** A script still running after this long is killed and counted as failed. */
const SCRIPT_TIMEOUT_MS = 240_000;
const TOTAL_BUDGET_MS = 5 * 60_000;

const wanted = process.argv.slice(2).map((name) => name.replace(/\.ts$/, ''));
const available = readdirSync(HERE)
  .filter((file) => file.endsWith('.ts') && !file.startsWith('_') && file !== SELF)
  .sort();
const unknown = wanted.filter((name) => !available.includes(`${name}.ts`));
if (unknown.length > 0) {
  console.error(`no benchmark called ${unknown.join(', ')}; there are ${available.join(', ')}`);
  process.exit(1);
}
const scripts = available.filter((file) => wanted.length === 0 || wanted.includes(file.replace(/\.ts$/, '')));

let interrupted = false;

function run(script: string): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [...(EXTRA_NODE_FLAGS[script] ?? []), '--import', 'tsx', join(HERE, script)],
      {
        stdio: 'inherit',
      },
    );
    const timer = setTimeout(() => {
      console.error(`\n${script}: still running after ${SCRIPT_TIMEOUT_MS / 1000} s, killing it`);
      child.kill('SIGKILL');
    }, SCRIPT_TIMEOUT_MS);
    const forward = (signal: NodeJS.Signals) => {
      interrupted = true;
      child.kill(signal);
    };
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, detail: error.message });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve({ ok: code === 0, detail: signal ? `killed by ${signal}` : `exit code ${code}` });
    });
  });
}

const started = Date.now();
const outcomes: { script: string; ok: boolean; detail: string; seconds: number }[] = [];
for (const script of scripts) {
  console.log(`\n=== ${script} ${'='.repeat(Math.max(0, 70 - script.length))}\n`);
  const scriptStart = Date.now();
  const outcome = await run(script);
  outcomes.push({ script, ...outcome, seconds: (Date.now() - scriptStart) / 1000 });
  if (interrupted) {
    console.error('\ninterrupted');
    process.exit(130);
  }
}
const totalMs = Date.now() - started;

console.log('\n=== summary ===\n');
for (const o of outcomes) {
  console.log(
    `${o.ok ? 'ok    ' : 'FAILED'}  ${o.script.padEnd(14)} ${o.seconds.toFixed(1).padStart(6)} s  ${o.ok ? '' : o.detail}`,
  );
}
console.log(
  `\ntotal ${(totalMs / 1000).toFixed(1)} s${totalMs > TOTAL_BUDGET_MS ? ' (over the 5-minute budget)' : ''}`,
);
const failed = outcomes.filter((o) => !o.ok);
if (failed.length > 0) {
  console.error(`\n${failed.length} benchmark(s) failed: ${failed.map((o) => o.script).join(', ')}`);
  process.exit(1);
}
