/**
 * What every command of the host CLI shares: the {@linkcode Command} shape, option parsing that refuses an unknown
 * option in one line, numbers as written on a command line, the PASID / table / range arguments of the broker
 * clients, JSON-or-human output, and the one place that turns an error into a message and an exit code.
 *
 * @module
 */
import { ShimRefusedError } from "../ffi/native.ts";
import { KernelError } from "../lib/kernel/mod.ts";
import { UnsupportedError } from "../lib/kernel/errors.ts";
import { RequestError } from "../lib/request/request.ts";
import type { InvalidateRequest, PasidOrRid, StageOneTable } from "../lib/request/request.ts";
import { BrokerError } from "../lib/broker/client.ts";
import { errnoName, UapiError } from "../lib/uapi/mod.ts";

/** The name the usage lines give the CLI. */
export const PROGRAM = "cli/main.ts";

/** One command of the CLI, as `cli/main.ts` lists and dispatches it. */
export interface Command {
  /** What follows the program name, e.g. `hw-info`. */
  readonly name: string;
  /** The command with its positionals, for the command list (`hw-info <cdev>`). */
  readonly synopsis: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The command's `--help` text: usage line, options, what it does. */
  readonly help: string;
  /**
   * Run with the arguments after the command's name; resolves to the exit code (0 done, 1 failed, 2 refused
   * arguments). Errors are printed as one `error: ...` line on stderr, never thrown.
   */
  run(args: string[]): Promise<number>;
}

/** A refusal with its exit code (2: the arguments; 1: anything else). */
export class CliError extends Error {
  /** `message` is printed after `error: `; `code` is the exit code. */
  constructor(message: string, readonly code: number = 1) {
    super(message);
  }
}

/**
 * Run a command's `parseArgs` call (node:util, `strict`), turning its refusals into a one-line {@linkcode CliError}
 * (code 2) that names the command and the option: `invalidate: unknown option '--frob' (see invalidate --help)`.
 */
export function parseCommand<R>(command: string, parse: () => R): R {
  try {
    return parse();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (!(e instanceof TypeError) || typeof code !== "string" || !code.startsWith("ERR_PARSE_ARGS")) throw e;
    const first = e.message.split(". ")[0].replace(/\.$/, "");
    const what = first.charAt(0).toLowerCase() + first.slice(1);
    throw new CliError(`${command}: ${what} (see ${PROGRAM} ${command} --help)`, 2);
  }
}

/**
 * Run a command's body: resolve to 0 when it returns, or print `error: <message>` (with the errno of a broker
 * refusal) and resolve to the error's exit code — 2 for refused arguments, 1 otherwise.
 */
export async function guarded(body: () => Promise<void>): Promise<number> {
  try {
    await body();
    return 0;
  } catch (e) {
    const known = e instanceof CliError || e instanceof KernelError || e instanceof UnsupportedError ||
      e instanceof UapiError || e instanceof BrokerError || e instanceof RequestError || e instanceof ShimRefusedError;
    const errno = e instanceof BrokerError ? ` (${errnoName(-e.errno)}, errno ${e.errno})` : "";
    console.error(`error: ${known ? e.message : e}${errno}`);
    return e instanceof CliError ? e.code : 1;
  }
}

/** `JSON.stringify`'s replacer for CLI output: bigints as hex strings, byte arrays as number arrays. */
export const jsonReplacer = (_: string, v: unknown): unknown =>
  typeof v === "bigint" ? `0x${v.toString(16)}` : v instanceof Uint8Array ? [...v] : v;

/** Print `data` as one JSON line when `json`, else the `human` text. */
export function output(json: boolean, human: string, data: unknown): void {
  console.log(json ? JSON.stringify(data, jsonReplacer) : human);
}

/**
 * A number as written on a command line: decimal or 0x hex, a safe non-negative integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { number } from "./args.ts";
 * assert.equal(number("0x10", "--pasid"), 16);
 * assert.throws(() => number("-1", "--pasid"), /--pasid: '-1' is not a non-negative integer/);
 * ```
 */
export function number(text: string, what: string): number {
  const n = /^(0x[0-9a-f]+|[0-9]+)$/i.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n)) throw new CliError(`${what}: '${text}' is not a non-negative integer`, 2);
  return n;
}

/**
 * `--pasid N|rid`: a PASID, the RID, or undefined when not given and not `required` (else refused, showing `help`).
 */
export function pasidArg(
  text: string | undefined,
  required: boolean,
  command: string,
  help: string,
): PasidOrRid | undefined {
  if (text === undefined) {
    if (required) throw new CliError(`${command} needs --pasid N|rid\n${help}`, 2);
    return undefined;
  }
  return text === "rid" ? "rid" : number(text, "--pasid");
}

/** `--table FORMAT:VALUE`: `vtd-s1:<table address>[:48|57]` or `selftest:<IOTLB value>` (else refused, showing `help`). */
export function tableArg(text: string | undefined, help: string): StageOneTable {
  const [format, value, width] = (text ?? "").split(":");
  if (format === "vtd-s1" && value) {
    const w = width === undefined ? 48 : Number(width);
    if (w !== 48 && w !== 57) throw new CliError(`--table: address width ${width} is not 48 or 57`, 2);
    return { format, tableAddress: number(value, "--table address"), addressWidth: w };
  }
  if (format === "selftest" && value && width === undefined) return { format, iotlb: number(value, "--table IOTLB") };
  throw new CliError(`--table takes vtd-s1:<address>[:48|57] or selftest:<value>\n${help}`, 2);
}

/**
 * An invalidation's scope from `--range ADDR+BYTES` (widened to whole 4 KiB pages, never narrowed) and `--pasid`:
 * without either, everything of the domain.
 */
export function scopeArg(
  range: string | undefined,
  pasid: PasidOrRid | undefined,
  help: string,
): InvalidateRequest["scope"] {
  if (range !== undefined) {
    const m = /^([^+]+)\+(.+)$/.exec(range);
    if (!m) throw new CliError(`--range takes ADDR+BYTES\n${help}`, 2);
    const start = number(m[1], "--range address"), bytes = number(m[2], "--range size");
    if (bytes === 0) throw new CliError("--range: an empty range invalidates nothing", 2);
    const firstPage = Math.floor(start / 4096);
    const pages = Math.ceil((start + bytes) / 4096) - firstPage;
    return typeof pasid === "number"
      ? { kind: "pasid-range", pasid, firstPage, pages }
      : { kind: "range", firstPage, pages };
  }
  return typeof pasid === "number" ? { kind: "pasid", pasid } : { kind: "all" };
}
