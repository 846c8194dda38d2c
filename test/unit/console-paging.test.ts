import { describe, expect, it } from 'vitest';
import { pageConsole } from '../../master/builds/console-files.ts';

const TEN = Array.from({ length: 10 }, (_, i) => `line_${i}\n`).join('');

describe('console paging (SPEC §2.2)', () => {
  it.each([
    { maxLines: 5, offset: 0, first: 0, count: 5 },
    { maxLines: 3, offset: 4, first: 4, count: 3 },
    { maxLines: 5, offset: null, first: 5, count: 5 },
    { maxLines: 50, offset: null, first: 0, count: 10 },
    { maxLines: 50, offset: 8, first: 8, count: 2 },
  ])('max_lines $maxLines, offset_line $offset', ({ maxLines, offset, first, count }) => {
    const page = pageConsole(TEN, maxLines, offset);
    expect(page.offset_line).toBe(first);
    expect(page.num_lines).toBe(count);
    expect(page.total_num_lines).toBe(10);
    expect(page.content).toBe(Array.from({ length: count }, (_, i) => `line_${first + i}\n`).join(''));
  });

  it('gives empty content at offset_line == total and refuses past it', () => {
    expect(pageConsole(TEN, 5, 10)).toEqual({ offset_line: 10, num_lines: 0, total_num_lines: 10, content: '' });
    expect(() => pageConsole(TEN, 5, 11)).toThrow(/past the end/);
  });

  it('counts only complete lines', () => {
    expect(pageConsole('a\nb\npartial', 10, null)).toMatchObject({ total_num_lines: 2, content: 'a\nb\n' });
    expect(pageConsole('no newline yet', 10, null)).toMatchObject({ total_num_lines: 0, content: '' });
    expect(pageConsole('', 10, 0)).toMatchObject({ total_num_lines: 0, content: '' });
  });

  it('keeps empty lines as lines', () => {
    expect(pageConsole('a\n\nb\n', 10, 0)).toMatchObject({ total_num_lines: 3, content: 'a\n\nb\n' });
  });

  it.each([[0, 0], [-1, null], [5, -1], [1.5, 0]])('refuses max_lines %s / offset_line %s with a 400', (maxLines, offset) => {
    try {
      pageConsole(TEN, maxLines, offset);
      expect.unreachable();
    } catch (error) {
      expect((error as { status: number }).status).toBe(400);
    }
  });
});
