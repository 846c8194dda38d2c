/**
 * `npm run bench`: runs every benchmark in turn; each prints its own figures.
 * `npm run bench -- throughput` runs only the ones named.
 */
const BENCHES = ['overhead', 'vs-original', 'balance', 'throughput', 'cold-start', 'archive', 'lists', 'plan', 'pool-burst'] as const;

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(BENCHES as readonly string[]).includes(name));
if (unknown.length > 0) {
  process.stderr.write(`unknown bench: ${unknown.join(', ')} (known: ${BENCHES.join(', ')})\n`);
  process.exit(2);
}
for (const name of BENCHES) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  process.stdout.write(`\n== ${name}\n`);
  await import(`./${name}.ts`);
}
