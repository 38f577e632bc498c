// A VMM-side client of the broker, run with no FFI permission at all (only the socket): attach, bind, invalidate,
// sync, one malformed record, sync again. Prints its observations as JSON.
import { BrokerClient, BrokerError } from "../../lib/broker/client.ts";
import { BrokerOp } from "../../lib/broker/protocol.ts";

const [path, domainArg] = Deno.args;
const domain = Number(domainArg);
const out: Record<string, unknown> = {};
await using relay = await BrokerClient.connect(path);
const dev = await relay.attach(domain);
await dev.bind({
  op: "bind",
  domain,
  pasid: 5,
  table: { format: "vtd-s1", tableAddress: 0x10_0000, addressWidth: 48 },
});
for (let i = 0; i < 8; i++) {
  await dev.invalidate({
    op: "invalidate",
    domain,
    scope: { kind: "pasid-range", pasid: 5, firstPage: 0x100 + i * 16, pages: 16 },
    leaf: true,
  });
}
out.sync = await dev.sync();
try {
  await relay.call(BrokerOp.INVALIDATE, dev.handle, new Uint8Array(20)); // not a 2017 record
  out.malformed = "accepted";
} catch (e) {
  out.malformed = e instanceof BrokerError ? `errno ${e.errno}: ${e.message}` : String(e);
}
try {
  await relay.call(BrokerOp.SYNC, 999);
} catch (e) {
  out.foreignDevice = e instanceof BrokerError ? e.errno : String(e);
}
await dev.invalidate({ op: "invalidate", domain, scope: { kind: "all" } });
out.syncAfter = await dev.sync();
out.ffi = (await Deno.permissions.query({ name: "ffi" })).state;
await dev.detach();
console.log(JSON.stringify(out));
