/**
 * The tsx loader as an absolute URL, for child processes started from source. A bare `--import tsx`
 * is resolved from the child's working directory, which tests often set to a temporary folder.
 */
export const TSX_LOADER = import.meta.resolve('tsx');
