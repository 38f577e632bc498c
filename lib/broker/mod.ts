/**
 * The privilege-separated broker: its wire protocol, server and client.
 *
 * @module
 */
export * from "./protocol.ts";
export * from "./client.ts";
export * from "./server.ts";
