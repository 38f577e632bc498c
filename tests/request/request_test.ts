import assert from "node:assert/strict";
import { PAGE_SPACE, pageRangeOfBytes, RequestError, validateRequest } from "../../lib/request/request.ts";

const reason = (r: string) => (e: unknown) => e instanceof RequestError && e.reason === r;

Deno.test("request: valid requests of every kind pass", () => {
  validateRequest({ op: "invalidate", domain: 0, scope: { kind: "all" } });
  validateRequest({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 2 ** 20 - 1 } });
  validateRequest({
    op: "invalidate",
    domain: 1,
    scope: { kind: "range", firstPage: PAGE_SPACE - 1, pages: 1 },
    noPasid: true,
  });
  validateRequest({
    op: "bind",
    domain: 1,
    pasid: "rid",
    table: { format: "vtd-s1", tableAddress: 0x1000, addressWidth: 48 },
  });
  validateRequest({ op: "sync" });
});

Deno.test("request: PASID width, empty and wrapping ranges, conflicting flags, bad tables are typed errors", () => {
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 2 ** 20 } }),
    reason("pasid-out-of-range"),
  );
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 16 } }, { pasidBits: 4 }),
    reason("pasid-out-of-range"),
  );
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 5, pages: 0 } }),
    reason("empty-range"),
  );
  assert.throws(
    () =>
      validateRequest({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: PAGE_SPACE - 1, pages: 2 } }),
    reason("range-wraps"),
  );
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "range", firstPage: 1.5, pages: 1 } }),
    reason("not-integer"),
  );
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "pasid", pasid: 3 }, noPasid: true }),
    reason("conflicting-flags"),
  );
  assert.throws(
    () => validateRequest({ op: "invalidate", domain: 1, scope: { kind: "all" }, hints: { ttl: 4 } }),
    reason("unknown-flag"),
  );
  assert.throws(
    () =>
      validateRequest({
        op: "bind",
        domain: 1,
        pasid: 1,
        table: { format: "vtd-s1", tableAddress: 0x1234, addressWidth: 48 },
      }),
    reason("misaligned"),
  );
  assert.throws(
    () =>
      validateRequest({
        op: "bind",
        domain: 1,
        pasid: 1,
        table: { format: "vtd-s1", tableAddress: 0, addressWidth: 39 as 48 },
      }),
    reason("bad-table"),
  );
  assert.throws(() => validateRequest({ op: "nope" } as never), reason("unknown-flag"));
});

Deno.test("request: byte ranges become whole pages, up to the top of the 64-bit space", () => {
  assert.deepEqual(pageRangeOfBytes(0x1000n, 1n), { firstPage: 1, pages: 1 });
  assert.deepEqual(pageRangeOfBytes(0xfffn, 2n), { firstPage: 0, pages: 2 });
  assert.deepEqual(pageRangeOfBytes((1n << 64n) - 4096n, 4096n), { firstPage: PAGE_SPACE - 1, pages: 1 });
  assert.throws(() => pageRangeOfBytes((1n << 64n) - 4096n, 4097n), reason("range-wraps"));
  assert.throws(() => pageRangeOfBytes(0n, 0n), reason("empty-range"));
});
