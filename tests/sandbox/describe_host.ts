// Prints lib/kernel/sysfs.ts's describeHost as JSON: run by tests/kernel/sysfs_test.ts inside tests/sandbox/fake_host.sh.
import { NativeShim } from "../../ffi/native.ts";
import { describeHost } from "../../lib/kernel/sysfs.ts";

using shim = await NativeShim.load();
console.log(JSON.stringify(describeHost(shim)));
