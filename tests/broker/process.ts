// `cli/main.ts serve` as a subprocess for the tests that talk to a broker (tests/broker, tests/cli/ and, inside the
// test VM, kernel-suite/broker_test.ts): started with exactly the flags a test grants, awaited until it says `until`.
const cli = new URL("../../cli/main.ts", import.meta.url).pathname;

/** A running broker: its process, its stdout reader (already past `until`), and a clean stop. */
export interface BrokerProcess {
  readonly child: Deno.ChildProcess;
  readonly reader: ReadableStreamDefaultReader<string>;
  stop(): Promise<void>;
}

/**
 * Start `cli/main.ts serve --socket <sock> <serve...>` granted read and write of `read` / `write` (default: `dir`), the
 * socket, and `flags`; resolve once its output contains `until` (default "listening on").
 */
export async function startBroker(opts: {
  sock: string;
  dir: string;
  serve: string[];
  read?: string[];
  write?: string[];
  flags?: string[];
  env?: Record<string, string>;
  until?: string;
}): Promise<BrokerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      ...(opts.flags ?? []),
      `--allow-read=${(opts.read ?? [opts.dir]).join(",")}`,
      `--allow-write=${(opts.write ?? [opts.dir]).join(",")}`,
      `--allow-net=unix:${opts.sock}`,
      cli,
      "serve",
      "--socket",
      opts.sock,
      ...opts.serve,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...opts.env },
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = async () => {
    child.kill("SIGTERM");
    await reader.cancel();
    await child.status;
    await child.stderr.cancel();
  };
  let seen = "";
  while (!seen.includes(opts.until ?? "listening on")) {
    const { value, done } = await reader.read();
    if (done) {
      await stop();
      throw new Error(`the broker exited: ${seen}`);
    }
    seen += value;
  }
  return { child, reader, stop };
}
