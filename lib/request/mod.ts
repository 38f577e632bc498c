/**
 * The vendor-neutral request model (the 2017 idea): invalidations, binds, unbinds, waits; their validation; pending sets.
 *
 * @module
 */
export * from "./request.ts";
export * from "./pending.ts";
