/**
 * Logging through winston, to MCCACHE_LOG_FILENAME only.
 *
 * A winston call for a disabled level still costs 1-2.5 us here, because it builds the info object
 * whatever the level. Hot paths therefore test the precomputed booleans on {@link Log} (for example
 * `if (log.debugOn) log.debug(...)`) and never call the logger for a level that is off.
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import winston from 'winston';
import { ConfigError } from './config.js';

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3, silly: 4 } as const;
export type LogLevel = keyof typeof LEVELS;

/** A logger plus cheap per-level guards. */
export interface Log {
  /** True when `warn` lines are written; test it before building a costly message. */
  readonly warnOn: boolean;
  /** True when `info` lines are written; test it before building a costly message. */
  readonly infoOn: boolean;
  /** True when `debug` lines are written; test it before building a costly message on a hot path. */
  readonly debugOn: boolean;
  /** Logs at level error (always written); `meta` is appended as JSON. */
  error(message: string, meta?: object): void;
  /** Logs at level warn; `meta` is appended as JSON. */
  warn(message: string, meta?: object): void;
  /** Logs at level info; `meta` is appended as JSON. */
  info(message: string, meta?: object): void;
  /** Logs at level debug; `meta` is appended as JSON. */
  debug(message: string, meta?: object): void;
}

/** Options of {@link createLog}. */
export interface LogOptions {
  filename: string;
  level: LogLevel;
  /** A template with `{timestamp}`, `{level}`, `{message}` and `{meta}`; empty for the default line. */
  format: string;
  /** The setting that gave `filename`, named by errors; default `MCCACHE_LOG_FILENAME`. */
  setting?: string;
}

function renderLine(template: string, info: winston.Logform.TransformableInfo): string {
  const { level, message, timestamp, ...meta } = info;
  const metaText = Object.keys(meta).length ? JSON.stringify(meta, jsonSafe) : '';
  if (!template)
    return `${timestamp} ${level.toUpperCase().padEnd(5)} ${message}${metaText ? ` ${metaText}` : ''}`;
  return template
    .replaceAll('{timestamp}', String(timestamp))
    .replaceAll('{level}', level)
    .replaceAll('{message}', String(message))
    .replaceAll('{meta}', metaText);
}

function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/**
 * Creates the folder of the log file if missing, and the file, so that a path that cannot be written
 * fails here, naming the setting, rather than later inside winston (which would lose every line quietly).
 */
function prepareLogFile(filename: string, setting: string): void {
  const refuse = (problem: string, error: unknown): never => {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(
      `${setting}=${JSON.stringify(filename)}: ${problem} (${reason}); expected a writable path`,
      { cause: error },
    );
  };
  try {
    mkdirSync(dirname(filename), { recursive: true });
  } catch (error) {
    refuse('cannot create its folder', error);
  }
  try {
    closeSync(openSync(filename, 'a'));
  } catch (error) {
    refuse('cannot open it for appending', error);
  }
}

/**
 * A file logger. The folder of `filename` is created if missing.
 *
 * @throws ConfigError if the folder cannot be created or the file cannot be opened for appending.
 */
export function createLog(options: LogOptions): Log {
  prepareLogFile(options.filename, options.setting ?? 'MCCACHE_LOG_FILENAME');
  const logger = winston.createLogger({
    level: options.level,
    levels: LEVELS,
    format: winston.format.combine(
      winston.format.timestamp(),
      winston.format.printf((info) => renderLine(options.format, info)),
    ),
    transports: [new winston.transports.File({ filename: options.filename })],
  });
  const rank = LEVELS[options.level];
  return {
    warnOn: rank >= LEVELS.warn,
    infoOn: rank >= LEVELS.info,
    debugOn: rank >= LEVELS.debug,
    error: (message, meta) => logger.error(message, meta),
    warn: (message, meta) => logger.warn(message, meta),
    info: (message, meta) => logger.info(message, meta),
    debug: (message, meta) => logger.debug(message, meta),
  };
}

/** A logger that writes nothing, for tests and for code that runs before configuration. */
export const silentLog: Log = {
  warnOn: false,
  infoOn: false,
  debugOn: false,
  error: () => {},
  warn: () => {},
  info: () => {},
  debug: () => {},
};
