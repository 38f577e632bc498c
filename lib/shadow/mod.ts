/**
 * Shadow mode: for hosts that cannot nest, the guest's VT-d table for the RID is walked on every invalidated range
 * and the differences are applied to an IOAS with map/unmap. See the README's "Shadow mode" section.
 *
 * @module
 */
export * from "./walk.ts";
export * from "./areas.ts";
export * from "./domain.ts";
export * from "./backend.ts";
export * from "./kernel_ioas.ts";
export * from "./model_ioas.ts";
