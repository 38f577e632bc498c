/**
 * The relay: binding table, routes, the coalescing `RelayQueue` with owners and barriers, drain outcomes, flat combining across vCPU Workers (`SharedRelay`).
 *
 * @module
 */
export * from "./queue.ts";
export * from "./bindings.ts";
export * from "./routes.ts";
export * from "./send.ts";
export * from "./outcome.ts";
export * from "./telemetry.ts";
export * from "./shared.ts";
