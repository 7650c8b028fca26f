// The toy language of `kiln train`: generation repeats with a seed, every generated line follows the
// rules, and the checker catches each kind of broken rule (so scores of model samples mean something).
import t from 'tap';
import { checkToyLine, scoreToyText, toyCorpus, unigramEntropy } from '../../lib/train/index';

t.test('generated text: seeded, every line valid, the asked share of arithmetic', async (t) => {
  const text = toyCorpus({ lines: 4000, seed: 3 });
  t.equal(text, toyCorpus({ lines: 4000, seed: 3 }), 'same seed, same text');
  t.not(text, toyCorpus({ lines: 4000, seed: 4 }), 'another seed, other text');
  const lines = text.trimEnd().split('\n');
  t.equal(lines.length, 4000);
  const bad = lines.filter((l) => !checkToyLine(l).valid);
  t.same(bad, [], 'every generated line follows the rules');
  const facts = lines.filter((l) => checkToyLine(l).kind === 'arithmetic').length;
  t.ok(Math.abs(facts / 4000 - 0.25) < 0.03, `about a quarter arithmetic: ${facts}`);
  t.ok(lines.some((l) => l.startsWith('an ')), 'uses "an"');
  t.ok(lines.some((l) => / mice /.test(l)) && lines.some((l) => / foxes/.test(l)), 'irregular plurals');
  t.equal(toyCorpus({ lines: 100, arithmetic: 0 }).split('\n').filter((l) => /\d/.test(l)).length, 0);
  const h = unigramEntropy(text);
  t.ok(h > 2.5 && h < Math.log(40), `character entropy ${h.toFixed(3)}`);
  t.equal(unigramEntropy('aaaa'), 0);
  t.ok(Math.abs(unigramEntropy('ab') - Math.log(2)) < 1e-12);
});

t.test('the checker accepts the rules and rejects each violation', async (t) => {
  const valid = [
    'the cat sleeps.', 'the cats sleep.', 'the fish sleeps.', 'the fish sleep.', 'an old dog runs quickly.', 'a big fox watches two mice.',
    'every angry mouse likes the fish.', 'these lazy foxes chase one bird.', 'two fish sing again.', '3 + 4 = 7.', '9 - 9 = 0.', '7 + 8 = 15.',
  ];
  for (const l of valid) t.ok(checkToyLine(l).valid, `valid: ${l}`);
  const invalid: Array<[string, string]> = [
    ['the cat sleep.', 'verb agreement'],
    ['two cats sleeps.', 'verb agreement'],
    ['two cat sleep.', 'determiner agreement'],
    ['a cats sleep.', 'determiner agreement'],
    ['a old dog runs.', 'a before a vowel'],
    ['an big dog runs.', 'an before a consonant'],
    ['three mouses run.', 'irregular plural'],
    ['one foxs sleeps.', 'irregular plural'],
    ['the cat sees.', 'a transitive verb without object'],
    ['the cat sleeps the dog.', 'an intransitive verb with an object'],
    ['the cat sleeps quickly again.', 'two adverbs'],
    ['the big red cat sleeps.', 'two adjectives'],
    ['the cat sleeps', 'no period'],
    ['cat the sleeps.', 'word order'],
    ['', 'empty'],
  ];
  for (const [l, why] of invalid) t.notOk(checkToyLine(l).valid, `invalid (${why}): ${l}`);
  t.same(checkToyLine('3 + 4 = 8.'), { kind: 'arithmetic', valid: false, wellFormed: true }, 'a wrong sum is well-formed');
  t.same(checkToyLine('3 + = 4.'), { kind: 'arithmetic', valid: false, wellFormed: false });
  t.same(checkToyLine('3 + 4 = 7'), { kind: 'arithmetic', valid: false, wellFormed: false });
});

t.test('scoring generated text', async (t) => {
  const s = scoreToyText('xx cut\nthe cat sleeps.\ntwo cat sleep.\n3 + 4 = 7.\n3 + 4 = 9.\n3 + x\nthe dog', { dropFirst: true });
  t.same(s, { sentences: 2, validSentences: 1, facts: 3, wellFormedFacts: 2, correctFacts: 1 });
  t.same(scoreToyText('the cat sleeps.\n', {}), { sentences: 1, validSentences: 1, facts: 0, wellFormedFacts: 0, correctFacts: 0 });
});
