/**
 * `clusterrunner validate [DIR]` (issue 16): the dry run. Reads DIR/clusterrunner.yaml, checks every job
 * (or the one named with -j) as the master would, and runs each job's atomizers here, in DIR, printing how
 * many atoms each one gives. No master is involved and no atom runs. Exit 0 when all is well, 3 otherwise.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { runAtomizers } from '../master/builds/atomize.ts';
import { errorMessage } from '../shared/errors.ts';
import { listJobNames, MAX_JOB_FILE_BYTES, parseJobFile, type JobConfig } from '../shared/job-config.ts';
import { createCommandOutput } from './command-output.ts';
import { EXIT_SUCCESS, EXIT_USAGE } from './exit-codes.ts';
import { neutraliseBlock, neutraliseLine } from './terminal-text.ts';
import type { CommonFlags } from './common.ts';

export interface ValidateFlags extends CommonFlags {
  readonly jobName?: string;
  readonly json?: boolean;
  /** commander sets false for --no-atomize. */
  readonly atomize?: boolean;
}

/** The master's defaults (clusterrunner.conf.example): the dry run fails where a build would. */
const ATOMIZE_LIMITS = { timeoutMs: 600_000, maxOutputBytes: 64 * 1024 * 1024, maxAtoms: 200_000, graceMs: 5_000 };

interface JobReport {
  name: string;
  error: string | null;
  atomizers: { variable: string; command: string; atoms: number | null }[];
  atoms: number | null;
}

/** Reads at most MAX_JOB_FILE_BYTES + 1 bytes: a bigger file is refused by the parser anyway. */
function readJobFile(file: string): string {
  const fd = openSync(file, 'r');
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${file} is not a file`);
    const buffer = Buffer.alloc(MAX_JOB_FILE_BYTES + 1);
    let length = 0;
    while (length < buffer.length) {
      const read = readSync(fd, buffer, length, buffer.length - length, null);
      if (read === 0) break;
      length += read;
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export async function runValidateCommand(dir: string | undefined, flags: ValidateFlags): Promise<number> {
  const out = createCommandOutput(flags);
  const projectDir = path.resolve(dir ?? '.');
  const file = path.join(projectDir, 'clusterrunner.yaml');
  let text: string;
  let names: string[];
  try {
    text = readJobFile(file);
    names = listJobNames(text);
    if (flags.jobName !== undefined) {
      parseJobFile(text, flags.jobName);
      names = [flags.jobName];
    }
  } catch (error) {
    const message = (error as NodeJS.ErrnoException).code === 'ENOENT' ? `no clusterrunner.yaml in ${projectDir}` : errorMessage(error);
    if (out.isJson) out.json({ file, valid: false, error: message, jobs: [] });
    out.problem((error as NodeJS.ErrnoException).code === 'ENOENT' ? message : `${file}: ${message}`);
    return EXIT_USAGE;
  }

  const reports: JobReport[] = [];
  for (const name of names) {
    const report: JobReport = { name, error: null, atomizers: [], atoms: null };
    reports.push(report);
    let job: JobConfig;
    try {
      job = parseJobFile(text, name);
    } catch (error) {
      report.error = errorMessage(error);
      continue;
    }
    report.atomizers = job.atomizers.map((atomizer) => ({ variable: atomizer.variable, command: atomizer.command, atoms: null }));
    if (flags.atomize === false) continue;
    // One atomizer at a time, so that each count (and a failure) is attributed to the right one.
    let total = 0;
    for (const [index, atomizer] of job.atomizers.entries()) {
      try {
        const atoms = await runAtomizers({ ...job, atomizers: [atomizer] }, projectDir, ATOMIZE_LIMITS, new AbortController().signal);
        report.atomizers[index]!.atoms = atoms.length;
        total += atoms.length;
      } catch (error) {
        report.error = errorMessage(error);
        break;
      }
    }
    if (report.error === null) {
      report.atoms = total;
      if (total === 0 && job.allowNoAtoms === false) {
        report.error = `the atomizers (${job.atomizers.map((atomizer) => atomizer.variable).join(', ')}) printed no atom, and allow_no_atoms is false: a build would end in ERROR`;
      }
    }
  }

  const isValid = reports.every((report) => report.error === null);
  if (out.isJson) {
    out.json({ file, valid: isValid, jobs: reports });
  } else {
    out.result(`${file}: ${reports.length} ${reports.length === 1 ? 'job' : 'jobs'}`);
    for (const report of reports) {
      out.result(`job ${neutraliseLine(report.name)}: ${report.error === null ? 'ok' : 'INVALID'}`);
      for (const atomizer of report.atomizers) {
        const count = atomizer.atoms === null ? (flags.atomize === false ? 'not run' : 'not counted') : `${atomizer.atoms} atoms`;
        out.result(`  atomizer ${atomizer.variable}: ${count}  (${neutraliseLine(atomizer.command)})`);
      }
      if (report.atoms !== null) out.result(`  ${report.atoms} atoms in all${report.atoms === 0 ? ' — NO ATOM: a build of this job would run nothing' : ''}`);
      if (report.error !== null) out.result(`  ${neutraliseBlock(report.error).split('\n').join('\n  ')}`);
    }
  }
  return isValid ? EXIT_SUCCESS : EXIT_USAGE;
}
