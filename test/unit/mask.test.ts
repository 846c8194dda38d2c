import { describe, expect, it } from 'vitest';
import { MASK, createMask, credentialValuesOf } from '../../shared/mask.ts';

describe('mask', () => {
  it('replaces every occurrence of each value, also %-encoded, longest first', () => {
    const mask = createMask(['s3cret-value', 's3cret-value-longer', 'p@ss/word']);
    expect(mask('a s3cret-value b s3cret-value-longer c')).toBe(`a ${MASK} b ${MASK} c`);
    expect(mask('url http://u:p%40ss%2Fword@host/')).toBe(`url http://u:${MASK}@host/`);
    expect(mask('nothing here')).toBe('nothing here');
  });

  it('leaves values too short to be secrets alone, and treats values as text, not patterns', () => {
    const mask = createMask(['ab', '', 'a.c*d+']);
    expect(mask('ab abc')).toBe('ab abc');
    expect(mask('a.c*d+ axcxd')).toBe(`${MASK} axcxd`);
  });

  it('masks credential-like query values of any URL in the text', () => {
    const mask = createMask([]);
    expect(mask('GET https://bucket.example/x.tgz?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/1&page=2 done'))
      .toBe(`GET https://bucket.example/x.tgz?X-Amz-Signature=${MASK}&X-Amz-Credential=${MASK}&page=2 done`);
    expect(mask('https://h/p?access_token=zzz&sig=1234')).toBe(`https://h/p?access_token=${MASK}&sig=${MASK}`);
  });

  it('finds the credentials of a configured URL', () => {
    expect(credentialValuesOf('https://user:pa%2Fss@host/repo.git')).toEqual(['pa/ss']);
    expect(credentialValuesOf('https://ghp_token1234@host/repo.git')).toEqual(['ghp_token1234']);
    expect(credentialValuesOf('https://host/f.tgz?token=abcd&v=1')).toEqual(['abcd', '1']);
    expect(credentialValuesOf('not a url')).toEqual([]);
  });
});
