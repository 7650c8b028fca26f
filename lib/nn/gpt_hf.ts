// Hugging Face GPT-2 folders in and out: GPT.fromPretrained(dir) reads config.json and
// model.safetensors as transformers' GPT2LMHeadModel saves them (or the original openai-community
// layout: names without the `transformer.` prefix, with the legacy attention-mask buffers), and
// model.savePretrained(dir) writes that layout back so that GPT2LMHeadModel.from_pretrained loads it.
//
// The mapping: wte, wpe, ln_f as they are; block i's ln_1/ln_2 to blocks.i.ln1/ln2; GPT-2's Conv1D
// weights are stored [in, out], the transpose of a Linear's [out, in]: c_attn (the packed q/k/v
// projection) is attn.inProjWeight transposed, attn.c_proj attn.outProj.weight transposed, mlp.c_fc
// and mlp.c_proj mlp.fc and mlp.proj transposed; lm_head is tied to wte (not stored; when a file has
// it, it must equal wte). GPT-2's gelu_new is kiln's tanh GELU, its attention scale 1/sqrt(head dim).
import * as fs from 'fs';
import * as path from 'path';
import { noGrad } from '../autograd/grad_mode';
import { FormatError, ShapeError, ValueError } from '../errors';
import { writeFileAtomic } from '../io/atomic';
import { loadSafetensors, saveSafetensors } from '../io/safetensors';
import type { Tensor } from '../tensor';
import { GPT } from './gpt';
import type { GPTConfig } from './gpt';

/** Options of GPT.fromPretrained. */
export interface FromPretrainedOptions {
  /** Where the model's tensors go (default 'cpu'). */
  device?: string;
  /** Dropout of the model built (default 0; GPT-2's configs carry their own pdrop values, which are not applied). */
  dropout?: number;
}

const CONV1D = /^(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;

/** GPT-2's Linear-like modules within a block and kiln's (c_attn is the attention's packed projection). */
const BLOCK_MODULES: Record<string, string> = { 'attn.c_attn': 'attn', 'attn.c_proj': 'attn.outProj', 'mlp.c_fc': 'mlp.fc', 'mlp.c_proj': 'mlp.proj' };

/** kiln's name (within block i) of a GPT-2 block tensor name. */
const BLOCK_NAMES: Record<string, string> = {
  'ln_1.weight': 'ln1.weight', 'ln_1.bias': 'ln1.bias', 'ln_2.weight': 'ln2.weight', 'ln_2.bias': 'ln2.bias',
  'attn.c_attn.weight': 'attn.inProjWeight', 'attn.c_attn.bias': 'attn.inProjBias',
  ...Object.fromEntries(Object.entries(BLOCK_MODULES).filter(([hf]) => hf !== 'attn.c_attn').flatMap(([hf, k]) => [
    [`${hf}.weight`, `${k}.weight`], [`${hf}.bias`, `${k}.bias`],
  ])),
};

/**
 * Hugging Face's module name of a GPT module path: block Linear layers ('blocks.0.mlp.fc' ->
 * 'transformer.h.0.mlp.c_fc'), an attention's packed projection ('blocks.0.attn' -> ...c_attn),
 * 'lmHead' -> 'lm_head'; null for any other path.
 */
export function gpt2ModuleName(path: string): string | null {
  if (path === 'lmHead') return 'lm_head';
  const m = /^blocks\.(\d+)\.(.+)$/.exec(path);
  const hf = m && Object.keys(BLOCK_MODULES).find((k) => BLOCK_MODULES[k] === m[2]);
  return hf ? `transformer.h.${m![1]}.${hf}` : null;
}

/** The GPT module path of a Hugging Face module name (the inverse of gpt2ModuleName; the prefix optional), or null. */
export function gptModulePath(hfModule: string): string | null {
  const name = hfModule.replace(/^transformer\./, '');
  if (name === 'lm_head') return 'lmHead';
  const m = /^h\.(\d+)\.(.+)$/.exec(name);
  return m && BLOCK_MODULES[m[2]] ? `blocks.${m[1]}.${BLOCK_MODULES[m[2]]}` : null;
}
const TOP_NAMES: Record<string, string> = {
  'wte.weight': 'wte.weight', 'wpe.weight': 'wpe.weight', 'ln_f.weight': 'lnF.weight', 'ln_f.bias': 'lnF.bias',
};
// GPT-2 checkpoints of older transformers versions store the causal mask as buffers.
const LEGACY_BUFFERS = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/** The kiln GPTConfig of a GPT-2 config.json, checking that kiln's GPT computes what it describes. */
export function gpt2Config(json: Record<string, unknown>, where: string): GPTConfig {
  const op = 'GPT.fromPretrained';
  const bad = (msg: string) => new ValueError(op, `${where}: ${msg}`);
  const int = (key: string, ...alts: string[]): number => {
    for (const k of [key, ...alts]) {
      const v = json[k];
      if (v === undefined || v === null) continue;
      if (!Number.isInteger(v) || (v as number) <= 0) throw bad(`${k} must be a positive integer, got ${JSON.stringify(v)}`);
      return v as number;
    }
    throw bad(`${key} is missing`);
  };
  if (json.model_type !== undefined && json.model_type !== 'gpt2') throw bad(`model_type is ${JSON.stringify(json.model_type)}; kiln reads GPT-2 models`);
  const act = json.activation_function ?? 'gelu_new';
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh') throw bad(`activation_function ${JSON.stringify(act)} is not supported (kiln's GPT uses gelu_new, the tanh GELU)`);
  const nEmbd = int('n_embd');
  if (json.n_inner !== undefined && json.n_inner !== null && json.n_inner !== 4 * nEmbd) throw bad(`n_inner ${json.n_inner} is not supported (kiln's MLP is 4 x n_embd = ${4 * nEmbd})`);
  if (json.tie_word_embeddings === false) throw bad('tie_word_embeddings false is not supported (kiln\'s GPT ties lm_head to wte)');
  for (const k of ['scale_attn_by_inverse_layer_idx', 'add_cross_attention']) if (json[k] === true) throw bad(`${k} true is not supported`);
  if (json.scale_attn_weights === false) throw bad('scale_attn_weights false is not supported');
  const eps = json.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) throw bad(`layer_norm_epsilon must be a positive number, got ${JSON.stringify(eps)}`);
  const nHead = int('n_head');
  if (nEmbd % nHead !== 0) throw bad(`n_embd ${nEmbd} is not a multiple of n_head ${nHead}`);
  return { vocabSize: int('vocab_size'), blockSize: int('n_positions', 'n_ctx'), nLayer: int('n_layer'), nHead, nEmbd, layerNormEps: eps };
}

/** The kiln name of a GPT-2 tensor name (prefix already removed), or null for a legacy buffer; throws for an unknown name. */
function kilnName(name: string, nLayer: number, where: string): string | null {
  if (TOP_NAMES[name]) return TOP_NAMES[name];
  if (LEGACY_BUFFERS.test(name) || name === 'lm_head.weight') return null;
  const m = /^h\.(\d+)\.(.+)$/.exec(name);
  if (m && BLOCK_NAMES[m[2]] && Number(m[1]) < nLayer) return `blocks.${m[1]}.${BLOCK_NAMES[m[2]]}`;
  throw new FormatError('GPT.fromPretrained', `${where}: unexpected tensor ${name} for a GPT-2 of ${nLayer} layers`);
}

/**
 * Builds a GPT from a Hugging Face GPT-2 folder (config.json + model.safetensors). A missing file, a
 * config kiln's GPT cannot compute, an unknown tensor, a missing one or one whose shape does not fit
 * the config is an error naming it.
 */
export function gpt2FromPretrained(dir: string, opts: FromPretrainedOptions = {}): GPT {
  const op = 'GPT.fromPretrained';
  if (typeof dir !== 'string' || !fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new ValueError(op, `${String(dir)} is not a folder (expected a Hugging Face GPT-2 folder with config.json and model.safetensors)`);
  }
  const configFile = path.join(dir, 'config.json');
  const weightsFile = path.join(dir, 'model.safetensors');
  for (const f of [configFile, weightsFile]) {
    if (!fs.existsSync(f)) {
      const hint = f === weightsFile && fs.existsSync(path.join(dir, 'pytorch_model.bin')) ? ' (pytorch_model.bin is a pickle, which kiln does not read: convert it to safetensors)' : '';
      throw new ValueError(op, `${dir} has no ${path.basename(f)}${hint}`);
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new FormatError(op, `${configFile} is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new FormatError(op, `${configFile} is not a JSON object`);
  const config = gpt2Config(json as Record<string, unknown>, configFile);
  const { tensors } = loadSafetensors(weightsFile);
  const model = new GPT({ ...config, dropout: opts.dropout ?? 0 });
  const transposed: Tensor[] = [];
  try {
    const prefixed = [...tensors.keys()].some((k) => k.startsWith('transformer.'));
    const mapped = new Map<string, Tensor>();
    let head: Tensor | null = null;
    noGrad(() => {
      for (const [full, t] of tensors) {
        const name = prefixed && full.startsWith('transformer.') ? full.slice('transformer.'.length) : full;
        if (name === 'lm_head.weight') head = t;
        const k = kilnName(name, config.nLayer, weightsFile);
        if (k === null) continue;
        const short = name.replace(/^h\.\d+\./, '');
        if (CONV1D.test(short)) {
          if (t.ndim !== 2) throw new ShapeError(op, `${weightsFile}: ${full} has shape [${t.shape}], expected a 2-d Conv1D weight`);
          const w = t.transpose(0, 1).contiguous();
          transposed.push(w);
          mapped.set(k, w);
        } else {
          mapped.set(k, t);
        }
      }
      // lm_head is the tied embedding: the model's lmHead shares wte's tensor.
      if (mapped.has('wte.weight')) mapped.set('lmHead.weight', mapped.get('wte.weight')!);
    });
    const h = head as Tensor | null;
    const wte = mapped.get('wte.weight');
    if (h && wte && !(h.shape.join() === wte.shape.join() && noGrad(() => h.sub(wte).abs().max().item()) === 0)) {
      throw new ValueError(op, `${weightsFile}: lm_head.weight differs from wte.weight; kiln's GPT ties them (tie_word_embeddings)`);
    }
    try {
      model.loadStateDict(mapped);
    } catch (e) {
      // The config made a model the weights do not fit: say so, with what loadStateDict found.
      throw new FormatError(op, `${weightsFile} does not match ${configFile} (n_layer ${config.nLayer}, n_embd ${config.nEmbd}, vocab_size ${config.vocabSize}, n_positions ${config.blockSize}): ${(e as Error).message.replace(/^loadStateDict: error\(s\) loading the state dict into GPT: /, '')}`);
    }
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    for (const t of [...tensors.values(), ...transposed]) t.dispose();
  }
  return opts.device ? model.to({ device: opts.device }) : model;
}

/**
 * Writes model as a Hugging Face GPT-2 folder: config.json and model.safetensors in the layout
 * GPT2LMHeadModel.save_pretrained writes (`transformer.` names, Conv1D weights [in, out], no
 * lm_head: it is tied). Each file is written atomically; the folder is made when missing.
 */
export function gpt2SavePretrained(model: GPT, dir: string): void {
  const op = 'GPT.savePretrained';
  const c = model.config;
  if (!c.bias) throw new ValueError(op, 'GPT-2 has biases; a GPT built with bias: false has no GPT-2 layout');
  fs.mkdirSync(dir, { recursive: true });
  const out = new Map<string, Tensor>();
  const views: Tensor[] = [];
  const own = model.stateDict();
  const inverseBlock = Object.fromEntries(Object.entries(BLOCK_NAMES).map(([hf, k]) => [k, hf]));
  const inverseTop = Object.fromEntries(Object.entries(TOP_NAMES).map(([hf, k]) => [k, hf]));
  try {
    noGrad(() => {
      for (const [k, t] of own) {
        if (k === 'lmHead.weight') continue;
        if (/(^|\.)(lora|inProjLora)\./.test(k)) {
          throw new ValueError(op, `the model has LoRA adapters (${k}): fold them into the weights first with nn.lora.mergeAndUnload(model)`);
        }
        const m = /^blocks\.(\d+)\.(.+)$/.exec(k);
        const hf = m ? `h.${m[1]}.${inverseBlock[m[2]]}` : inverseTop[k];
        if (!hf || hf.endsWith('.undefined')) throw new ValueError(op, `the model has a tensor ${k} with no GPT-2 name`);
        // saveSafetensors reads any device and layout: a transposed view is enough.
        let v = t;
        if (CONV1D.test(hf.replace(/^h\.\d+\./, ''))) {
          v = t.transpose(0, 1);
          views.push(v);
        }
        out.set(`transformer.${hf}`, v);
      }
    });
    saveSafetensors(path.join(dir, 'model.safetensors'), out, { format: 'pt' });
  } finally {
    for (const t of [...views, ...own.values()]) t.dispose();
  }
  const config = {
    architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', vocab_size: c.vocabSize, n_positions: c.blockSize, n_ctx: c.blockSize,
    n_embd: c.nEmbd, n_layer: c.nLayer, n_head: c.nHead, n_inner: null, activation_function: 'gelu_new',
    layer_norm_epsilon: c.layerNormEps, resid_pdrop: c.dropout, embd_pdrop: c.dropout, attn_pdrop: c.dropout,
    initializer_range: 0.02, scale_attn_weights: true, use_cache: true, tie_word_embeddings: true,
    // GPT-2's <|endoftext|>, or the last id of a smaller vocabulary.
    bos_token_id: Math.min(50256, c.vocabSize - 1), eos_token_id: Math.min(50256, c.vocabSize - 1),
  };
  writeFileAtomic(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}
