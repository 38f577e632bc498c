// A plugin whose submit never returns: the host must not hang with it.
import { definePlugin } from "../../lib/plugin/plugin.ts";

export default definePlugin({
  name: "looping",
  version: "0.0.1",
  create(device) {
    return {
      name: "looping",
      get state() {
        return device.state;
      },
      config: device.config,
      get telemetry() {
        return device.telemetry;
      },
      on: device.on,
      drain: device.drain,
      submit() {
        for (;;) { /* forever */ }
      },
      [Symbol.dispose]() {},
    };
  },
});
