import { describe, expect, it } from 'vitest';
import { OutputRecord, RESEND_WINDOW_BYTES } from '../../worker/output-record.ts';

const IDS = { lease_id: 'l', build_id: 1, subjob_id: 0, atom_id: 0 };

describe('OutputRecord', () => {
  it('gives what follows the bytes the master holds, from a message boundary, in UTF-8 bytes', () => {
    const record = new OutputRecord(IDS);
    for (const text of ['héllo\n', 'wörld\n', 'again\n']) record.add(text);
    expect(record.sentBytes).toBe(Buffer.byteLength('héllo\nwörld\nagain\n'));
    expect(record.since(0)).toEqual(['héllo\n', 'wörld\n', 'again\n']);
    expect(record.since(Buffer.byteLength('héllo\n'))).toEqual(['wörld\n', 'again\n']);
    expect(record.since(record.sentBytes)).toEqual([]);
    expect(record.since(record.sentBytes + 100)).toEqual([]);
  });

  it('keeps only the latest window, and says how much older output is gone', () => {
    const record = new OutputRecord(IDS);
    const line = `${'x'.repeat(1023)}\n`;
    const lines = (2 * RESEND_WINDOW_BYTES) / line.length;
    for (let index = 0; index < lines; index += 1) record.add(line);
    const resent = record.since(0);
    const lost = record.sentBytes - RESEND_WINDOW_BYTES;
    expect(resent[0]).toBe(`\n[ClusterRunner: ${lost} bytes of output were lost while the master was unreachable]\n`);
    expect(resent.slice(1).join('')).toBe(line.repeat(RESEND_WINDOW_BYTES / line.length));
  });
});
