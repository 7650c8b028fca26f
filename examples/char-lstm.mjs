// A character-level LSTM language model on a short built-in text: characters -> embedding -> a
// two-layer nn.LSTM -> a linear layer over the characters, trained with Adam on random windows of the
// text for a few hundred steps (under a minute on a CPU). It prints the loss (a running average) as it
// falls, then samples text one character at a time, carrying the LSTM's [h, c] state from step to step.
// Run (after `npm install`): node examples/char-lstm.mjs [--steps 300]
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

const { nn, optim, data } = kiln;
const { values: args } = parseArgs({ options: { steps: { type: 'string', default: '300' } } });
const steps = Number(args.steps);
kiln.manualSeed(0);

const text = `Twinkle, twinkle, little star,
How I wonder what you are!
Up above the world so high,
Like a diamond in the sky.
When the blazing sun is gone,
When he nothing shines upon,
Then you show your little light,
Twinkle, twinkle, all the night.
Then the traveller in the dark
Thanks you for your tiny spark;
He could not see which way to go,
If you did not twinkle so.
In the dark blue sky you keep,
And often through my curtains peep,
For you never shut your eye
Till the sun is in the sky.
As your bright and tiny spark
Lights the traveller in the dark,
Though I know not what you are,
Twinkle, twinkle, little star.
Mary had a little lamb,
Its fleece was white as snow;
And everywhere that Mary went
The lamb was sure to go.
It followed her to school one day,
Which was against the rule;
It made the children laugh and play
To see a lamb at school.
`;

const tokenizer = data.CharTokenizer.fromText(text);
const ids = tokenizer.encode(text);
const V = tokenizer.vocabSize, seqLen = 48, batch = 32;

class CharLSTM extends nn.Module {
  embed = new nn.Embedding(V, 32);
  lstm = new nn.LSTM(32, 128, { numLayers: 2, batchFirst: true, dropout: 0.1 });
  head = new nn.Linear(128, V);
  /** tokens [B, T] -> logits [B, T, V] and the LSTM's final [h, c]. */
  forward(tokens, state = null) {
    const [out, next] = this.lstm.forward(this.embed.forward(tokens), state);
    return [this.head.forward(out), next];
  }
}
const model = new CharLSTM();
const opt = new optim.Adam(model.parameters(), { lr: 5e-3 });
console.log(`${text.length} characters, ${V} distinct; ${model.numParameters()} parameters`);

// Random windows: inputs are seqLen characters, targets the same shifted by one.
const rng = new data.Rng(1);
function windows() {
  const x = [], y = [];
  for (let b = 0; b < batch; b++) {
    const s = rng.below(ids.length - seqLen - 1);
    x.push(ids.slice(s, s + seqLen));
    y.push(ids.slice(s + 1, s + seqLen + 1));
  }
  return [kiln.tensor(x, { dtype: 'int64' }), kiln.tensor(y, { dtype: 'int64' })];
}

const t0 = Date.now();
let avg = 0;
for (let step = 1; step <= steps; step++) {
  const loss = kiln.tidy(() => {
    const [x, y] = windows();
    const [logits] = model.forward(x);
    return kiln.crossEntropy(logits.reshape([-1, V]), y.reshape([-1]));
  });
  loss.backward();
  optim.clipGradNorm(model.parameters(), 1).dispose();
  opt.step();
  opt.zeroGrad();
  avg = step === 1 ? loss.item() : 0.9 * avg + 0.1 * loss.item();
  if (step === 1 || step % 25 === 0) console.log(`step ${String(step).padStart(4)}  loss ${avg.toFixed(3)}  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  loss.dispose();
}

// Sampling: feed the prompt once, then one character at a time with the carried state.
function sample(prompt, n = 200) {
  model.eval();
  let out = prompt;
  kiln.noGrad(() => {
    let state = null;
    let next = kiln.tensor([tokenizer.encode(prompt)], { dtype: 'int64' });
    for (let i = 0; i < n; i++) {
      const [tok, s] = kiln.tidy(() => {
        const [logits, s] = model.forward(next, state);
        return [nn.sampleLogits(logits.select(1, -1), { temperature: 0.6 }), s];
      });
      out += tokenizer.decode([tok.item()]);
      for (const t of [next, ...(state ?? [])]) t.dispose();
      [next, state] = [tok, s];
    }
    for (const t of [next, ...state]) t.dispose();
  });
  model.train();
  return out;
}
console.log(`\nsample:\n${sample('Twinkle')}`);
console.log(`\ntrained ${steps} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s; live tensors: ${kiln.memory().tensors}`);
