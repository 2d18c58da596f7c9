/**
 * A real nats-server for tests: the same launcher `mccache stress --transport nats` uses
 * (lib/cli/nats-server.ts), with the test suites' call shape.
 */
import {
  findNatsServer,
  freeTcpPort,
  startNatsServer as launch,
  NATS_SERVER_INSTALL_HINT,
  type NatsServerProcess,
} from '../../lib/cli/nats-server.js';

export { findNatsServer, freeTcpPort, type NatsServerProcess };

/** Why NATS tests skip when the server is missing. */
export const NATS_SERVER_MISSING = NATS_SERVER_INSTALL_HINT;

/** Starts nats-server on 127.0.0.1 (on `port`, or a free one); resolves once it is ready. */
export function startNatsServer(port?: number, deadlineMs = 10_000): Promise<NatsServerProcess> {
  return launch({ ...(port === undefined ? {} : { port }), readyTimeoutMs: deadlineMs });
}
