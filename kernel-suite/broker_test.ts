// Broker mode on the real kernel: `cli/main.ts serve` holds /dev/iommu (granted that one path and the shim only) and
// relays for a client in this process that attaches a selftest mock device over the socket.
import assert from "node:assert/strict";
import { BrokerClient } from "../lib/broker/client.ts";
import { kernelTest, shim } from "./harness.ts";
import { startBroker } from "../tests/broker/process.ts";

const cli = new URL("../cli/main.ts", import.meta.url).pathname;

/** `cli/main.ts serve` on /dev/iommu with the least flags: the shim, /dev/iommu and the socket's folder. */
function startKernelBroker(dir: string, sock: string, serve: string[] = []) {
  return startBroker({
    sock,
    dir,
    serve,
    flags: ["--no-check", "--no-lock", `--allow-ffi=${shim.path}`, "--allow-env=IOMMU_RELAY_SHIM"],
    read: ["/dev/iommu", dir],
    write: ["/dev/iommu", dir],
    env: { IOMMU_RELAY_SHIM: shim.path },
  });
}

kernelTest(
  "broker (kernel): a client relays 2017-format records to a broker holding /dev/iommu",
  ["selftest-pasid"],
  async () => {
    const dir = await Deno.makeTempDir();
    const sock = `${dir}/relay.sock`;
    const broker = await startKernelBroker(dir, sock);
    try {
      await using relay = await BrokerClient.connect(sock);
      const dev = await relay.attach(1, 1); // a selftest mock device with PASID support
      // The mock IOMMU takes selftest tables (iommu-relay's format 2 in the 2017 bind record).
      await dev.bind({ op: "bind", domain: 1, pasid: 6, table: { format: "selftest", iotlb: 0x66 } });
      for (let p = 0; p < 8; p++) {
        await dev.invalidate({
          op: "invalidate",
          domain: 1,
          scope: { kind: "pasid-range", pasid: 6, firstPage: p, pages: 1 },
        });
      }
      assert.deepEqual(
        await dev.sync(),
        { ok: true, firstFailedRequest: 0, failures: 0, hostIoctls: 1, firstErrno: 0 },
        "one real ioctl",
      );
      // A VT-d table is refused by the mock IOMMU, and the broker says so.
      const refused = await dev.bind({
        op: "bind",
        domain: 1,
        pasid: 7,
        table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
      })
        .then(() => "accepted", (e) => String(e));
      assert.match(refused, /EOPNOTSUPP|EINVAL/);
      await dev.detach();
    } finally {
      await broker.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

kernelTest(
  "broker (kernel): bind-pasid, invalidate and unbind-pasid from separate CLI processes reach a named mock device",
  ["selftest-pasid"],
  async () => {
    const dir = await Deno.makeTempDir();
    const sock = `${dir}/relay.sock`;
    const broker = await startKernelBroker(dir, sock, ["--device", "gpu=2:mock"]);
    const call = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        // The client: the socket only. No FFI, no /dev/iommu.
        args: [
          "run",
          "--no-check",
          "--no-lock",
          "--quiet",
          "--no-prompt",
          `--allow-read=${dir}`,
          `--allow-write=${sock}`,
          `--allow-net=unix:${sock}`,
          cli,
          ...args,
          "--socket",
          sock,
          "--device",
          "gpu",
          "--json",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const d = new TextDecoder();
      assert.equal(out.code, 0, d.decode(out.stderr));
      return JSON.parse(d.decode(out.stdout));
    };
    try {
      await call("bind-pasid", "--pasid", "6", "--table", "selftest:0x66");
      const r = await call("invalidate", "--pasid", "6", "--range", "0x0+0x8000");
      assert.deepEqual([r.ok, r.failures, r.hostIoctls], [true, 0, 1], "one IOMMU_HWPT_INVALIDATE, accepted");
      await call("unbind-pasid", "--pasid", "6");
      const after = await call("invalidate", "--pasid", "6");
      assert.equal(after.hostIoctls, 0, "nothing bound any more");
    } finally {
      await broker.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

kernelTest(
  "broker (kernel): a parent opens /dev/iommu as fd 3; the broker adopts it (--iommufd-fd 3) and opens no device path",
  ["selftest-pasid"],
  async () => {
    const dir = await Deno.makeTempDir();
    const sock = `${dir}/relay.sock`;
    // Granted the shim and the socket's folder only: no read or write of /dev/iommu, so only the handed-in fd works.
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        `exec 3<>/dev/iommu; exec "$0" "$@"`,
        Deno.execPath(),
        "run",
        "--no-check",
        "--no-lock",
        "--quiet",
        "--no-prompt",
        `--allow-ffi=${shim.path}`,
        "--allow-env=IOMMU_RELAY_SHIM",
        `--allow-read=${dir}`,
        `--allow-write=${dir}`,
        `--allow-net=unix:${sock}`,
        cli,
        "serve",
        "--socket",
        sock,
        "--iommufd-fd",
        "3",
      ],
      env: { IOMMU_RELAY_SHIM: shim.path, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let seen = "";
      while (!seen.includes("listening on")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the broker exited: ${seen} ${await new Response(child.stderr).text()}`);
        seen += value;
      }
      await using relay = await BrokerClient.connect(sock);
      const dev = await relay.attach(1, 1);
      await dev.bind({ op: "bind", domain: 1, pasid: 6, table: { format: "selftest", iotlb: 0x66 } });
      await dev.invalidate({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 6 } });
      assert.deepEqual(await dev.sync(), {
        ok: true,
        firstFailedRequest: 0,
        failures: 0,
        hostIoctls: 1,
        firstErrno: 0,
      });
    } finally {
      child.kill("SIGTERM");
      await reader.cancel();
      await child.status;
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
);
