// A target whose third input never returns: the deadline runner must notice from outside.
import type { FuzzTarget } from "../../lib/testing/fuzz.ts";

export function hangsOnThirdInput(): FuzzTarget {
  let n = 0;
  return {
    name: "hangs on the third input",
    sizes: [4],
    run() {
      if (++n === 3) { for (;;) { /* spin */ } }
    },
    typed: () => false,
  };
}
