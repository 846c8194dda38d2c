import type { ArtifactUpload } from './atom-files.ts';
import type { ConsoleWriter } from './console-files.ts';

interface OpenFiles {
  readonly consoles: Map<number, ConsoleWriter>;
  readonly uploads: Map<number, ArtifactUpload>;
}

/**
 * The files a lease's atoms are writing on the master: console writers and artifact uploads, by lease id
 * then atom id. Kept apart from the Lease (protocol state) so the workers folder knows nothing of builds' I/O.
 */
export class LeaseFiles {
  readonly #byLease = new Map<string, OpenFiles>();

  #files(leaseId: string): OpenFiles {
    let files = this.#byLease.get(leaseId);
    if (!files) this.#byLease.set(leaseId, (files = { consoles: new Map(), uploads: new Map() }));
    return files;
  }

  /** Sets the atom's console writer; a writer left from an earlier start of the atom is closed. */
  setConsole(leaseId: string, atomId: number, writer: ConsoleWriter): void {
    const consoles = this.#files(leaseId).consoles;
    consoles.get(atomId)?.close().catch(() => undefined);
    consoles.set(atomId, writer);
  }

  console(leaseId: string, atomId: number): ConsoleWriter | undefined {
    return this.#byLease.get(leaseId)?.consoles.get(atomId);
  }

  upload(leaseId: string, atomId: number, create: () => ArtifactUpload): ArtifactUpload {
    const uploads = this.#files(leaseId).uploads;
    let upload = uploads.get(atomId);
    if (!upload) uploads.set(atomId, (upload = create()));
    return upload;
  }

  /** The atom's result arrived: its files are handed over for closing and forgotten here. */
  take(leaseId: string, atomId: number): { console: ConsoleWriter | undefined; upload: ArtifactUpload | undefined } {
    const files = this.#byLease.get(leaseId);
    const taken = { console: files?.consoles.get(atomId), upload: files?.uploads.get(atomId) };
    files?.consoles.delete(atomId);
    files?.uploads.delete(atomId);
    return taken;
  }

  /** The lease is over (revoked, or all its results are in): close what it still has open. */
  discard(leaseId: string): void {
    const files = this.#byLease.get(leaseId);
    if (!files) return;
    this.#byLease.delete(leaseId);
    for (const console of files.consoles.values()) console.close().catch(() => undefined);
    for (const upload of files.uploads.values()) upload.abort();
  }
}
