/**
 * A small command-line flag parser: `--name value`, `--name=value`, switches, `--` and positionals.
 *
 * Each flag may also be read from an environment variable (the seed's TEST_* and MCCACHE_*); a flag
 * on the command line wins over the environment, which wins over the default. Every value is
 * validated once, and an error names where the value came from, the value, and what is expected:
 * `--nodes "abc": expected a whole number from 1 to 64`.
 */

/** A command line that cannot be used: the message says what was wrong and what is expected. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** One flag: how to parse its text, where else it may come from, and how --help describes it. */
export interface Flag<T> {
  /** Parses the text; throws a plain message (`expected ...`) when it is invalid. */
  parse(text: string): T;
  /** Environment variable read when the flag is absent. */
  env?: string | undefined;
  /** Value when neither the flag nor the variable is given (undefined: not set). */
  default?: T | undefined;
  /** How the default reads in --help when it is not simply the value. */
  defaultText?: string | undefined;
  /** The placeholder in --help, e.g. `<n>`; switches have none. */
  placeholder: string;
  description: string;
  /** A switch takes no value: present means true. */
  isSwitch?: boolean | undefined;
}

export type FlagSet = Record<string, Flag<unknown>>;

/** Where a value came from. */
export type ValueSource = 'flag' | 'env' | 'default';

/** Values of a flag set; undefined when a flag without default is not given. */
export type FlagValues<F extends FlagSet> = {
  [K in keyof F]: F[K] extends Flag<infer T> ? T | undefined : never;
};

export interface ParsedArgs<F extends FlagSet> {
  values: FlagValues<F>;
  sources: Record<keyof F, ValueSource>;
  positionals: string[];
  help: boolean;
}

/** `nodesCount` -> `--nodes-count`. */
export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

function suggestion(given: string, known: string[]): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of known) {
    const distance = editDistance(given, name);
    if (distance < bestDistance) {
      best = name;
      bestDistance = distance;
    }
  }
  return best ? ` (did you mean ${best}?)` : '';
}

/**
 * Parses `argv` (without the command name) against `flags`, reading `env` for absent flags.
 * Throws a {@link UsageError} for an unknown flag, a missing or invalid value, or a repeated flag.
 */
export function parseArgs<F extends FlagSet>(
  argv: readonly string[],
  flags: F,
  env: NodeJS.ProcessEnv = process.env,
): ParsedArgs<F> {
  const byName = new Map<string, string>();
  for (const key of Object.keys(flags)) byName.set(flagName(key), key);
  const given = new Map<string, string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-' || /^-\d/.test(arg)) {
      positionals.push(arg);
      continue;
    }
    const equals = arg.indexOf('=');
    const name = equals > 0 ? arg.slice(0, equals) : arg;
    const key = byName.get(name);
    if (key === undefined) {
      throw new UsageError(`unknown flag ${name}${suggestion(name, [...byName.keys(), '--help'])}`);
    }
    if (given.has(key)) throw new UsageError(`${name} is given twice: expected it once`);
    const flag = flags[key]!;
    if (flag.isSwitch) {
      if (equals > 0) {
        const text = arg.slice(equals + 1);
        if (!['true', 'false', '1', '0'].includes(text))
          throw new UsageError(`${name}=${text}: expected no value (or true/false)`);
        given.set(key, text === 'true' || text === '1' ? 'true' : 'false');
      } else {
        given.set(key, 'true');
      }
      continue;
    }
    let text: string;
    if (equals > 0) {
      text = arg.slice(equals + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new UsageError(`${name} needs a value: expected ${name} ${flag.placeholder}`);
      }
      text = next;
      i++;
    }
    given.set(key, text);
  }

  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  for (const [key, flag] of Object.entries(flags)) {
    const flagText = given.get(key);
    const envText = flag.env !== undefined ? env[flag.env] : undefined;
    let text: string | undefined;
    let label: string;
    if (flagText !== undefined) {
      text = flagText;
      label = flagName(key);
      sources[key] = 'flag';
    } else if (envText !== undefined && envText !== '') {
      text = envText;
      label = flag.env!;
      sources[key] = 'env';
    } else {
      values[key] = flag.default;
      sources[key] = 'default';
      continue;
    }
    try {
      values[key] = flag.isSwitch ? text === 'true' || text === '1' : flag.parse(text.trim());
    } catch (error) {
      throw new UsageError(`${label} ${JSON.stringify(text)}: ${(error as Error).message}`);
    }
  }
  return {
    values: values as FlagValues<F>,
    sources: sources as Record<keyof F, ValueSource>,
    positionals,
    help,
  };
}

// ------------------------------------------------------------------------------------------------
// Flag kinds

interface Common<T> {
  env?: string;
  default?: T;
  defaultText?: string;
  description: string;
  placeholder?: string;
}

function fail(message: string): never {
  throw new Error(message);
}

/** A whole number from `min` to `max`. */
export function integerFlag(options: Common<number> & { min: number; max: number }): Flag<number> {
  const expected = `expected a whole number from ${options.min} to ${options.max}`;
  return {
    ...options,
    placeholder: options.placeholder ?? '<n>',
    parse(text) {
      if (!/^[+-]?\d+$/.test(text)) fail(expected);
      const value = Number(text);
      if (!Number.isSafeInteger(value) || value < options.min || value > options.max) fail(expected);
      return value;
    },
  };
}

/** A decimal number from `min` to `max`; `exclusiveMin` refuses `min` itself. */
export function numberFlag(
  options: Common<number> & { min: number; max: number; exclusiveMin?: boolean; unit?: string },
): Flag<number> {
  const unit = options.unit ? ` ${options.unit}` : '';
  const expected = options.exclusiveMin
    ? `expected a number${unit} above ${options.min} and at most ${options.max}`
    : `expected a number${unit} from ${options.min} to ${options.max}`;
  return {
    ...options,
    placeholder: options.placeholder ?? '<number>',
    parse(text) {
      if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text)) fail(expected);
      const value = Number(text);
      if (!Number.isFinite(value) || value > options.max) fail(expected);
      if (options.exclusiveMin ? value <= options.min : value < options.min) fail(expected);
      return value;
    },
  };
}

/** One of a fixed set of words (or numbers written as text). */
export function choiceFlag<T extends string>(options: Common<T> & { choices: readonly T[] }): Flag<T> {
  return {
    ...options,
    placeholder: options.placeholder ?? `<${options.choices.join('|')}>`,
    parse(text) {
      if (!(options.choices as readonly string[]).includes(text))
        fail(`expected one of ${options.choices.join(', ')}`);
      return text as T;
    },
  };
}

/** Free text, checked by `check` (which returns an error message, or undefined when valid). */
export function textFlag(
  options: Common<string> & { check?: (text: string) => string | undefined },
): Flag<string> {
  return {
    ...options,
    placeholder: options.placeholder ?? '<text>',
    parse(text) {
      if (text === '') fail('expected a non-empty value');
      const problem = options.check?.(text);
      if (problem) fail(problem);
      return text;
    },
  };
}

/** A switch: present means true. */
export function switchFlag(options: Common<boolean>): Flag<boolean> {
  return {
    ...options,
    default: options.default ?? false,
    placeholder: '',
    isSwitch: true,
    parse: () => true,
  };
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Milliseconds of a duration: a number with an optional unit (`500ms`, `15s`, `10m`, `1.5h`).
 * A bare number is in `bareUnit` (minutes for TEST_RUN_DURATION, as in the seed).
 */
export function parseDuration(text: string, bareUnit: 'ms' | 's' | 'm' | 'h' = 'm'): number {
  const match = /^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?$/i.exec(text.trim());
  if (!match) {
    fail(`expected a duration such as 500ms, 15s, 10m or 1h (a bare number means ${unitWord(bareUnit)})`);
  }
  const unit = (match[2] ?? bareUnit).toLowerCase();
  return Number(match[1]) * DURATION_UNITS[unit]!;
}

function unitWord(unit: string): string {
  return { ms: 'milliseconds', s: 'seconds', m: 'minutes', h: 'hours' }[unit] ?? unit;
}

/** A duration in ms, from `minMs` to `maxMs`; see {@link parseDuration}. */
export function durationFlag(
  options: Common<number> & { minMs: number; maxMs: number; bareUnit: 'ms' | 's' | 'm' | 'h' },
): Flag<number> {
  return {
    ...options,
    placeholder: options.placeholder ?? '<duration>',
    parse(text) {
      const ms = parseDuration(text, options.bareUnit);
      if (ms < options.minMs || ms > options.maxMs) {
        fail(`expected a duration from ${formatDuration(options.minMs)} to ${formatDuration(options.maxMs)}`);
      }
      return ms;
    },
  };
}

/** `90000` -> `1m30s`, `1500` -> `1.5s`, `250` -> `250ms`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(3))}s`;
  const hours = Math.floor(ms / 3_600_000);
  const minutes = Math.floor((ms % 3_600_000) / 60_000);
  const seconds = Number(((ms % 60_000) / 1000).toFixed(3));
  return `${hours > 0 ? `${hours}h` : ''}${minutes > 0 ? `${minutes}m` : ''}${seconds > 0 ? `${seconds}s` : ''}`;
}

const HELP_WIDTH = 100;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines;
}

/** Help text for a flag set: one line per flag with its variable and default. */
export function describeFlags(flags: FlagSet): string {
  const rows = Object.entries(flags).map(([key, flag]) => {
    const left = `  ${flagName(key)}${flag.placeholder ? ` ${flag.placeholder}` : ''}`;
    const notes: string[] = [];
    if (flag.env) notes.push(`env ${flag.env}`);
    const shownDefault =
      flag.defaultText ?? (flag.default !== undefined && !flag.isSwitch ? String(flag.default) : undefined);
    if (shownDefault !== undefined) notes.push(`default ${shownDefault}`);
    return { left, right: `${flag.description}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}` };
  });
  const width = Math.min(26, Math.max(...rows.map((row) => row.left.length)) + 2);
  const indent = ' '.repeat(width);
  return rows
    .map(({ left, right }) => {
      const lines = wrap(right, HELP_WIDTH - width);
      const first =
        left.length + 2 > width ? `${left}\n${indent}${lines[0]}` : `${left.padEnd(width)}${lines[0]}`;
      return [first, ...lines.slice(1).map((line) => `${indent}${line}`)].join('\n');
    })
    .join('\n');
}
