/**
 * Compilers from pending sets to every host format, and the one format table.
 *
 * @module
 */
export * from "./formats.ts";
export * from "./entries.ts";
export * from "./vtd.ts";
export * from "./smmuv3.ts";
export * from "./selftest.ts";
export * from "./shadow.ts";
export * from "./wire2017.ts";
