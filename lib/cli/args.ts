// Command-line options for kiln's commands: one table per command gives each option's name, type,
// default and help line; from it come node's util.parseArgs configuration, value checks (integers,
// ranges, choices), a JSON config file's validation, and the --help text. Misuse is a UsageError,
// which the CLI prints as one line and exits with code 2.
import * as fs from 'fs';
import { parseArgs } from 'util';

/** A mistake in how the command was called (bad flag or value, missing file): exit code 2. */
export class UsageError extends Error {}

export type OptionKind = 'string' | 'boolean' | 'int' | 'number';

export interface OptionSpec {
  /** Flag name without dashes, e.g. 'batch-size'. */
  name: string;
  kind: OptionKind;
  /** Placeholder in the help text, e.g. '<n>'. */
  value?: string;
  help: string;
  /** Shown in the help text as (default: ...). */
  defaultText?: string;
  /** Allowed values of a string option. */
  choices?: readonly string[];
  /** Smallest allowed value of a number (inclusive unless minExclusive). */
  min?: number;
  minExclusive?: boolean;
  max?: number;
  /** Accepted in a --config JSON file (default true for all but config itself). */
  inConfig?: boolean;
}

export interface CommandSpec {
  name: string;
  usage: string;
  summary: string;
  options: OptionSpec[];
  /** Paragraphs after the options (examples, notes). */
  epilog?: string;
}

export type OptionValues = Record<string, string | number | boolean | undefined>;

/** 'batch-size' -> 'batchSize'. */
export const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * Checks and converts one option value (text from the command line, or JSON from a config file);
 * prefix starts the error message ('--' for flags).
 */
export function convert(spec: OptionSpec, raw: unknown, prefix: string): string | number | boolean {
  const fail = (what: string): never => {
    throw new UsageError(`${prefix}${spec.name} ${what}, got ${JSON.stringify(raw)}`);
  };
  if (spec.kind === 'boolean') {
    if (typeof raw !== 'boolean') fail('must be true or false');
    return raw as boolean;
  }
  if (spec.kind === 'string') {
    if (typeof raw !== 'string') fail('must be a string');
    if (spec.choices && !spec.choices.includes(raw as string)) fail(`must be one of ${spec.choices.join(', ')}`);
    return raw as string;
  }
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  if (!Number.isFinite(n)) fail('must be a number');
  if (spec.kind === 'int' && !Number.isInteger(n)) fail('must be an integer');
  if (spec.min !== undefined && (spec.minExclusive ? n <= spec.min : n < spec.min)) fail(`must be ${spec.minExclusive ? '>' : '>='} ${spec.min}`);
  if (spec.max !== undefined && n > spec.max) fail(`must be <= ${spec.max}`);
  return n;
}

/**
 * Parses argv against the command's options. Unknown flags, missing values and bad values are
 * UsageErrors. Returns the values by camelCase name (undefined where not given) and whether --help
 * was asked for.
 */
export function parse(cmd: CommandSpec, argv: string[]): { values: OptionValues; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const o of cmd.options) options[o.name] = { type: o.kind === 'boolean' ? 'boolean' : 'string' };
  // parseArgs takes '-1' after a flag for an option; a negative number there is the flag's value.
  const takesValue = new Set(cmd.options.filter((o) => o.kind !== 'boolean').map((o) => `--${o.name}`));
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (takesValue.has(argv[i]) && /^-\.?\d/.test(argv[i + 1] ?? '')) args.push(`${argv[i]}=${argv[++i]}`);
    else args.push(argv[i]);
  }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (e) {
    // parseArgs' messages are one line but name the fix for the API, not the user: reword the common ones.
    const msg = (e as Error).message;
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    if (unknown) throw new UsageError(`unknown option ${unknown[1]}`);
    const missing = /Option '(?:-\w, )?--([\w-]+) <value>' argument missing/.exec(msg);
    if (missing) throw new UsageError(`--${missing[1]} needs a value`);
    throw new UsageError(msg.split('\n')[0]);
  }
  if (parsed.positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  const values: OptionValues = {};
  for (const o of cmd.options) {
    const raw = parsed.values[o.name];
    values[camel(o.name)] = raw === undefined ? undefined : convert(o, raw, '--');
  }
  return { values, help: parsed.values.help === true };
}

/**
 * Reads a JSON config file of option values (keys as flag names or camelCase names) and returns them
 * by camelCase name. Unknown keys and bad values are UsageErrors naming the file.
 */
export function readConfig(cmd: CommandSpec, file: string): OptionValues {
  if (!fs.existsSync(file)) throw new UsageError(`config file not found: ${file}`);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`config file ${file} must hold a JSON object`);
  const byName = new Map<string, OptionSpec>();
  for (const o of cmd.options) if (o.inConfig !== false) byName.set(o.name, o).set(camel(o.name), o);
  const out: OptionValues = {};
  for (const [k, v] of Object.entries(json)) {
    const spec = byName.get(k);
    if (!spec) throw new UsageError(`config file ${file}: unknown key '${k}' (known: ${cmd.options.filter((o) => o.inConfig !== false).map((o) => camel(o.name)).join(', ')})`);
    out[camel(spec.name)] = convert(spec, v, `config file ${file}: `);
  }
  return out;
}

/**
 * The option values of a run: those of the --config file (when values.config names one) overlaid by
 * the flags given.
 */
export function withConfig(cmd: CommandSpec, values: OptionValues): OptionValues {
  const merged: OptionValues = values.config ? readConfig(cmd, values.config as string) : {};
  for (const [k, v] of Object.entries(values)) if (v !== undefined) merged[k] = v;
  return merged;
}

/** The --help text of a command. */
export function helpText(cmd: CommandSpec): string {
  const rows = [...cmd.options.map((o) => [`--${o.name}${o.value ? ` ${o.value}` : ''}`, o]), ['-h, --help', null]] as Array<[string, OptionSpec | null]>;
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  const lines = [`Usage: ${cmd.usage}`, '', cmd.summary, '', 'Options:'];
  for (const [flag, o] of rows) {
    let help = o ? o.help : 'show this help';
    if (o?.choices) help += ` (${o.choices.join(' or ')})`;
    if (o?.defaultText) help += ` (default: ${o.defaultText})`;
    lines.push(`  ${flag.padEnd(width)}${help}`);
  }
  if (cmd.epilog) lines.push('', cmd.epilog);
  return lines.join('\n') + '\n';
}
