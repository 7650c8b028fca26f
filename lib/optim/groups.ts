// Parameter groups by name: the usual "no weight decay on biases and norms" or "a lower learning
// rate for the body than for the head" without listing tensors by hand. Each trainable parameter
// goes to the first rule whose pattern matches its name (model.namedParameters()); the rest form one
// group with the optimizer's defaults. Frozen parameters (requiresGrad false) are left out, so they
// get no optimizer state.
import { ValueError } from '../errors';
import type { Module, Parameter } from '../nn/module';
import type { BaseOptions, ParamGroupInput } from './optimizer';

/** One rule of groupsByName: the parameters whose names match get these options. */
export interface GroupRule<O extends BaseOptions = BaseOptions> {
  /** A RegExp tested against the parameter's name, or a name suffix ('bias' matches 'fc.bias'). */
  match: RegExp | string;
  /** The group's options (lr, weightDecay, ...), over the optimizer's defaults. */
  options: Partial<O>;
}

/**
 * Parameter groups for an optimizer: one per rule (the trainable parameters whose names match it
 * first) and one of the remaining trainable parameters. A rule that matches no trainable parameter
 * is an error (a typo would otherwise silently change nothing).
 *
 * ```ts
 * new optim.AdamW(optim.groupsByName(gpt, [{ match: /(bias|ln\w*\.weight)$/, options: { weightDecay: 0 } }]), { lr: 3e-4, weightDecay: 0.1 });
 * ```
 */
export function groupsByName<O extends BaseOptions = BaseOptions>(model: Module, rules: GroupRule<O>[]): Array<ParamGroupInput<O>> {
  const op = 'groupsByName';
  if (!Array.isArray(rules)) throw new ValueError(op, 'rules must be an array of { match, options }');
  const test = rules.map((r, i) => {
    if (!r || (typeof r.match !== 'string' && !(r.match instanceof RegExp)) || typeof r.options !== 'object' || r.options === null) {
      throw new ValueError(op, `rules[${i}] must be { match: RegExp | string, options: {...} }`);
    }
    const m = r.match;
    return typeof m === 'string' ? (name: string) => name === m || name.endsWith(`.${m}`) : (name: string) => m.test(name);
  });
  const buckets: Parameter[][] = rules.map(() => []);
  const rest: Parameter[] = [];
  for (const [name, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    const i = test.findIndex((f) => f(name));
    (i < 0 ? rest : buckets[i]).push(p);
  }
  const empty = rules.map((r, i) => (buckets[i].length ? null : String(r.match))).filter((x) => x !== null);
  if (empty.length) throw new ValueError(op, `rules ${empty.join(', ')} match no trainable parameter`);
  const groups: Array<ParamGroupInput<O>> = rules.map((r, i) => ({ ...r.options, params: buckets[i] }) as ParamGroupInput<O>);
  if (rest.length) groups.push({ params: rest } as unknown as ParamGroupInput<O>);
  return groups;
}
