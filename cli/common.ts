import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConf, type Conf, type ConfOverrides, type ConfRole } from '../shared/conf.ts';
import { createLogger, type Logger } from '../shared/log.ts';

/** Flags every command takes (SPEC §8). */
export interface CommonFlags {
  readonly configFile?: string;
  readonly verbose?: boolean;
  readonly quiet?: boolean;
}

export function packageVersion(): string {
  const path = fileURLToPath(new URL('../package.json', import.meta.url));
  return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
}

/**
 * Loads the configuration with the command line on top; -v / -q override log_level. The default file is
 * created (with a fresh secret) when missing; a client's `-c PATH` that does not exist is an error: a typo
 * must not create folders and a secret there, then blame the master for refusing it (issue 16).
 */
export function loadCommandConf(role: ConfRole, flags: CommonFlags, overrides: ConfOverrides): Conf {
  const logLevel = flags.verbose ? 'debug' : flags.quiet ? 'warn' : undefined;
  return loadConf({
    file: flags.configFile ?? null,
    role,
    overrides: { ...overrides, log_level: logLevel },
    env: process.env,
    createIfMissing: role !== 'client' || flags.configFile === undefined,
  });
}

export function commandLogger(name: string, conf: Conf): Logger {
  return createLogger({ name, level: conf.logLevel });
}

/**
 * First SIGTERM/SIGINT: graceful; a second one: forceful. Handlers are registered once per process and
 * removed by the returned function.
 */
export function onStopSignals(graceful: (signal: NodeJS.Signals) => void, forceful: (signal: NodeJS.Signals) => void): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count++;
    if (count === 1) graceful(signal);
    else forceful(signal);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}

/**
 * For a command following a build: the first SIGTERM/SIGINT aborts the returned signal (the command cancels
 * the build and finishes as usual); a second one leaves at once.
 */
export function cancelOnStopSignals(log: Logger): { readonly signal: AbortSignal; readonly remove: () => void } {
  const interrupt = new AbortController();
  const remove = onStopSignals(
    (signal) => {
      log.debug({ signal }, 'canceling on signal');
      interrupt.abort(signal);
    },
    (signal) => {
      process.stderr.write(`\nclusterrunner: ${signal} again: leaving without waiting for the build\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    },
  );
  return { signal: interrupt.signal, remove };
}

/** The defaults of clusterrunner.conf for a throwaway master in `base` (the example, benchmarks). */
export function localConf(base: string, secret: string): Conf {
  const file = join(base, 'clusterrunner.conf');
  writeFileSync(file, `[general]\nsecret = ${secret}\nbase_directory = ${base}\n`, { mode: 0o600 });
  return loadConf({ file, role: 'master', env: {} });
}
