// Tokenizers: CharTokenizer round trips (including characters outside the BMP), save/load and
// corrupt saves; GPT-2 BPE against known GPT-2 ids, round trips, special tokens and bad ids.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import { CharTokenizer, GPT2Tokenizer } from '../../lib/data/index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-tok-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.test('CharTokenizer: vocabulary from text, encode/decode round trip', async (t) => {
  const text = 'hello world\nçà 😀 a';
  const tok = CharTokenizer.fromText(text);
  t.same(tok.chars.slice(0, 3), ['\n', ' ', 'a'], 'sorted by code point');
  t.equal(tok.vocabSize, new Set([...text]).size);
  t.ok(tok.chars.includes('😀'), 'a character outside the BMP is one token');
  const ids = tok.encode(text);
  t.equal(ids.length, [...text].length);
  t.equal(tok.decode(ids), text);
  t.same(tok.encode('he'), [tok.chars.indexOf('h'), tok.chars.indexOf('e')]);
  t.throws(() => tok.encode('hex'), /'?"x"'? at offset 2/);
  t.throws(() => tok.decode([tok.vocabSize]), kiln.IndexError);
  t.throws(() => tok.decode([1.5]), kiln.IndexError);
  t.throws(() => new CharTokenizer(['a', 'a']), kiln.ValueError);
  t.throws(() => new CharTokenizer(['ab']), kiln.ValueError);
});

t.test('CharTokenizer: save and load as JSON; corrupt files are FormatErrors', async (t) => {
  const tok = CharTokenizer.fromText('the quick brown fox 😀');
  const file = path.join(dir, 'chars.json');
  tok.save(file);
  const back = CharTokenizer.load(file);
  t.same(back.chars, tok.chars);
  t.equal(back.decode(tok.encode('quick fox')), 'quick fox');
  const bad = (content: string) => {
    fs.writeFileSync(file, content);
    return () => CharTokenizer.load(file);
  };
  t.throws(bad('{"type": "kiln.CharTokenizer", "version": 1, "chars": ['), kiln.FormatError, 'not JSON');
  t.throws(bad('{"type": "other", "version": 1, "chars": []}'), kiln.FormatError, 'wrong type');
  t.throws(bad('{"type": "kiln.CharTokenizer", "version": 2, "chars": []}'), kiln.FormatError, 'wrong version');
  t.throws(bad('{"type": "kiln.CharTokenizer", "version": 1, "chars": "abc"}'), kiln.FormatError, 'chars not an array');
  t.throws(bad('{"type": "kiln.CharTokenizer", "version": 1, "chars": ["a", "a"]}'), kiln.FormatError, 'repeated character');
  t.throws(bad('null'), kiln.FormatError);
});

t.test('GPT2Tokenizer: known GPT-2 ids and round trips', async (t) => {
  const tok = new GPT2Tokenizer();
  t.equal(tok.vocabSize, 50257);
  t.same(tok.encode('Hello world'), [15496, 995]);
  t.same(tok.encode('Hello, world!'), [15496, 11, 995, 0]);
  t.same(tok.encode(' the'), [262]);
  t.same(tok.encode('a\n\nb'), [64, 198, 198, 65]);
  t.equal(tok.decode([15496, 995]), 'Hello world');
  const text = 'Ünïcödé, emoji 😀 and code: for (let i = 0; i < 10; i++) {}\n\tTabs   and   spaces.';
  t.equal(tok.decode(tok.encode(text)), text, 'byte-level BPE round-trips any text');
  t.throws(() => tok.decode([50257]), kiln.IndexError);
  t.throws(() => tok.decode([-1]), kiln.IndexError);
});

t.test('GPT2Tokenizer: <|endoftext|> is text unless allowSpecial', async (t) => {
  const plain = new GPT2Tokenizer();
  const special = new GPT2Tokenizer({ allowSpecial: true });
  const text = 'a<|endoftext|> b<|endoftext|>';
  t.notOk(plain.encode(text).includes(50256), 'plain text by default');
  t.equal(plain.decode(plain.encode(text)), text);
  const ids = special.encode(text);
  t.same(ids, [...plain.encode('a'), 50256, ...plain.encode(' b'), 50256], 'the special id wherever it appears');
  t.equal(special.decode(ids), text);
  t.equal(special.eotToken, 50256);
});
