/**
 * The plugin layer: `definePlugin`, `loadPlugin`, `RelayHost` and iommu-relay's own `relayPlugin`.
 *
 * @module
 */
export * from "./plugin.ts";
