// A generated toy language, so that `kiln train` has something to learn without a download, and a
// falling validation loss means the model learned rules rather than noise. Each line is either
//   - a sentence: determiner, optional adjective, noun, verb, then an adverb or an object noun phrase,
//     with agreement rules: the verb agrees with the subject in number ("the cat sleeps", "two cats
//     sleep"), determiners agree with nouns ("a"/"one"/"this"/"every" take singular nouns,
//     "two"/"three"/"some"/"these"/"many" plural ones, "the" either), "a" becomes "an" before a vowel,
//     and some plurals are irregular (mouse -> mice, fox -> foxes, fish -> fish); or
//   - an addition or subtraction fact between digits: "7 + 5 = 12.", "9 - 4 = 5.".
// checkToyLine() parses a line by these rules, so samples from a model can be scored: the share of
// grammatical sentences and of correct sums is what the model learned.
import { Rng } from '../data/rng';

const NOUNS: ReadonlyArray<readonly [string, string]> = [
  ['cat', 'cats'], ['dog', 'dogs'], ['bird', 'birds'], ['fox', 'foxes'], ['mouse', 'mice'], ['fish', 'fish'],
];
const ADJECTIVES = ['big', 'small', 'red', 'old', 'angry', 'lazy'];
const DET_SINGULAR = ['a', 'the', 'one', 'this', 'every'];
const DET_PLURAL = ['the', 'two', 'three', 'some', 'these', 'many'];
const TRANSITIVE: ReadonlyArray<readonly [string, string]> = [
  ['sees', 'see'], ['likes', 'like'], ['chases', 'chase'], ['finds', 'find'], ['watches', 'watch'],
];
const INTRANSITIVE: ReadonlyArray<readonly [string, string]> = [['sleeps', 'sleep'], ['runs', 'run'], ['sings', 'sing'], ['jumps', 'jump']];
const ADVERBS = ['quickly', 'slowly', 'again', 'today'];

/** Options of toyCorpus. */
export interface ToyCorpusOptions {
  /** Number of lines (default 20000, about 500k characters). */
  lines?: number;
  /** Seed of the generator (default 0). */
  seed?: number;
  /** Share of arithmetic lines (default 0.25). */
  arithmetic?: number;
}

const startsWithVowel = (w: string) => /^[aeiou]/.test(w);

/** A noun phrase of the given number (0 singular, 1 plural). */
function nounPhrase(rng: Rng, plural: number): string {
  const pick = <T>(xs: readonly T[]) => xs[rng.below(xs.length)];
  const words: string[] = [];
  const det = pick(plural ? DET_PLURAL : DET_SINGULAR);
  const adj = rng.next() < 0.4 ? pick(ADJECTIVES) : null;
  const noun = pick(NOUNS)[plural];
  const next = adj ?? noun;
  words.push(det === 'a' && startsWithVowel(next) ? 'an' : det);
  if (adj) words.push(adj);
  words.push(noun);
  return words.join(' ');
}

/** One line of the language. */
function line(rng: Rng, arithmetic: number): string {
  if (rng.next() < arithmetic) {
    const a = rng.below(10), b = rng.below(10);
    if (rng.next() < 0.6) return `${a} + ${b} = ${a + b}.`;
    const [hi, lo] = a >= b ? [a, b] : [b, a];
    return `${hi} - ${lo} = ${hi - lo}.`;
  }
  const plural = rng.below(2);
  const subject = nounPhrase(rng, plural);
  if (rng.next() < 0.5) {
    const verb = INTRANSITIVE[rng.below(INTRANSITIVE.length)][plural];
    return rng.next() < 0.5 ? `${subject} ${verb} ${ADVERBS[rng.below(ADVERBS.length)]}.` : `${subject} ${verb}.`;
  }
  const verb = TRANSITIVE[rng.below(TRANSITIVE.length)][plural];
  return `${subject} ${verb} ${nounPhrase(rng, rng.below(2))}.`;
}

/** The toy language's text: one sentence or arithmetic fact per line. */
export function toyCorpus(opts: ToyCorpusOptions = {}): string {
  const rng = new Rng(opts.seed ?? 0);
  const n = opts.lines ?? 20000;
  const arithmetic = opts.arithmetic ?? 0.25;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(line(rng, arithmetic));
  return out.join('\n') + '\n';
}

/** The verdict of checkToyLine on one line. */
export interface ToyLineCheck {
  /**
   * Whether the line is (or tries to be) a sentence or an arithmetic fact (it starts with a digit or
   * operator).
   */
  kind: 'sentence' | 'arithmetic';
  /** Grammatical sentence, or a well-formed and correct fact. */
  valid: boolean;
  /** For arithmetic: well-formed (digits, operator, "=", result) whether or not the result is right. */
  wellFormed: boolean;
}

type NumberSet = Set<0 | 1>;

/** Parses a noun phrase at words[i]; returns its possible numbers and the next index, or null. */
function parseNounPhrase(words: string[], i: number): { numbers: NumberSet; next: number } | null {
  const det = words[i];
  const numbers: NumberSet = new Set();
  if (det === 'a' || det === 'an' || DET_SINGULAR.includes(det)) numbers.add(0);
  if (DET_PLURAL.includes(det)) numbers.add(1);
  if (!numbers.size) return null;
  let j = i + 1;
  if (ADJECTIVES.includes(words[j])) j++;
  const after = words[i + 1];
  if (after === undefined) return null;
  if (det === 'a' && startsWithVowel(after)) return null;
  if (det === 'an' && !startsWithVowel(after)) return null;
  const noun = words[j];
  const forms: NumberSet = new Set();
  for (const [sg, pl] of NOUNS) {
    if (noun === sg) forms.add(0);
    if (noun === pl) forms.add(1);
  }
  const both = new Set([...numbers].filter((x) => forms.has(x))) as NumberSet;
  return both.size ? { numbers: both, next: j + 1 } : null;
}

/** Checks one line against the language's rules (see the header of this file). */
export function checkToyLine(text: string): ToyLineCheck {
  const m = /^(\d+) ([+-]) (\d+) = (\d+)\.$/.exec(text);
  if (m) {
    const [a, b, c] = [Number(m[1]), Number(m[3]), Number(m[4])];
    return { kind: 'arithmetic', wellFormed: true, valid: (m[2] === '+' ? a + b : a - b) === c };
  }
  if (/^[\d\s+=-]/.test(text)) return { kind: 'arithmetic', wellFormed: false, valid: false };
  const invalid: ToyLineCheck = { kind: 'sentence', valid: false, wellFormed: false };
  if (!text.endsWith('.')) return invalid;
  const words = text.slice(0, -1).split(' ');
  const subject = parseNounPhrase(words, 0);
  if (!subject) return invalid;
  const verb = words[subject.next];
  const agrees = (forms: ReadonlyArray<readonly [string, string]>) => forms.some(([sg, pl]) => (verb === sg && subject.numbers.has(0)) || (verb === pl && subject.numbers.has(1)));
  let ok = false;
  if (agrees(INTRANSITIVE)) {
    const rest = words.slice(subject.next + 1);
    ok = rest.length === 0 || (rest.length === 1 && ADVERBS.includes(rest[0]));
  } else if (agrees(TRANSITIVE)) {
    const object = parseNounPhrase(words, subject.next + 1);
    ok = object !== null && object.next === words.length;
  }
  return { kind: 'sentence', valid: ok, wellFormed: ok };
}

/** Counts from scoreToyText: how much of a sample follows the toy language. */
export interface ToyScore {
  /** Sentence lines. */
  sentences: number;
  /** Sentences that follow every agreement rule. */
  validSentences: number;
  /** Arithmetic lines. */
  facts: number;
  /** Facts in the right form ("d + d = n."). */
  wellFormedFacts: number;
  /** Well-formed facts whose result is right. */
  correctFacts: number;
}

/** Scores the complete lines of generated text (the first and last line are dropped when cut off). */
export function scoreToyText(text: string, opts: { dropFirst?: boolean; dropLast?: boolean } = {}): ToyScore {
  let lines = text.split('\n');
  if (opts.dropFirst) lines = lines.slice(1);
  if (opts.dropLast ?? true) lines = lines.slice(0, -1);
  const s: ToyScore = { sentences: 0, validSentences: 0, facts: 0, wellFormedFacts: 0, correctFacts: 0 };
  for (const l of lines) {
    if (!l.trim()) continue;
    const c = checkToyLine(l);
    if (c.kind === 'sentence') {
      s.sentences++;
      if (c.valid) s.validSentences++;
    } else {
      s.facts++;
      if (c.wellFormed) s.wellFormedFacts++;
      if (c.valid) s.correctFacts++;
    }
  }
  return s;
}

/** Entropy in nats per character of the text's character frequencies (what a model ignoring context can reach). */
export function unigramEntropy(text: string): number {
  const counts = new Map<string, number>();
  let n = 0;
  for (const c of text) {
    counts.set(c, (counts.get(c) ?? 0) + 1);
    n++;
  }
  let h = 0;
  for (const k of counts.values()) h -= (k / n) * Math.log(k / n);
  return h;
}
