import { describe, expect, it } from 'vitest';
import { OutputTail } from '../../shared/output-tail.ts';

describe('OutputTail', () => {
  it('keeps everything, without a note, while under the limit', () => {
    const tail = new OutputTail(100);
    tail.push('line 1\n');
    tail.push(Buffer.from('line 2\n'));
    expect(tail.text()).toBe('line 1\nline 2\n');
    expect(tail.totalBytes).toBe(14);
  });

  it('keeps the end, cut at a line start, and says how much was cut', () => {
    const tail = new OutputTail(20);
    for (let i = 0; i < 100; i += 1) tail.push(`line ${i}\n`);
    const text = tail.text();
    expect(text.endsWith('line 98\nline 99\n')).toBe(true);
    const [note, ...rest] = text.split('\n');
    const kept = rest.join('\n');
    expect(kept).toBe('line 98\nline 99\n');
    expect(note).toBe(`[… ${tail.totalBytes - Buffer.byteLength(kept)} bytes cut …]`);
  });

  it('stays bounded whatever is pushed, one huge chunk or many small ones', () => {
    const tail = new OutputTail(64);
    tail.push(Buffer.alloc(1_000_000, 'x'));
    for (let i = 0; i < 10_000; i += 1) tail.push('y');
    tail.push('end');
    expect(tail.totalBytes).toBe(1_000_000 + 10_000 + 3);
    const text = tail.text();
    // No newline to cut at: the last 64 bytes, exactly.
    expect(text).toBe(`[… ${tail.totalBytes - 64} bytes cut …]\n${'y'.repeat(61)}end`);
  });

  it('wraps around its buffer keeping the order of bytes', () => {
    const tail = new OutputTail(10);
    tail.push('abcdefg');
    tail.push('hijklmn');
    expect(tail.text()).toBe('[… 4 bytes cut …]\nefghijklmn');
  });

  it('does not start with half a character', () => {
    const tail = new OutputTail(5);
    tail.push('ééé'); // six bytes: the first kept one is the second half of an é
    expect(tail.text()).toBe('[… 2 bytes cut …]\néé');
  });

  it('keeps at most maxLines lines, counting the lines it drops as cut', () => {
    const tail = new OutputTail(1000);
    tail.push('one\ntwo\nthree\nfour\n');
    expect(tail.text(2)).toBe('[… 8 bytes cut …]\nthree\nfour\n');
    expect(tail.text(4)).toBe('one\ntwo\nthree\nfour\n');
    tail.push('partial');
    expect(tail.text(2)).toBe('[… 14 bytes cut …]\nfour\npartial');
  });

  it('rejects a size that is not a positive integer', () => {
    expect(() => new OutputTail(0)).toThrow(RangeError);
    expect(() => new OutputTail(1.5)).toThrow(RangeError);
  });
});
