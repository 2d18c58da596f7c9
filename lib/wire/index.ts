/**
 * The wire layer: value encoding, op entries, frames, fragmentation, reassembly and Fernet.
 * It opens no sockets; the cluster engine feeds it bytes and takes bytes from it.
 */
export * from './fernet.js';
export * from './frame.js';
export * from './ops.js';
export * from './reassembly.js';
export * from './value-codec.js';
