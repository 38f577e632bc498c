/**
 * The SMMUv3 front end: command decoders and the command queue model.
 *
 * @module
 */
export * from "./commands.ts";
export * from "./cmdq.ts";
export * from "./evtq.ts";
export * from "./priq.ts";
export * from "./outq.ts";
