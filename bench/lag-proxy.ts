/**
 * A TCP relay that puts a network between bench/latency's commands and its loopback registry:
 *   node dist/bench/lag-proxy.js <listen-port> <target-port> <one-way-ms>
 * Every chunk is delayed by <one-way-ms> in each direction, and a new connection carries nothing
 * for one round trip first (its TCP handshake; TLS would add more). Prints "ready" once listening.
 * Its own process, so the bench's synchronous timing calls do not stall it.
 */
import { connect, createServer, type Socket } from 'node:net';

const [listenPort, targetPort, oneWayMs] = process.argv.slice(2).map(Number);
if (!listenPort || !targetPort || oneWayMs === undefined || !(oneWayMs >= 0)) {
  console.error('usage: lag-proxy <listen-port> <target-port> <one-way-ms>');
  process.exit(2);
}

const server = createServer((client) => {
  const upstream = connect(targetPort, '127.0.0.1');
  const handshake = new Promise((r) => setTimeout(r, 2 * oneWayMs));
  const relay = (from: Socket, to: Socket) => {
    from.on('data', (chunk) => void handshake.then(() => setTimeout(() => to.write(chunk), oneWayMs)));
    from.on('end', () => void handshake.then(() => setTimeout(() => to.end(), oneWayMs)));
    from.on('error', () => to.destroy());
    from.on('close', () => setTimeout(() => to.destroy(), 2 * oneWayMs + 1000).unref());
  };
  relay(client, upstream);
  relay(upstream, client);
});
server.listen(listenPort, '127.0.0.1', () => console.log('ready'));
